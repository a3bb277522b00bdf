"""Where and how a run executes: device, seeds, determinism, mixed precision, threads.

    from hybridlib import runtime
    device = runtime.resolve_device("auto")       # CUDA, then Apple MPS, then CPU
    print(runtime.describe_device(device))
    runtime.seed_everything(0)
    with runtime.autocast(device):                # bf16 on CUDA; a no-op on the CPU
        logits = model(x)

The device is resolved once per run and passed down; nothing else in the
package looks for a GPU. `environment()` describes the hardware, the versions
and the git commit for every summary and results file.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision

import hybridlib
from hybridlib.errors import HybridError

__all__ = [
    "THREADS_VAR",
    "autocast",
    "available_cores",
    "cpuinfo",
    "describe_device",
    "deterministic",
    "environment",
    "git_commit",
    "resolve_device",
    "seed_everything",
    "set_deterministic",
    "set_threads",
    "threads_setting",
    "use_channels_last",
]

THREADS_VAR = "HYBRIDLIB_THREADS"


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """The torch device for `spec`: "auto" picks CUDA, then Apple MPS, then the CPU.

    Args:
        spec: "auto", "cpu", "mps", "cuda" or "cuda:N".
    Returns:
        A `torch.device`; an explicit device that is not available raises `HybridError`.
    """
    spec = str(spec)
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise HybridError(
            f"unknown device {spec!r}; choose one of: auto, cpu, mps, cuda, cuda:N"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise HybridError(f"device {spec!r} is not available here; use --device auto or cpu")
        count = torch.cuda.device_count()
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= count:
            raise HybridError(
                f"device {spec!r} does not exist: this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
        return torch.device("cuda", index)
    if device.type == "mps" and not _mps_available():
        raise HybridError("device 'mps' is not available here; use --device auto or cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise HybridError(f"unsupported device {spec!r}; choose one of: auto, cpu, mps, cuda")
    return device


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def describe_device(device: torch.device) -> str:
    """One line naming the device, e.g. 'cuda:0 (NVIDIA H100, 80 GB)' or 'cpu (2 threads)'."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{device} ({props.name}, {props.total_memory / 2**30:.0f} GB)"
    if device.type == "cpu":
        return f"cpu ({_cpu_name()}, {torch.get_num_threads()} threads)"
    return str(device)


def available_cores() -> int:
    """CPU cores this process may run on (respects taskset / container limits)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def threads_setting() -> int | None:
    """`$HYBRIDLIB_THREADS` as a thread count, or None when it is unset or empty.

    Anything but a whole number of at least 1 raises `HybridError`: a setting that
    is ignored would silently run with another thread count than asked for.
    """
    text = os.environ.get(THREADS_VAR, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise HybridError(
            f"{THREADS_VAR}={text!r} is not a thread count; set a whole number of at least 1, "
            f"e.g. {THREADS_VAR}=2, or unset it to use one thread per core"
        )
    return int(text)


def set_threads(device: torch.device, threads: int | None = None) -> int:
    """On the CPU, use one intra-op thread per available core; returns the count.

    `$HYBRIDLIB_THREADS` (or `$OMP_NUM_THREADS`) overrides the core count: on a
    machine shared with other jobs, fewer threads than cores is often faster.
    An invalid `$HYBRIDLIB_THREADS` raises `HybridError` (see `threads_setting`).
    """
    if device.type == "cpu":
        setting = threads_setting()
        omp = os.environ.get("OMP_NUM_THREADS", "")  # OpenMP's own syntax may be "4,2"
        threads = threads or setting or (int(omp) if omp.isdigit() else 0)
        threads = threads or available_cores()
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    return torch.get_num_threads()


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and every CUDA device) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def set_deterministic(enabled: bool) -> None:
    """Ask for deterministic kernels (or allow the fastest ones again).

    Deterministic mode makes a resumed CPU run bit-identical to an uninterrupted
    one; on CUDA it also needs a fixed cuBLAS workspace, set here before first use.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


@contextlib.contextmanager
def deterministic(enabled: bool):
    """`set_deterministic(enabled)` inside the block, the previous settings after it."""
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    set_deterministic(enabled)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1:]


def use_channels_last(device: torch.device, setting: bool | None = None) -> bool:
    """Whether to store image batches and conv weights as NHWC.

    None chooses: on for CUDA, where cuDNN's tensor-core convolutions want NHWC,
    and for the CPU, where oneDNN's convolutions measured 1.12-1.35x faster per
    training step on this package's models (`python -m hybridlib bench`); off
    for MPS, where it has not been measured. The layout changes only the order
    of float additions (relative differences near 1e-7), not the precision.
    """
    if setting is not None:
        return bool(setting)
    return device.type in ("cuda", "cpu")


def autocast(device: torch.device, *, amp: bool = True, cpu_bf16: bool = False):
    """The one mixed-precision context for every device.

    bf16 autocast on CUDA when `amp` (bf16 needs no gradient scaler), on the CPU
    only when `cpu_bf16` (opt-in: it changes the numerics), never on MPS.
    """
    if device.type == "cuda" and amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and cpu_bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------- environment
def cpuinfo(field: str) -> str | None:
    """The first value of `field` ("model name", "vendor_id", ...) in Linux's
    /proc/cpuinfo, or None where there is no such file or field."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu_name() -> str:
    return cpuinfo("model name") or platform.processor() or platform.machine()


def git_commit(path: str | os.PathLike | None = None) -> str | None:
    """The git commit of the package's checkout (with '-dirty' if edited), or None."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
        )
        suffix = "-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else ""
        return commit.stdout.strip() + suffix
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device | None = None) -> dict[str, Any]:
    """Hardware, versions and git commit, for summaries and results files."""
    info: dict[str, Any] = {
        "device": describe_device(device) if device is not None else None,
        "cpu": _cpu_name(),
        "cpu_cores": available_cores(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "hybridlib": hybridlib.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "git_commit": git_commit(),
    }
    if device is not None and device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_count"] = torch.cuda.device_count()
    return info
