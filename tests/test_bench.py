"""The training-step builders of `hybridlib.engine.fast`, the `bench` command, concurrent runs.

    .venv/bin/pytest tests/test_bench.py -q            # CPU: CUDA tests skip with a reason
    .venv/bin/pytest tests/test_bench.py -q -m cuda    # on a GPU machine: the graph tests

CPU tests use the embedded digits data or random batches and a few steps each. The
CUDA tests compare the CUDA-graph step with the eager step over a few steps; both use
bf16 autocast, so losses agree to bf16 tolerance, not bit for bit.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from hybridlib import runtime, train
from hybridlib.config import RunConfig
from hybridlib.engine import fast
from hybridlib.errors import HybridError
from hybridlib.models import MODEL_NAMES, build_model
from hybridlib.tools import bench, cli
from hybridlib.tools.bench import PATHS, format_table, run_bench

cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device: graph capture is CUDA-only"
)
# Every model is captured, and with batch norm (the improved recipe) the two of paper A's
# that differ most: conv-only and conv + cuDNN LSTM + skip.
GRAPH_MODELS = [(name, False) for name in MODEL_NAMES] + [
    ("cnn", True),
    ("cnn_lstm_skip", True),
]


def batches(
    model, n: int, *, batch: int = 16, device="cpu", seed: int = 1, last: int | None = None
):
    """`n` random (x, y) batches shaped for `model`; the last one has `last` images if given."""
    generator = torch.Generator().manual_seed(seed)
    sizes = [batch] * n if last is None else [batch] * (n - 1) + [last]
    out = []
    for size in sizes:
        x = torch.randn(size, *model.input_size, generator=generator)
        y = torch.randint(0, model.num_classes, (size,), generator=generator)
        out.append((x.to(device), y.to(device)))
    return out


def plain_losses(model, data, lr=1e-3) -> list[float]:
    """The student's eager fp32 loop on these batches."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for x, y in data:
        optimizer.zero_grad()
        output = model(x)
        loss = model.loss(output, x, y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def step_losses(model, data, *, lr=1e-3, mode="eager", device="cpu", **kw):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    step = fast.make_train_step(model, optimizer, device=torch.device(device), mode=mode, **kw)
    results = [step(x, y) for x, y in data]  # nothing read back inside the loop
    return [loss.item() for loss, _ in results], [int(c) for _, c in results], step


# --------------------------------------------------------------------------- CPU step


def test_default_cpu_step_equals_the_plain_loop_exactly():
    torch.manual_seed(0)
    model = build_model("cnn")
    data = batches(model, 4)
    expected = plain_losses(copy.deepcopy(model), data)
    losses, correct, step = step_losses(copy.deepcopy(model), data, mode="auto")
    assert step.mode == "eager" and step.reason is None
    assert losses == expected  # same ops in the same order: the same floats
    assert all(0 <= c <= 4 for c in correct)


def test_fastest_cpu_settings_keep_fp32_numerics():
    torch.manual_seed(0)
    model = build_model("cnn_lstm_skip")
    data = batches(model, 3)
    expected = plain_losses(copy.deepcopy(model), data)
    # channels-last reorders the convolutions' sums: equal to fp32 rounding
    fast_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    data_cl = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in data]
    losses, _, _ = step_losses(fast_model, data_cl)
    assert losses == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_cpu_bf16_is_opt_in():
    torch.manual_seed(0)
    model = build_model("cnn")
    data = batches(model, 2)
    fp32, _, _ = step_losses(copy.deepcopy(model), data)
    ctx = runtime.autocast(torch.device("cpu"), cpu_bf16=True)
    bf16, _, _ = step_losses(copy.deepcopy(model), data, ctx=ctx)
    assert fp32 == plain_losses(copy.deepcopy(model), data)
    assert bf16 != fp32 and bf16 == pytest.approx(fp32, rel=5e-2)


