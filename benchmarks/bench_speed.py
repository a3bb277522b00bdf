"""The speed benchmarks of the course: plain loop vs hybridlib, and the paper-A grid's time.

    python benchmarks/bench_speed.py --data-root ../shared/data --device cpu
    python benchmarks/bench_speed.py --data-root ../shared/data --device cuda --jobs 4 --out bench/

For each model (default: `cnn` and `cnn_lstm_skip`, paper A's batch 16, CIFAR-10-sized
32x32 images) it runs `python -m hybridlib bench` in this process and prints its table:
(1) the plain student loop, (2) hybridlib's default training path, (3) its fastest
path, as images per second (median of the repeats), ms per step, peak memory and the
ratios to the plain loop. It then checks the issue's targets:

- CPU: the default path at least 1.3x the plain loop for `cnn` (fp32, same numerics),
  and the fastest path at least 2x (with bf16 autocast where the CPU has native bf16);
- CUDA: the fastest path at least 10x the plain loop for `cnn`, 5x for `cnn_lstm_skip`;

and projects the whole paper-A grid (4 models x CIFAR-10 with 45,000 training
images, Caltech 101 with 2,432, Tiny ImageNet with 1,800 x 3 seeds x 30 epochs, plus
6 validation passes and one test pass per run) from the fastest path's measured
throughput of every paper-A model. With `--jobs N` the throughput is measured with N
runs training at once (as `reproduce --jobs N` runs them), summed over the N.
The projection is an estimate from measured throughput, not a timed grid.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hybridlib import runtime
from hybridlib.engine import fast
from hybridlib.tools.bench import format_table, run_bench

# Paper A's grid at full size: training / validation / test images per data set.
PAPER_A_SPLITS = {
    "cifar10": (45_000, 5_000, 10_000),  # CIFAR-10's 50,000 training images, 10 % held out
    "caltech101": (2_432, 271, 676),  # the 10 largest classes (paper A's sizes)
    "tiny-imagenet": (1_800, 200, 500),  # the first 5 classes (paper A's sizes)
}
PAPER_A_MODELS = ("cnn", "cnn_lstm", "cnn_lstm_skip", "autoencoder")
EPOCHS, SEEDS, VALIDATIONS = 30, 3, 6  # 30 epochs, validated every 5; 3 seeds
TARGETS = {  # device -> model -> [(path, at least this many times the plain loop)]
    "cpu": {"cnn": [("default", 1.3), ("fast", 2.0)]},
    "cuda": {"cnn": [("fast", 10.0)], "cnn_lstm_skip": [("fast", 5.0)]},
}


def _fast_throughput(job: dict) -> float:
    """Images/s of the fastest path for one model (run in a worker with --jobs)."""
    result = run_bench(paths=("fast",), **job)
    return result["rows"][0]["images_per_s"]


def _eval_throughput(model: str, device: str, batch: int = 256, steps: int = 5) -> float:
    """Images/s of a forward pass at the evaluation batch size (validation / test)."""
    import torch

    from hybridlib.models import build_model

    torch_device = runtime.resolve_device(device)
    net = build_model(model).to(torch_device).eval()
    if torch_device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 32, 32, device=torch_device)
    with torch.no_grad(), runtime.autocast(torch_device):
        net(x)
        if torch_device.type == "cuda":
            torch.cuda.synchronize(torch_device)
        start = time.perf_counter()
        for _ in range(steps):
            net(x)
        if torch_device.type == "cuda":
            torch.cuda.synchronize(torch_device)
    return batch * steps / (time.perf_counter() - start)


def project_grid(args) -> dict:
    """Minutes for the paper-A grid from measured per-model throughput (see the docstring)."""
    jobs = max(1, args.jobs)
    per_model = {}
    for model in PAPER_A_MODELS:
        job = dict(
            model=model,
            dataset=args.dataset,
            batch_size=16,
            steps=args.steps,
            repeats=1,
            warmup=args.warmup,
            device=args.device,
            data_root=args.data_root,
        )
        rates = fast.map_in_processes(_fast_throughput, [job] * jobs, jobs=jobs)
        train_rate = sum(rates)  # N runs at once: their images/s add up
        eval_rate = _eval_throughput(model, args.device)  # one process: a safe lower bound
        train_images = sum(n * EPOCHS * SEEDS for n, _, _ in PAPER_A_SPLITS.values())
        eval_images = sum((VALIDATIONS * v + t) * SEEDS for _, v, t in PAPER_A_SPLITS.values())
        seconds = train_images / train_rate + eval_images / eval_rate
        per_model[model] = {
            "train_images_per_s": train_rate,
            "eval_images_per_s": eval_rate,
            "minutes": seconds / 60,
        }
        print(
            f"  {model:<14} {train_rate:>10,.0f} training images/s with {jobs} job(s), "
            f"{seconds / 60:7.1f} min for 3 data sets x 3 seeds x 30 epochs",
            flush=True,
        )
    total = sum(m["minutes"] for m in per_model.values())
    print(f"  paper-A grid: {total:.1f} minutes projected (target: under 10 on one H100)")
    return {"jobs": jobs, "per_model": per_model, "minutes": total}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["cnn", "cnn_lstm_skip"])
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=1, help="runs at once for the grid projection")
    parser.add_argument("--no-grid", action="store_true", help="skip the grid projection")
    parser.add_argument("--out", default=None, help="write every table and a summary here")
    args = parser.parse_args(argv)
    device = runtime.resolve_device(args.device)
    args.device = str(device)
    print(f"hybridlib speed benchmarks: {' '.join(sys.argv)}\n", flush=True)
    summary: dict = {"tables": {}, "targets": []}
    for model in args.models:
        result = run_bench(
            model,
            args.dataset,
            batch_size=16,
            steps=args.steps,
            repeats=args.repeats,
            warmup=args.warmup,
            device=args.device,
            data_root=args.data_root,
        )
        print(format_table(result), flush=True)
        summary["tables"][model] = result
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / f"bench-{model}.md").write_text(format_table(result, markdown=True))
        for path, wanted in TARGETS.get(device.type, {}).get(model, []):
            got = next(r["speedup"] for r in result["rows"] if r["path"] == path)
            verdict = "met" if got >= wanted else "NOT met"
            line = f"target {model} {path} >= {wanted:g}x plain: {got:.2f}x, {verdict}"
            summary["targets"].append(line)
    for line in summary["targets"]:
        print(line)
    if not args.no_grid:
        print("\nProjected paper-A grid (fastest path, measured throughput):")
        summary["grid"] = project_grid(args)
    if args.out:
        path = Path(args.out) / "bench-speed.json"
        path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
