"""Time a plain PyTorch training loop against hybridlib's default and fastest paths.

    python -m hybridlib bench --model cnn --dataset cifar10 --data-root DIR \\
        --batch-size 16 --steps 100 --repeats 3 --device cpu
    python -m hybridlib bench --model cnn_lstm_skip --dataset cifar10 --device cuda --out bench/

or from Python: `run_bench("cnn", "digits", steps=20)` returns the table as a dict.

In one process, on the same model, data and batch size, it times three ways to train:

1. plain: the loop a course student writes. `DataLoader(bundle.dataset("train"),
   batch_size=B, shuffle=True)` over a torchvision-style dataset that decodes and
   transforms one image at a time, each batch moved to the device, then
   `zero_grad()`, forward, `loss.backward()`, `Adam.step()` in fp32, and the running
   loss and accuracy read with `.item()` every step.
2. default: what `hybridlib.engine.trainer.fit` does with a default `RunConfig` (it calls
   `run_epoch`): the split held in memory on the device with on-device flips,
   bf16 autocast on CUDA, the loss read back every step on the CPU, every 25 on a GPU.
3. fastest: on CUDA the CUDA-graph step of `hybridlib.engine.fast` (channels-last, bf16);
   on the CPU channels-last with the loss read every 25 steps, fused Adam (one
   kernel for the update; it rounds differently from the loop training runs use),
   and bf16 autocast where the CPU computes bf16 natively (AMX or AVX-512 BF16,
   `native_cpu_bf16`; elsewhere emulated bf16 is slower than fp32). `--cpu-bf16
   on|off` overrides the detection; bf16 changes the numerics (results/README.md
   checks a paper cell).

Every path starts from the same seed and the same initial weights. Set-up (decoding,
moving data, graph capture) and `--warmup` steps are excluded; then the paths take
turns, `--steps` timed steps each, `--repeats` times (so a change in the load of a
shared machine hits all three alike), and the median repeat is reported: images per
second, milliseconds per step, peak memory during the path's set-up and warm-up (GPU:
`torch.cuda.max_memory_allocated`; CPU: the process's peak resident set, reset
between paths where Linux allows), and each path's speed relative to the plain loop.
The table records the hardware, versions, command and seed; `--out DIR` also writes
`bench-<model>-<dataset>-<device>.json/.md`.
"""

from __future__ import annotations

import functools
import json
import math
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from hybridlib import runtime, train
from hybridlib.config import RunConfig
from hybridlib.engine import fast, trainer
from hybridlib.engine.trainer import load_bundle
from hybridlib.errors import HybridError
from hybridlib.models import build_model
from hybridlib.train import input_crop

__all__ = ["PATHS", "BenchRow", "cli_bench", "format_table", "native_cpu_bf16", "run_bench"]

PATHS = ("plain", "default", "fast")
LABELS = {
    "plain": "(1) plain loop",
    "default": "(2) hybridlib default",
    "fast": "(3) hybridlib fastest",
}
FAST_SYNC_EVERY = 25  # steps between loss read-backs on the fastest path


@dataclass
class BenchRow:
    """One timed path: medians over the repeats, and every repeat's images/s."""

    path: str
    label: str
    settings: str
    images_per_s: float
    ms_per_step: float
    peak_mib: float
    speedup: float = math.nan  # images/s relative to the plain loop
    repeats: list[float] = field(default_factory=list)
    step_mode: str = "eager"


# ---------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: "5" resets the peak resident set size (VmHWM) of this process
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------
# The three paths: each returns a function that runs n steps and returns the images seen
# ---------------------------------------------------------------------------


def _forever(loader) -> Iterator:
    """Batches from epoch after epoch of `loader` (a new epoch when one ends)."""
    while True:
        yield from loader


def _plain(bundle, model, device, batch_size: int, crop) -> Callable[[int], int]:
    """The student's loop: torchvision dataset + DataLoader + eager fp32 Adam."""
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loader = DataLoader(bundle.dataset("train", crop=crop), batch_size=batch_size, shuffle=True)
    batches = _forever(loader)
    totals = {"loss": 0.0, "correct": 0, "seen": 0}

    def run(steps: int) -> int:
        seen = 0
        model.train()
        for _ in range(steps):
            x, y = next(batches)
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            output = model(x)
            loss = model.loss(output, x, y)
            loss.backward()
            optimizer.step()
            totals["loss"] += loss.item() * len(y)  # running totals, read every step
            totals["correct"] += (model.logits(output).argmax(1) == y).sum().item()
            seen += len(y)
        totals["seen"] += seen
        return seen

    return run


class _Take:
    """`steps` batches from an endless stream of a DeviceLoader's epochs."""

    def __init__(self, batches: Iterator, steps: int):
        self.batches, self.steps = batches, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        for _ in range(self.steps):
            yield next(self.batches)


