"""Process state a long run keeps or guards: every generator's state for a checkpoint,
and signals held off while files that must be whole are written.

    from hybridlib.engine import system
    state = system.get_rng_state()        # saved in checkpoint.pt at every epoch's end
    system.set_rng_state(state)           # --resume: the run draws on as if never stopped
    with system.shielded(deliver=False):  # a second Ctrl-C cannot cut summary.json short
        ...

Seeding, the device and thread counts are `hybridlib.runtime` (what a notebook uses).
"""

from __future__ import annotations

import contextlib
import random
import signal
import threading
from typing import Any

import numpy as np
import torch

from hybridlib.errors import Terminated

__all__ = ["get_rng_state", "set_rng_state", "shielded"]


# ---------------------------------------------------------------------------
# Every generator's state
# ---------------------------------------------------------------------------


def get_rng_state() -> dict[str, Any]:
    """Every generator's state (Python, NumPy, torch's CPU and CUDA ones), for a checkpoint."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": random.getstate(),
        # plain types and tensors only, so checkpoints load with torch.load(weights_only=True)
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `get_rng_state` returned (CUDA's only on as many devices as saved)."""
    random.setstate(_as_python_state(state["python"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in states])


def _as_python_state(value):
    # torch.load may hand tuples back as lists; random.setstate wants tuples.
    if isinstance(value, list):
        return tuple(_as_python_state(v) for v in value)
    return value


# ---------------------------------------------------------------------------
# Signals
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def shielded(*, deliver: bool = True):
    """Hold Ctrl-C and SIGTERM off while the block writes files that must be whole.

    A second Ctrl-C while an interrupted run writes its summary would otherwise lose
    that summary. With `deliver`, a signal that arrived in the block is raised after
    it (`KeyboardInterrupt`, or `Terminated` for SIGTERM); without, it is dropped
    (the caller is already stopping). Outside the main thread it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    # a signal this process ignores (a background job's SIGINT) stays ignored
    watched = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) != signal.SIG_IGN]
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in watched}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if deliver and received:
        raise Terminated if signal.SIGTERM in received else KeyboardInterrupt
