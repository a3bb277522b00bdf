"""Where data sets and runs live.

Two environment variables, both optional:

- `HYBRIDLIB_DATA`: the data root. Each data set sits in its usual sub-folder
  (`cifar-10-batches-py/`, `caltech101/`, `tiny-imagenet-200/`, ...).
  Default: `~/hybridlib/data`.
- `HYBRIDLIB_RUNS`: where runs, results tables and the executed course go.
  Default: `~/hybridlib/runs`.

Both defaults are absolute, so a notebook finds the same folders whichever
directory its kernel was started in. Folders are created when first needed.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "HYBRIDLIB_DATA"
RUNS_ENV = "HYBRIDLIB_RUNS"
_DEFAULT_HOME = Path("~") / "hybridlib"


def _resolve(value: str | os.PathLike | None, env: str, default: Path, create: bool) -> Path:
    if value is None or str(value) == "":
        value = os.environ.get(env) or default
    path = Path(value).expanduser().resolve()
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def data_root(root: str | os.PathLike | None = None, *, create: bool = False) -> Path:
    """The data root: `root` if given, else `$HYBRIDLIB_DATA`, else `~/hybridlib/data`."""
    return _resolve(root, DATA_ENV, _DEFAULT_HOME / "data", create)


def runs_root(root: str | os.PathLike | None = None, *, create: bool = False) -> Path:
    """The output root: `root` if given, else `$HYBRIDLIB_RUNS`, else `~/hybridlib/runs`."""
    return _resolve(root, RUNS_ENV, _DEFAULT_HOME / "runs", create)