def _epochs(
    bundle,
    model,
    device,
    config,
    crop,
    *,
    channels_last,
    step_mode,
    sync_every=None,
    cpu_bf16=False,
    fused=False,
):
    """`train_one_epoch` (what `fit` runs) over `steps` batches at a time; returns the runner."""
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    loader = bundle.loader(
        "train",
        config.batch_size,
        device=device,
        augment=config.augment,
        crop=crop,
        seed=config.seed,
        channels_last=channels_last,
    )
    optimizer = train.make_optimizer(model, config, fused=fused)
    ctx = runtime.autocast(device, amp=config.amp, cpu_bf16=cpu_bf16)
    step_fn = fast.make_train_step(model, optimizer, device=device, ctx=ctx, mode=step_mode)
    batches = _forever(loader)

    def run(steps: int) -> int:
        result = trainer.run_epoch(
            model,
            _Take(batches, steps),
            optimizer,
            step_fn=step_fn,
            progress=False,
            sync_every=sync_every,
        )
        return result.images

    return run, step_fn


def _default(bundle, model, device, config, crop):
    """What `fit` does with a default RunConfig: its loader, layout, step and read-backs."""
    channels_last = runtime.use_channels_last(device, config.channels_last)
    return _epochs(
        bundle,
        model,
        device,
        config,
        crop,
        channels_last=channels_last,
        step_mode=config.step_mode,
        cpu_bf16=config.cpu_bf16,
    )


def _fastest(bundle, model, device, config, crop, cpu_bf16: bool):
    """Channels-last, a CUDA-graph step on CUDA (bf16), fused Adam on the CPU, loss read
    every 25 steps."""
    return _epochs(
        bundle,
        model,
        device,
        config,
        crop,
        channels_last=True,
        step_mode="auto",
        sync_every=FAST_SYNC_EVERY,
        cpu_bf16=cpu_bf16,
        fused=device.type == "cpu",
    )


# ---------------------------------------------------------------------------
# Running and reporting
# ---------------------------------------------------------------------------


def _time_once(run: Callable[[int], int], device, steps: int) -> tuple[float, float]:
    """Time `steps` steps of one path: (images/s, ms/step)."""
    _sync(device)
    start = time.perf_counter()
    images = run(steps)
    _sync(device)
    seconds = time.perf_counter() - start
    return images / seconds, 1000 * seconds / steps


def native_cpu_bf16() -> str | None:
    """The CPU's native bf16 instructions ("AMX" or "AVX-512 BF16"), or None where bf16
    would be emulated (then slower than fp32). Read from torch's own CPU probes."""
    probes = (("AMX", "_is_amx_tile_supported"), ("AVX-512 BF16", "_is_avx512_bf16_supported"))
    for name, probe in probes:
        supported = getattr(torch.cpu, probe, None)
        if supported is not None and supported():
            return name
    return None


def _use_cpu_bf16(setting: bool | str, device: torch.device) -> bool:
    """`run_bench`'s cpu_bf16 ("auto", "on", "off" or a bool) for the fastest path."""
    if isinstance(setting, bool):
        return setting
    if setting not in ("auto", "on", "off"):
        raise HybridError(f"cpu_bf16 must be auto, on or off, got {setting!r}")
    if setting == "auto":
        return device.type == "cpu" and native_cpu_bf16() is not None
    return setting == "on"


def _cpu_precision(cpu_bf16: bool) -> str:
    native = native_cpu_bf16()
    if cpu_bf16:
        return f"bf16 autocast ({native} native)" if native else "bf16 autocast (emulated)"
    return "fp32" + ("" if native else " (no native bf16 on this CPU)")


def _settings_text(path: str, device: torch.device, config, step_mode: str, cpu_bf16: bool):
    if path == "plain":
        return (
            "DataLoader(shuffle=True, num_workers=0), per-sample PIL transforms, "
            ".to(device), eager fp32 Adam, .item() every step"
        )
    cuda = device.type == "cuda"
    if path == "default":
        layout = (
            "channels-last" if runtime.use_channels_last(device, config.channels_last) else "NCHW"
        )
        precision = "bf16 autocast" if cuda and config.amp else "fp32"
        reads = "every 25 steps" if cuda else "every step"
        return (
            f"in-memory device loader, {layout}, {precision}, {step_mode} step, loss read {reads}"
        )
    precision = _cpu_precision(cpu_bf16) if device.type == "cpu" else "fp32"
    if cuda and config.amp:
        precision = "bf16 autocast"
    optimizer = "fused Adam, " if device.type == "cpu" else ""
    return (
        f"in-memory device loader, channels-last, {precision}, {optimizer}{step_mode} step, "
        f"loss read every {FAST_SYNC_EVERY} steps"
    )


