"""Shared fixtures.

Tests that read the real data subsets take them from `$HYBRIDLIB_TEST_DATA`
(`.ci/run` points it at `../shared/data`). Where that folder is absent, as on
a user's fresh clone, they skip with the reason; in CI
(`HYBRIDLIB_REQUIRE_TEST_DATA=1`, or `CI` set) a missing folder is a failure
instead (`require_everything`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# Two cores here: keep tests from oversubscribing them.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def require_everything() -> bool:
    """Whether a missing data folder or browser fails a test instead of skipping it:
    `HYBRIDLIB_REQUIRE_TEST_DATA` = 1 or 0 where set (`.ci/run` sets 1; a workflow
    without the data sets 0), otherwise whenever `CI` is set."""
    setting = os.environ.get("HYBRIDLIB_REQUIRE_TEST_DATA", "")
    if setting in ("0", "1"):
        return setting == "1"
    return bool(setting or os.environ.get("CI"))


def _test_data_root() -> Path:
    return Path(os.environ.get("HYBRIDLIB_TEST_DATA") or ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder with the real CIFAR-10 / Caltech 101 / Tiny ImageNet subsets."""
    root = _test_data_root()
    if not (root / "caltech101").is_dir():
        message = (
            f"real data subsets not found in {root}; set HYBRIDLIB_TEST_DATA to the folder "
            "holding cifar10-jpg/, caltech101/ and tiny-imagenet-200/"
        )
        if require_everything():
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture()
def tmp_env(tmp_path, monkeypatch) -> Path:
    """Point the data and runs roots at a temporary folder."""
    monkeypatch.setenv("HYBRIDLIB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("HYBRIDLIB_RUNS", str(tmp_path / "runs"))
    return tmp_path


@pytest.fixture(scope="session")
def course(tmp_path_factory):
    """The session's quick course folder (test_notebooks.Course): run once, read by many."""
    from test_notebooks import Course

    return Course(tmp_path_factory.mktemp("course"))
