"""The parts of the CUDA path whose logic can be checked without a GPU.

Each test fails on the code before its fix: a resume that maps the checkpoint to
the GPU, paper B's LRN without a deterministic form, an eager step that keeps a
graph run's `capturable` optimiser, warm-up draws that are not undone, a benchmark
that leaves cuDNN autotuning on. The CUDA-only checks are in test_bench.py (`-m cuda`).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from hybridlib.engine import fast, trainer
from hybridlib.engine.rundir import CHECKPOINT_FORMAT, save_checkpoint
from hybridlib.models import LocalResponseNorm, build_model, local_response_norm_by_sums
from hybridlib.tools.bench import run_bench


def test_resume_reads_the_checkpoint_to_the_cpu(tmp_path):
    """A checkpoint is read to the CPU, whatever the run's device (Adam's step counters
    stay there); mapping it to "cuda" would fail here, on a machine without a GPU."""
    model = build_model("cnn", 10)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    path = tmp_path / "checkpoint.pt"
    state = {"format": CHECKPOINT_FORMAT, "epoch": 1, "optimizer": optimizer.state_dict()}
    save_checkpoint(path, state)
    loaded = trainer._resume_state(path)
    steps = [s["step"] for s in loaded["optimizer"]["state"].values()]
    assert steps and all(step.device.type == "cpu" for step in steps)


def test_lrn_by_sums_is_pytorchs_lrn():
    x = torch.randn(4, 64, 6, 6, dtype=torch.float64, requires_grad=True)
    expected = F.local_response_norm(x, 9, alpha=0.001, beta=0.75, k=1.0)
    got = local_response_norm_by_sums(x, 9, alpha=0.001, beta=0.75, k=1.0)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    (grad_expected,) = torch.autograd.grad(expected.square().sum(), x)
    (grad_got,) = torch.autograd.grad(got.square().sum(), x)
    torch.testing.assert_close(grad_got, grad_expected, rtol=1e-12, atol=1e-12)
    # paper B's models use the module, which is PyTorch's own off CUDA
    modules = [m for m in build_model("yu_conv_lstm", 10).modules()]
    assert any(isinstance(m, LocalResponseNorm) for m in modules)
    lrn = LocalResponseNorm(9, alpha=0.001, beta=0.75, k=1.0)
    assert torch.equal(lrn(x.detach()), expected.detach())


def test_an_eager_step_on_cuda_makes_the_optimiser_uncapturable():
    """A graph run's checkpoint resumed with --step-mode eager: no `capturable` Adam."""
    model = build_model("cnn", 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=torch.tensor(1e-3))
    for group in optimizer.param_groups:
        group["capturable"] = True
    ctx = contextlib.nullcontext()  # not bf16 autocast, which warns without a GPU
    step = fast.make_train_step(model, optimizer, device="cuda", ctx=ctx, mode="eager")
    assert step.mode == "eager"
    assert all(not group["capturable"] for group in optimizer.param_groups)
    assert all(isinstance(group["lr"], float) for group in optimizer.param_groups)


def test_the_warm_up_snapshot_undoes_random_draws():
    model = build_model("cnn", 10, dropout=0.5)
    optimizer = torch.optim.Adam(model.parameters())
    snapshot = fast._Snapshot(model, optimizer)
    first = torch.rand(5)
    snapshot.restore()
    assert torch.equal(torch.rand(5), first)


def test_bench_leaves_the_callers_kernel_settings():
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    torch.backends.cudnn.benchmark = False
    try:
        run_bench("cnn", "digits", batch_size=4, steps=1, repeats=1, warmup=0, device="cpu",
                  limit=32, paths=("default",))  # fmt: skip
        assert torch.backends.cudnn.benchmark is False
        assert torch.are_deterministic_algorithms_enabled() == before[0]
    finally:
        torch.backends.cudnn.benchmark = before[1]


def test_the_gpu_check_script_parses_and_its_commands_exist():
    import subprocess
    from pathlib import Path

    from hybridlib.tools import cli

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    parser = cli.build_parser()
    for argv in (
        "bench --model cnn --dataset cifar10 --batch-size 16 --steps 100 --repeats 3 --device cuda",
        "train --model cnn_lstm_skip --dataset digits --limit 2000 --epochs 2 --lr 1e-3 "
        "--device cuda --step-mode graph --out x",
        "reproduce --table paper-a --datasets digits --seeds 1 --epochs 1 --limit 2000 "
        "--device cuda --step-mode auto --jobs 2 --out x",
    ):
        assert argv.split()[0] in script.read_text()
        parser.parse_args(argv.split())  # exits on an option that does not exist


def test_the_gpu_checks_test_files_need_none_of_the_notebook_tools():
    """The GPU check runs only the files with CUDA tests, on a machine that has torch but
    not papermill, nbval, the widgets or the site's tools: those files must import
    without them (the check installs only the core's wheels)."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    script = (tests.parent / "benchmarks" / "gpu_check.sh").read_text()
    assert 'grep -l "pytest.mark.cuda" tests/test_*.py' in script
    files = [p.stem for p in sorted(tests.glob("test_*.py")) if "pytest.mark.cuda" in p.read_text()]
    assert {"test_bench", "test_data", "test_loading_ranks"} <= set(files)
    absent = ["papermill", "nbformat", "nbclient", "nbval", "yaml", "ipywidgets", "playwright",
              "myst_nb", "check_jsonschema", "jupyterlab"]  # fmt: skip
    code = (
        f"import sys; sys.modules.update(dict.fromkeys({absent!r})); "
        f"sys.path.insert(0, {str(tests)!r}); import conftest; "
        + "; ".join(f"import {name}" for name in files)
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, re.sub(r"\s+", " ", done.stderr)[-600:]
