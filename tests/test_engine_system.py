"""The process state a long run keeps or guards (`hybridlib.engine.system`)."""

from __future__ import annotations

import os
import random
import signal

import numpy as np
import pytest
import torch

from hybridlib import runtime
from hybridlib.engine import system
from hybridlib.errors import Terminated


def test_rng_state_round_trip():
    runtime.seed_everything(3)
    state = system.get_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    system.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_rng_state_survives_a_checkpoint(tmp_path):
    """Plain types and tensors only: it loads with torch.load(weights_only=True)."""
    runtime.seed_everything(5)
    torch.save({"rng": system.get_rng_state()}, tmp_path / "state.pt")
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    system.set_rng_state(torch.load(tmp_path / "state.pt", weights_only=True)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_shielded_holds_signals_off_while_files_are_written():
    # as in a terminal, even where the test runner was started with SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with system.shielded(deliver=False):
            os.kill(os.getpid(), signal.SIGINT)  # dropped: the caller is already stopping
        with pytest.raises(KeyboardInterrupt), system.shielded():
            os.kill(os.getpid(), signal.SIGINT)
            written = True  # the block ran to its end before the interrupt
        assert written
        with pytest.raises(Terminated), system.shielded():
            os.kill(os.getpid(), signal.SIGTERM)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGINT, previous)
