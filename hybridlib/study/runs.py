"""Run folders: find them, read them into one table, copy the finished ones.

    from hybridlib.study.runs import complete_runs, copy_runs, read_runs
    runs = read_runs(["~/hybridlib/runs/paper-a"])   # one row per run folder (RUN_COLUMNS)
    finished = complete_runs(runs)                   # status "complete", with a test accuracy
    one_split(finished)                              # per data set, the largest training split
    copy_runs(finished, "results/paper-a/runs")      # without checkpoints, to share or commit

A run folder is what `run_training` leaves: `config.json`, then `summary.json`
when it ends, beside `metrics.csv`, `confusion.csv`, predictions and checkpoints.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from hybridlib.errors import HybridError

__all__ = [
    "RUN_COLUMNS",
    "RUN_FILES",
    "complete_runs",
    "copy_runs",
    "one_split",
    "find_run_dirs",
    "read_runs",
    "write_atomic",
]

RUN_COLUMNS = (
    "run_dir",
    "status",
    "model",
    "dataset",
    "seed",
    "recipe",
    "epochs",
    "epochs_done",
    "batch_size",
    "lr",
    "limit",
    "train_acc",
    "val_acc",
    "test_acc",
    "test_size",
    "train_size",
    "train_time_s",
    "images_per_s",
    "device",
    "precision",
    "torch",
    "git_commit",
)

# Files of a run folder worth keeping beside a results table (not the checkpoints).
RUN_FILES = (
    "config.json",
    "summary.json",
    "metrics.csv",
    "predictions.csv",
    "confusion.csv",
    "per_class.csv",
)


def find_run_dirs(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Run directories in `paths`: each path is a run directory or a folder of them."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: dict[Path, None] = {}
    for path in paths:
        path = Path(path).expanduser()
        if not path.exists():
            raise HybridError(f"{str(path)!r} does not exist; pass run or grid directories")
        if (path / "config.json").is_file():
            found[path.resolve()] = None
            continue
        for config in sorted(path.rglob("config.json")):
            found[config.parent.resolve()] = None
    return list(found)


def read_runs(paths) -> pd.DataFrame:
    """One row per run directory found in `paths` (see `RUN_COLUMNS`).

    Accuracies are fractions (0..1) as in summary.json. Runs without a summary
    (still training, or killed) have status "incomplete".
    """
    if isinstance(paths, pd.DataFrame):
        return paths
    rows = [row for run_dir in find_run_dirs(paths) if (row := _read_run(run_dir))]
    return pd.DataFrame(rows, columns=list(RUN_COLUMNS))


def _read_run(run_dir: Path) -> dict[str, Any] | None:
    """A run's row, or None (with a one-line warning) when its files cannot be read:
    one broken run must not keep the others out of a table."""
    summary_path = run_dir / "summary.json"
    try:
        config = json.loads((run_dir / "config.json").read_text())
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        if not isinstance(config, dict) or not isinstance(summary, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as error:
        print(f"hybridlib: skipping {run_dir}: cannot read its files ({error})", file=sys.stderr)
        return None
    row = {name: summary.get(name, config.get(name)) for name in RUN_COLUMNS}
    row["run_dir"] = str(run_dir)
    row["status"] = summary.get("status", "incomplete")
    row["limit"] = config.get("limit")
    row["train_size"] = (summary.get("sizes") or {}).get("train")
    row["precision"] = _precision(config, str(row["device"] or config.get("device") or ""))
    return row


def _precision(config: dict[str, Any], device: str) -> str:
    """The run's arithmetic: "bf16" under bf16 autocast (CUDA with `amp`, the CPU with
    `cpu_bf16`), else "fp32"."""
    if device.startswith("cuda"):
        return "bf16" if config.get("amp", True) else "fp32"
    return "bf16" if device.startswith("cpu") and config.get("cpu_bf16") else "fp32"


def complete_runs(runs) -> pd.DataFrame:
    """The finished runs (status "complete", with a test accuracy) of a `read_runs` frame
    or of run / grid directories."""
    runs = read_runs(runs)
    return runs[(runs["status"] == "complete") & runs["test_acc"].notna()]


def one_split(runs, *, common: bool = False, precision: str = "fp32") -> pd.DataFrame:
    """The runs of one experiment per data set: the most training images, one precision.

    A data set's runs may come from different splits (a quick grid on a subset beside
    a complete one) or precisions (a bf16 check beside fp32 runs); a
    table cell mixing them would average two experiments, which the tables refuse
    (`HybridError`). This keeps, per data set and recipe, the runs of the largest
    `train_size`, and of those the runs in `precision` where there are any. With
    `common=True` the size is the largest that every recipe of that data set has runs
    at, so that recipes compare on equal data. Runs without a known size are kept only
    where no size is known.
    """
    runs = read_runs(runs)
    recipe = runs["recipe"].fillna("paper")
    keep = pd.Series(False, index=runs.index)
    for _, rows in runs.groupby("dataset", sort=False):
        by_recipe = [group.index for _, group in rows.groupby(recipe[rows.index])]
        sizes = [set(runs.loc[g, "train_size"].dropna().astype(int)) for g in by_recipe]
        if common:
            by_recipe, sizes = [rows.index], [set.intersection(*sizes)]
        for index, known in zip(by_recipe, sizes, strict=True):
            size = runs.loc[index, "train_size"]
            keep[index] = size.isna() if not known else size == max(known)
    runs = runs[keep]
    if "precision" in runs and runs["precision"].notna().any():
        preferred = runs["precision"] == precision
        cell = [runs["dataset"], runs["recipe"].fillna("paper")]
        has_preferred = preferred.groupby(cell).transform("any")
        runs = runs[preferred | ~has_preferred]
    return runs


def copy_runs(paths, dest: str | os.PathLike) -> list[Path]:
    """Copy the finished runs in `paths` into `dest/<run name>/`, without checkpoints.

    What is copied (`RUN_FILES`) is all that the tables, the figures and notebook 08
    read, a few hundred kilobytes per run instead of the checkpoint's megabytes. A
    run already in `dest` is replaced, also where `paths` name `dest` itself beside the
    grid it was copied from (a grid's new runs added to its committed copies); two runs
    with one name outside `dest` are an error.

    Returns:
        The run folders in `dest`, one per finished run.
    """
    runs = complete_runs(paths)
    dest = Path(dest)
    dirs = [
        (Path(d), Path(d).resolve() == (dest / Path(d).name).resolve()) for d in runs["run_dir"]
    ]
    elsewhere = {d.name for d, is_copy in dirs if not is_copy}
    runs = runs[[not (is_copy and d.name in elsewhere) for d, is_copy in dirs]]
    names = [Path(d).name for d in runs["run_dir"]]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise HybridError(
            f"several runs are named {', '.join(repeated)}; copy their grids into separate folders"
        )
    copied = []
    for run_dir in runs["run_dir"]:
        source, target = Path(run_dir), dest / Path(run_dir).name
        if source.resolve() == target.resolve():
            copied.append(target)
            continue
        target.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:
            if (source / name).is_file():
                write_atomic(target / name, (source / name).read_text())
        copied.append(target)
    return copied


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename: readers (and other
    shards) see the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