def test_the_fastest_cpu_path_updates_with_fused_adam():
    """Fused Adam rounds differently from the loop, so it stays in the bench's fastest
    path: close to the loop's weights after a few steps, but not equal to them."""
    torch.manual_seed(0)
    models = [build_model("cnn") for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    config = RunConfig(lr=1e-3)
    fused = train.make_optimizer(models[0], config, fused=True)
    looped = train.make_optimizer(models[1], config)
    assert fused.param_groups[0]["fused"] and not looped.param_groups[0]["fused"]
    for x, y in batches(models[0], 3):
        for model, opt in zip(models, (fused, looped), strict=True):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    a, b = (torch.cat([p.detach().flatten() for p in m.parameters()]) for m in models)
    assert not torch.equal(a, b) and torch.allclose(a, b, atol=1e-5)
    cpu = torch.device("cpu")
    assert "fused Adam" in bench._settings_text("fast", cpu, config, "eager", False)
    assert "fused" not in bench._settings_text("default", cpu, config, "eager", False)


@pytest.mark.parametrize(
    "amx, avx512_bf16, native",
    [(True, True, "AMX"), (False, True, "AVX-512 BF16"), (False, False, None)],
)
def test_the_fastest_cpu_path_takes_bf16_only_where_the_cpu_has_it(
    monkeypatch, amx, avx512_bf16, native
):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    cpu = torch.device("cpu")
    assert bench.native_cpu_bf16() == native
    assert bench._use_cpu_bf16("auto", cpu) is (native is not None)
    assert bench._use_cpu_bf16("on", cpu) and not bench._use_cpu_bf16("off", cpu)
    text = bench._settings_text("fast", cpu, RunConfig(), "eager", bench._use_cpu_bf16("auto", cpu))
    if native:
        assert f"bf16 autocast ({native} native)" in text
    else:
        assert "fp32 (no native bf16 on this CPU)" in text
    with pytest.raises(HybridError, match="auto, on or off"):
        bench._use_cpu_bf16("yes", cpu)


def test_bench_records_the_bf16_choice_and_puts_an_override_in_its_command(tmp_env):
    result = run_bench("cnn", "digits", batch_size=4, steps=1, repeats=1, warmup=0,
                       device="cpu", limit=32, paths=("fast",), cpu_bf16="off")  # fmt: skip
    assert result["cpu_bf16"] == {"setting": "off", "used": False,
                                  "native": bench.native_cpu_bf16()}  # fmt: skip
    assert result["command"].endswith("--cpu-bf16 off")
    assert "bf16" not in result["rows"][0]["settings"].split(",")[2]
    args = cli.build_parser().parse_args(["bench"])
    assert args.cpu_bf16 == "auto"


def test_graph_mode_on_cpu_falls_back_with_a_reason(capsys):
    model = build_model("cnn")
    optimizer = torch.optim.Adam(model.parameters())
    step = fast.make_train_step(model, optimizer, device=torch.device("cpu"), mode="graph")
    assert isinstance(step, fast.EagerStep) and step.mode == "eager"
    assert "need a CUDA device" in step.reason
    assert "using the eager step" in capsys.readouterr().err
    x, y = batches(model, 1)[0]
    loss, correct = step(x, y)
    assert loss.shape == () and correct.dtype == torch.int64


def test_warm_up_steps_are_undone_exactly():
    """What the graph step does around its warm-up, checked on the CPU."""
    torch.manual_seed(0)
    model = build_model("cnn_lstm", batch_norm=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = batches(model, 3)
    expected = plain_losses(copy.deepcopy(model), data, lr=1e-3)
    before = copy.deepcopy(model.state_dict())
    snapshot = fast._Snapshot(model, optimizer)
    for x, y in data[:2]:  # "warm-up": real steps that change weights, buffers, state
        optimizer.zero_grad()
        model.loss(model(x), x, y).backward()
        optimizer.step()
    snapshot.restore()
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    for state in optimizer.state.values():  # Adam's fresh state: zeros
        assert all(not torch.is_tensor(v) or not v.any() for v in state.values())
    # training on from here is training from the start
    losses = []
    for x, y in data:
        optimizer.zero_grad()
        output = model(x)
        loss = model.loss(output, x, y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses == expected


def test_unknown_step_mode_is_named():
    model = build_model("cnn")
    with pytest.raises(HybridError, match="unknown step mode 'fastest'; choose one of: eager"):
        fast.make_train_step(
            model, torch.optim.Adam(model.parameters()), device="cpu", mode="fastest"
        )


# --------------------------------------------------------------------------- CUDA graph


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize(("name", "batch_norm"), GRAPH_MODELS)
def test_graph_step_follows_the_eager_trajectory(name, batch_norm):
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model(name, batch_norm=batch_norm)
    model = model.to(device).to(memory_format=torch.channels_last)
    # 6 full batches and a partial last one, which takes an eager step
    data = [
        (x.contiguous(memory_format=torch.channels_last), y)
        for x, y in batches(model, 7, batch=16, device=device, last=5)
    ]
    eager, eager_correct, _ = step_losses(copy.deepcopy(model), data, mode="eager", device=device)
    graph_model = copy.deepcopy(model)
    graph, graph_correct, step = step_losses(graph_model, data, mode="graph", device=device)
    assert step.mode == "graph", step.reason
    assert isinstance(step, fast.GraphStep) and step.graph is not None
    # bf16 autocast on both: the same trajectory to bf16 tolerance
    assert graph == pytest.approx(eager, rel=3e-2, abs=3e-2)
    assert graph[0] == pytest.approx(eager[0], rel=1e-2)  # the warm-up steps were undone
    # near-tied logits may flip under bf16 rounding: allow about one image per batch
    assert sum(abs(a - b) for a, b in zip(graph_correct, eager_correct, strict=True)) <= 8


@pytest.mark.cuda
@cuda
def test_graph_step_follows_a_scheduler_and_fp32():
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model("cnn_lstm_skip").to(device)
    data = batches(model, 5, batch=16, device=device)

    def run(mode):
        net = copy.deepcopy(model)
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1 + s))
        step = fast.make_train_step(
            net,
            optimizer,
            device=device,
            ctx=contextlib.nullcontext(),
            scheduler=scheduler,
            mode=mode,
        )
        losses = [step(x, y)[0] for x, y in data]
        return [v.item() for v in losses], net, step

    eager, eager_net, _ = run("eager")
    graph, graph_net, step = run("graph")
    assert step.mode == "graph", step.reason
    assert graph == pytest.approx(eager, rel=1e-3)  # fp32 (TF32 convolutions on both)
    lr = step.optimizer.param_groups[0]["lr"]
    assert torch.is_tensor(lr) and float(lr) == pytest.approx(1e-3 / 6)  # 5 scheduler steps
    pairs = zip(eager_net.parameters(), graph_net.parameters(), strict=True)
    gap = torch.cat([(a - b).abs().flatten() for a, b in pairs]).mean().item()
    assert gap < 1e-4  # a schedule the graph ignored would leave the weights ~1e-3 apart


class _SyncsInForward(torch.nn.Module):
    """A model whose forward reads a value on the host: it cannot be captured."""

    input_size = (3, 32, 32)
    num_classes = 10

    def __init__(self):
        super().__init__()
        self.net = build_model("cnn")

    def forward(self, x):
        if x.abs().sum().item() < 0:  # a host sync
            x = -x
        return self.net(x)

    def loss(self, output, inputs, targets):
        return self.net.loss(output, inputs, targets)

    def logits(self, output):
        return output


@pytest.mark.cuda
@cuda
def test_failed_capture_falls_back_to_eager(capsys):
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = _SyncsInForward().to(device)
    data = batches(model, 3, device=device)
    eager, _, _ = step_losses(copy.deepcopy(model), data, device=device)
    graph, _, step = step_losses(copy.deepcopy(model), data, mode="graph", device=device)
    assert step.mode == "eager" and "capture failed" in step.reason
    assert "training with the eager step instead" in capsys.readouterr().err
    assert graph == pytest.approx(eager, rel=1e-2)  # the weights were restored


# --------------------------------------------------------------------------- bench


def test_bench_command_prints_three_rows(tmp_env, capsys):
    out = tmp_env / "bench"
    argv = "bench --model cnn --dataset digits --batch-size 8 --steps 2 --repeats 1 --warmup 1"
    status = cli.main([*argv.split(), "--device", "cpu", "--limit", "64", "--out", str(out)])
    assert status == 0
    text = capsys.readouterr().out
    for label in ("(1) plain loop", "(2) hybridlib default", "(3) hybridlib fastest"):
        assert label in text
    assert "images/s" in text and "peak RSS MiB" in text and "vs plain" in text
    assert "command: python -m hybridlib bench --model cnn" in text and "torch 2." in text
    result = json.loads((out / "bench-cnn-digits-cpu.json").read_text())
    assert [row["path"] for row in result["rows"]] == list(PATHS)
    for row in result["rows"]:
        assert row["images_per_s"] > 0 and row["ms_per_step"] > 0 and row["peak_mib"] > 0
        assert math.isfinite(row["speedup"]) and len(row["repeats"]) == 1
    assert result["rows"][0]["speedup"] == 1.0
    assert "| (3) hybridlib fastest |" in (out / "bench-cnn-digits-cpu.md").read_text()


def test_run_bench_one_path_and_bad_names(tmp_env):
    result = run_bench(
        "row_gru",
        "digits",
        batch_size=4,
        steps=1,
        repeats=1,
        warmup=0,
        device="cpu",
        limit=32,
        paths=("fast",),
    )
    assert [r["path"] for r in result["rows"]] == ["fast"]
    assert "(3) hybridlib fastest" in format_table(result, markdown=True)
    with pytest.raises(HybridError, match="unknown bench path 'slow'"):
        run_bench("cnn", "digits", paths=("slow",), device="cpu")


# --------------------------------------------------------------------------- concurrency


def _tiny_runs(root, model_seeds):
    return [
        RunConfig(
            model=model,
            dataset="digits",
            seed=seed,
            epochs=2,
            val_every=1,
            lr=1e-3,
            limit=48,
            device="cpu",
            progress=False,
            out=str(root / f"{model}-s{seed}"),
        )
        for model, seed in model_seeds
    ]


def test_concurrent_runs_spread_over_the_visible_gpus(monkeypatch):
    from hybridlib.study import reproduce

    todo = [(f"run {i}", RunConfig(device=device), False)
            for i, device in enumerate(["cuda", "auto", "cuda:0", "cuda", "cpu"])]  # fmt: skip
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert reproduce.spread_over_gpus(todo) == todo  # one GPU: nothing to spread
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    devices = [config.device for _, config, _ in reproduce.spread_over_gpus(todo)]
    assert devices == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cpu"]
    sent = []
    monkeypatch.setattr(reproduce.fast, "map_in_processes",
                        lambda f, items, jobs: sent.extend(items) or [])  # fmt: skip
    monkeypatch.setattr(reproduce, "_status", lambda config: "new")
    configs = [RunConfig(device="cuda", seed=s, out=f"/nonexistent/run-{s}") for s in range(3)]
    reproduce.run_grid(configs, jobs=3)
    assert [config.device for _, config, _ in sent] == ["cuda:0", "cuda:1", "cuda:0"]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_concurrent_runs_equal_sequential_runs(tmp_env, capsys, monkeypatch):
    from hybridlib.study.reproduce import run_grid

    runs = [("cnn", 0), ("cnn_lstm_skip", 1)]
    cores = sorted(os.sched_getaffinity(0))
    threads = torch.get_num_threads()
    # `--jobs 2` gives each run half the cores and as many threads; CPU sums depend on
    # the thread count, so the one-by-one reference runs on a share of the same size.
    share = max(1, len(cores) // 2)
    monkeypatch.setenv("HYBRIDLIB_THREADS", str(share))
    os.sched_setaffinity(0, cores[:share])
    try:
        one_by_one = run_grid(_tiny_runs(tmp_env / "seq", runs), jobs=1)
    finally:
        os.sched_setaffinity(0, cores)
        torch.set_num_threads(threads)
    together = run_grid(_tiny_runs(tmp_env / "par", runs), jobs=2)
    assert "finished" in capsys.readouterr().err  # one line per run instead of bars
    assert len(one_by_one["trained"]) == len(together["trained"]) == 2
    for a, b in zip(one_by_one["trained"], together["trained"], strict=True):
        a, b = Path(a), Path(b)
        summary_a = json.loads((a / "summary.json").read_text())
        summary_b = json.loads((b / "summary.json").read_text())
        for key in ("train_loss", "train_acc", "val_acc", "test_loss", "test_acc"):
            assert summary_a[key] == summary_b[key], key
        metrics_a = pd.read_csv(a / "metrics.csv")
        metrics_b = pd.read_csv(b / "metrics.csv")
        for column in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert metrics_a[column].tolist() == metrics_b[column].tolist(), column


def test_fit_with_graph_mode_on_cpu_trains_eagerly(tmp_env, capsys):
    from hybridlib.data import load_dataset
    from hybridlib.engine.trainer import fit

    histories = []
    for mode in ("eager", "graph"):
        config = _tiny_runs(tmp_env, [("cnn", 0)])[0].replace(epochs=1, step_mode=mode, out=None)
        bundle = load_dataset("digits", limit=config.limit)
        torch.manual_seed(0)
        histories.append(fit(build_model("cnn", bundle.num_classes), bundle, config).to_frame())
    assert "graph steps need a CUDA device" in capsys.readouterr().err
    columns = ["train_loss", "train_acc", "val_loss", "val_acc"]
    pd.testing.assert_frame_equal(histories[0][columns], histories[1][columns])


def test_map_in_processes_runs_in_order_here_with_one_job():
    assert fast.map_in_processes(abs, [-1, 2, -3], jobs=1) == [1, 2, 3]


_SIGTERM_SCRIPT = """
import os, signal, sys, time
from pathlib import Path

from hybridlib.engine import fast
from hybridlib.errors import Terminated


def work(i):
    marks = Path(sys.argv[1])
    (marks / f"{i}.started").write_text(str(os.getpid()))
    try:
        time.sleep(120)
    except KeyboardInterrupt:
        (marks / f"{i}.interrupted").write_text("")
        raise
    (marks / f"{i}.finished").write_text("")


if __name__ == "__main__":
    try:
        fast.map_in_processes(work, range(6), jobs=2)
    except Terminated:  # SIGTERM, not Ctrl-C
        sys.exit(143)
    except KeyboardInterrupt:
        sys.exit(130)
"""


def test_sigterm_to_map_in_processes_interrupts_its_workers(tmp_path):
    # `kill PID` of a `reproduce --jobs 2` must not leave its workers training, orphaned;
    # the parent starts with SIGINT ignored, as a background job does
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "grid.py"
    script.write_text(_SIGTERM_SCRIPT)
    marks = tmp_path / "marks"
    marks.mkdir()
    process = subprocess.Popen(
        [sys.executable, str(script), str(marks)],
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    deadline = time.monotonic() + 120
    while len(list(marks.glob("*.started"))) < 2:
        assert time.monotonic() < deadline and process.poll() is None, "workers did not start"
        time.sleep(0.2)
    workers = [int(path.read_text()) for path in marks.glob("*.started")]
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143
    assert sorted(path.name for path in marks.iterdir()) == [
        "0.interrupted",
        "0.started",
        "1.interrupted",
        "1.started",
    ]  # both runs interrupted in their workers; the other four never started
    for pid in workers:  # the pool joined its workers before the parent exited
        status = Path(f"/proc/{pid}/status")
        assert not status.exists() or "State:\tZ" in status.read_text()  # gone, or a zombie


def test_step_mode_option_reaches_the_config():
    from hybridlib.config import RUNTIME_FIELDS
    from hybridlib.engine.trainer import config_from_args

    args = cli.build_parser().parse_args(["train", "--step-mode", "auto"])
    config = config_from_args(args)
    assert config.step_mode == "auto" and "--step-mode auto" in config.command()
    assert RunConfig().step_mode == "eager"  # the default path is the eager step
    assert "step_mode" in RUNTIME_FIELDS  # how a run executes, like its device
    with pytest.raises(HybridError, match="unknown step_mode 'fast'; choose one of: eager"):
        RunConfig(step_mode="fast")
    args = cli.build_parser().parse_args(["reproduce", "--table", "paper-a", "--jobs", "3"])
    assert args.jobs == 3