def bench_command(**values: Any) -> str:
    """The `python -m hybridlib bench ...` command line for these settings."""
    parts = ["python -m hybridlib bench"]
    for name in ("model", "dataset", "batch_size", "steps", "repeats", "warmup", "device"):
        parts.append(f"--{name.replace('_', '-')} {values[name]}")
    for name in ("data_root", "limit", "folder", "num_classes", "seed"):
        if values.get(name) is not None:
            parts.append(f"--{name.replace('_', '-')} {values[name]}")
    if values.get("cpu_bf16", "auto") not in ("auto", None):
        value = values["cpu_bf16"]
        parts.append(f"--cpu-bf16 {'on' if value is True else 'off' if value is False else value}")
    return " ".join(parts)


def _keeping_kernel_settings(function):
    """Run `function` with the fastest kernels (cuDNN autotuning on), then put the
    caller's deterministic / cuDNN settings back: a bench in a notebook changes nothing."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with runtime.deterministic(False):
            return function(*args, **kwargs)

    return wrapper


@_keeping_kernel_settings
def run_bench(
    model: str = "cnn",
    dataset: str = "digits",
    *,
    batch_size: int = 16,
    steps: int = 50,
    repeats: int = 3,
    warmup: int = 5,
    device: str = "auto",
    data_root: str | None = None,
    seed: int = 0,
    limit: int | None = None,
    cpu_bf16: bool | str = "auto",
    folder: str | None = None,
    num_classes: int | None = None,
    paths: tuple[str, ...] = PATHS,
) -> dict[str, Any]:
    """Time the plain loop, hybridlib's default and its fastest path (see the module doc).

    Args:
        model, dataset: names from `MODEL_NAMES` / `DATASET_NAMES`.
        batch_size: images per step (paper A: 16).
        steps, repeats, warmup: timed steps per repeat, repeats (median reported),
            untimed steps first.
        device: "auto", "cpu", "cuda", ...; data_root: where the data sets are.
        seed: seeds the weights (the same for every path) and the shuffling.
        limit: at most this many training images (None: the whole split).
        cpu_bf16: bf16 autocast on the fastest CPU path: "auto" (where the CPU has
            native bf16, `native_cpu_bf16`), "on" / True, "off" / False.
        folder, num_classes: as `RunConfig`'s (dataset="folder"; classes to keep).
        paths: which of "plain", "default", "fast" to time.
    Returns:
        {"rows": [BenchRow as dict, ...], "environment": ..., "command": ..., "settings": ...}
    """
    for path in paths:
        if path not in PATHS:
            raise HybridError(f"unknown bench path {path!r}; choose from: {', '.join(PATHS)}")
    if warmup < 0:
        raise HybridError(f"warmup must be 0 or more steps, got {warmup}")
    settings = dict(
        model=model,
        dataset=dataset,
        batch_size=batch_size,
        steps=steps,
        repeats=repeats,
        warmup=warmup,
        device=device,
        data_root=data_root,
        limit=limit,
        folder=folder,
        num_classes=num_classes,
        seed=seed,
        cpu_bf16=cpu_bf16,
    )
    torch_device = runtime.resolve_device(device)
    use_bf16 = _use_cpu_bf16(cpu_bf16, torch_device)
    runtime.set_threads(torch_device)
    run_fields = ("model", "dataset", "batch_size", "seed", "data_root", "limit", "folder")
    config = RunConfig(
        **{name: settings[name] for name in (*run_fields, "num_classes")},
        device=str(torch_device),
        progress=False,
    )
    bundle = load_bundle(config)
    prepared = _prepare_paths(paths, bundle, config, torch_device, warmup, use_bf16)
    timings: dict[str, list[tuple[float, float]]] = {path: [] for path in paths}
    for _ in range(repeats):  # in turns, so a change in the machine's load hits all alike
        for path, run, _, _ in prepared:
            timings[path].append(_time_once(run, torch_device, steps))
    rows = _rows(prepared, timings, torch_device, config, use_bf16)
    return {
        "rows": [asdict(r) for r in rows],
        "settings": settings,
        "train_images": bundle.sizes["train"],
        "cpu_bf16": {"setting": cpu_bf16, "used": use_bf16, "native": native_cpu_bf16()},
        "memory": "peak GPU memory allocated"
        if torch_device.type == "cuda"
        else "peak process RSS (reset between paths)",
        "command": bench_command(**settings),
        "environment": runtime.environment(torch_device),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _prepare_paths(paths, bundle, config: RunConfig, device, warmup: int, cpu_bf16: bool):
    """Set up and warm up each path from the same initial weights: [(path, run, step, peak)].

    Peak memory covers each path's set-up and warm-up, with only the earlier paths'
    small models still held.
    """
    runtime.seed_everything(config.seed)
    initial = build_model(config.model, bundle.num_classes).state_dict()
    crop = input_crop(build_model(config.model, bundle.num_classes), bundle.image_size)
    bundle.tensors("train")  # decode (or read the cache) before any timing
    _ = bundle.mean  # the statistics the transforms need
    prepared = []
    for path in paths:
        runtime.seed_everything(config.seed)
        net = build_model(config.model, bundle.num_classes)
        net.load_state_dict(initial)
        _reset_peak(device)
        step = None
        if path == "plain":
            run = _plain(bundle, net, device, config.batch_size, crop)
        elif path == "default":
            run, step = _default(bundle, net, device, config, crop)
        else:
            run, step = _fastest(bundle, net, device, config, crop, cpu_bf16)
        if warmup > 0:
            run(warmup)  # a graph step captures here
        _sync(device)
        prepared.append((path, run, step, _peak_mib(device)))
    return prepared


def _rows(prepared, timings, device, config: RunConfig, cpu_bf16: bool) -> list[BenchRow]:
    """One `BenchRow` per path: the median repeat, and its speed relative to the plain loop."""
    rows: list[BenchRow] = []
    for path, _, step, peak in prepared:
        step_mode = "eager" if step is None else step.mode  # after capture, or its failure
        rows.append(
            BenchRow(
                path=path,
                label=LABELS[path],
                settings=_settings_text(path, device, config, step_mode, cpu_bf16),
                images_per_s=statistics.median(t[0] for t in timings[path]),
                ms_per_step=statistics.median(t[1] for t in timings[path]),
                peak_mib=peak,
                repeats=[round(t[0], 2) for t in timings[path]],
                step_mode=step_mode,
            )
        )
    plain = next((r for r in rows if r.path == "plain"), None)
    for row in rows:
        if plain is not None:
            row.speedup = row.images_per_s / plain.images_per_s
    return rows


def format_table(result: dict[str, Any], *, markdown: bool = False) -> str:
    """The benchmark as text (or markdown): the three paths side by side, with provenance."""
    s, env = result["settings"], result["environment"]
    memory = "peak GPU MiB" if "GPU" in result["memory"] else "peak RSS MiB"
    header = ["path", "images/s", "ms/step", memory, "vs plain"]
    body = [
        [
            r["label"],
            f"{r['images_per_s']:.1f}",
            f"{r['ms_per_step']:.1f}",
            f"{r['peak_mib']:.0f}",
            f"{r['speedup']:.2f}x" if math.isfinite(r["speedup"]) else "-",
        ]
        for r in result["rows"]
    ]
    title = (
        f"{s['model']} on {s['dataset']} ({result['train_images']:,} training images), "
        f"batch {s['batch_size']}: median of {s['repeats']} x {s['steps']} steps, "
        f"{s['warmup']} warm-up steps excluded, seed {s['seed']}"
    )
    provenance = [
        f"device: {env['device']}",
        f"versions: torch {env['torch']}, torchvision {env['torchvision']}, "
        f"python {env['python']}, hybridlib {env['hybridlib']} (git {env['git_commit']}), "
        f"CUDA {env['cuda']}, cuDNN {env['cudnn']}",
        f"command: {result['command']}",
    ]
    settings = [f"{r['label']}: {r['settings']}" for r in result["rows"]]
    if markdown:
        lines = [f"**{title}**", "", "| " + " | ".join(header) + " |"]
        lines.append("| --- | " + " | ".join("---:" for _ in header[1:]) + " |")
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines + [""] + [f"- {t}" for t in settings + provenance]) + "\n"
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:  # first column left-aligned, numbers right-aligned
        cells = zip(row, widths, strict=True)
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(cells))

    lines = [title, "", fmt(header), *(fmt(row) for row in body), ""]
    return "\n".join(lines + settings + [""] + provenance) + "\n"


def cli_bench(args) -> int:
    """`python -m hybridlib bench ...`: print the table; with --out also write JSON + markdown."""
    out = Path(args.out).expanduser() if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)  # an --out that cannot be a folder: say so first
    result = run_bench(
        args.model,
        args.dataset,
        batch_size=args.batch_size,
        steps=args.steps,
        repeats=args.repeats,
        warmup=args.warmup,
        device=args.device,
        data_root=args.data_root,
        seed=getattr(args, "seed", 0),
        limit=getattr(args, "limit", None),
        cpu_bf16=getattr(args, "cpu_bf16", "auto"),
        folder=getattr(args, "folder", None),
        num_classes=getattr(args, "num_classes", None),
    )
    print(format_table(result), end="")
    if out is not None:
        device = result["environment"]["device"].split()[0].replace(":", "")
        stem = out / f"bench-{args.model}-{args.dataset}-{device}"
        stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        stem.with_suffix(".md").write_text(format_table(result, markdown=True))
        print(f"wrote {stem}.json and {stem}.md")
    return 0
