"""Write a paper's tables to a folder, stamped with what made them.

    from hybridlib.study.report import write_tables
    paths = write_tables(["runs/paper-a"], "results/paper-a", "paper-a")
    paths["table_md"]     # results/paper-a/paper_a_table.md: ours beside the paper's

Every file says where its numbers come from (`provenance`: the command, the
hardware, the versions, the seeds). Grid shards that share one folder may call
`write_tables` at once: they take turns under a file lock, and each file is
replaced whole, so the last one to finish leaves the whole grid's tables.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from hybridlib import __version__, runtime
from hybridlib.errors import HybridError
from hybridlib.study.markdown import (
    RANGE_NOTE,
    comparison_markdown,
    recipes_markdown,
    tests_markdown,
    to_markdown,
)
from hybridlib.study.papers import dataset_labels, table_spec
from hybridlib.study.runs import complete_runs, read_runs, write_atomic
from hybridlib.study.tables import (
    compare_pairs,
    compare_recipes,
    paper_table,
    range_table,
    wide_table,
)

try:
    import fcntl  # POSIX only: the lock that lets grid shards share one folder
except ImportError:  # Windows: shards there should write to their own folders
    fcntl = None

__all__ = ["COMPARISONS", "provenance", "provenance_text", "write_comparison", "write_tables"]

# What `results --compare NAME` compares: (the runs' column, base, other); other - base.
COMPARISONS = {"precision": ("precision", "fp32", "bf16")}


def provenance(runs: pd.DataFrame, command: str | None = None) -> dict[str, Any]:
    """Where a table's numbers come from: command, hardware, versions, seeds.

    Args:
        runs: a `read_runs` frame, or run / grid directories (the finished ones count).
        command: the command to name (default: this process's `python -m hybridlib ...`).
    """
    runs = complete_runs(runs)
    return {
        "command": command or "python -m hybridlib " + " ".join(sys.argv[1:]),
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hybridlib": __version__,
        "git_commit": runtime.git_commit(),
        "devices": sorted({str(d) for d in runs["device"].dropna()}),
        "torch": sorted({str(v) for v in runs["torch"].dropna()}),
        "seeds": sorted({int(s) for s in runs["seed"].dropna()}),
        "runs": int(len(runs)),
        "epochs": sorted({int(e) for e in runs["epochs"].dropna()}),
        "precision": sorted({str(p) for p in runs["precision"].dropna()}),
    }


def provenance_text(stamp: dict[str, Any]) -> str:
    """A `provenance` stamp as the sentence under a markdown table's title."""
    return (
        f"Made by `{stamp['command']}` on {', '.join(stamp['devices']) or 'unknown hardware'} "
        f"(torch {', '.join(stamp['torch']) or '?'}, hybridlib {stamp['hybridlib']}, "
        f"commit {stamp['git_commit'] or 'none'}), {stamp['written']}; "
        f"{stamp['runs']} runs, seeds {stamp['seeds']}, epochs {stamp['epochs']}, "
        f"precision {', '.join(stamp.get('precision') or ['?'])}.\n"
    )


def write_tables(
    runs, out_dir: str | os.PathLike, table: str = "paper-a", *, command: str | None = None
) -> dict[str, Path]:
    """Write the table, the pair tests and the run list as CSV and markdown.

    Files (prefix `paper_a` or `paper_b`): `<prefix>_table.csv` (long), `<prefix>_table.md`
    (wide, as in the paper, with provenance), `<prefix>_tests.csv` / `.md`, `runs.csv`
    (run folders named relative to `out_dir`), and `<prefix>_provenance.json`;
    where the runs hold both the paper's and the improved recipe, also
    `<prefix>_recipes.csv` / `.md` (`compare_recipes`).

    Returns:
        {"table_csv": path, "table_md": ..., "tests_csv": ..., "tests_md": ...,
         "runs_csv": ..., "provenance": ...} (and "recipes_csv", "recipes_md")
    """
    spec = table_spec(table)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Grid shards sharing `out` write one at a time, each from the runs finished when it
    # holds the lock, so the last writer's tables include every finished run.
    with _locked(out / ".tables.lock"):
        return _write_tables(spec, read_runs(runs), out, table, command)


def _write_tables(spec, runs: pd.DataFrame, out: Path, table: str, command) -> dict[str, Path]:
    """`write_tables` once the lock is held: compute every table, then write each file."""
    prefix = table.replace("-", "_")
    long = paper_table(runs, table)
    tests = compare_pairs(runs, table)
    stamp = provenance(runs, command)
    paths = {
        "table_csv": out / f"{prefix}_table.csv",
        "table_md": out / f"{prefix}_table.md",
        "tests_csv": out / f"{prefix}_tests.csv",
        "tests_md": out / f"{prefix}_tests.md",
        "runs_csv": out / "runs.csv",
        "provenance": out / f"{prefix}_provenance.json",
    }
    write_atomic(paths["table_csv"], long.to_csv(float_format="%.4f"))
    write_atomic(paths["tests_csv"], tests.to_csv(index=False, float_format="%.6g"))
    write_atomic(paths["runs_csv"], _relative_runs(runs, out).to_csv(index=False))
    header = provenance_text(stamp)
    write_atomic(
        paths["table_md"],
        f"# {spec['title']}\n\n{header}\n"
        + to_markdown(wide_table(long))
        + "\nOurs: mean ± sample standard deviation over n seeds; diff = ours - paper.\n"
        + _precision_note(runs, long)
        + "\n## Our cells against the paper's single run\n\n"
        + to_markdown(range_table(long), index=False)
        + RANGE_NOTE,
    )
    write_atomic(
        paths["tests_md"],
        f"# {spec['title']}: are the differences larger than seed noise?\n\n{header}\n"
        + tests_markdown(tests),
    )
    write_atomic(paths["provenance"], json.dumps(stamp, indent=2) + "\n")
    recipes = set(complete_runs(runs)["recipe"].fillna("paper"))
    if {"paper", "improved"} <= recipes:
        paths.update(_write_recipes(spec, runs, out, table, header))
    return paths


def _precision_note(runs: pd.DataFrame, long: pd.DataFrame) -> str:
    """Where a table's data sets trained in different precisions (each cell is one), the
    sentence that says which, in the order of the table `long`; else nothing (the
    provenance line names the one)."""
    runs = complete_runs(runs)
    if "precision" not in runs or runs["precision"].nunique() < 2:
        return ""
    names = dataset_labels(runs)
    precisions = runs.groupby("dataset")["precision"].agg(lambda p: ", ".join(sorted(set(p))))
    order = dict.fromkeys(long.index.get_level_values("dataset"))
    return f"Precision by data set: {'; '.join(f'{names[d]} {precisions[d]}' for d in order)}.\n"


def _write_recipes(spec, runs: pd.DataFrame, out: Path, table: str, header: str):
    """`<prefix>_recipes.csv` / `.md`: the improved recipe against the paper's, per cell."""
    prefix = table.replace("-", "_")
    compared = compare_recipes(runs, table)
    paths = {
        "recipes_csv": out / f"{prefix}_recipes.csv",
        "recipes_md": out / f"{prefix}_recipes.md",
    }
    write_atomic(paths["recipes_csv"], compared.to_csv(index=False, float_format="%.6g"))
    write_atomic(
        paths["recipes_md"],
        f"# {spec['title']}: the improved recipe against the paper's\n\n{header}\n"
        + recipes_markdown(compared, runs),
    )
    return paths


def write_comparison(
    runs, out_dir: str | os.PathLike, table: str, name: str, *, command: str | None = None
) -> dict[str, Path]:
    """`<prefix>_<name>.csv` / `.md` and `<prefix>_<name>_provenance.json`: the runs of two
    groups compared cell by cell (`COMPARISONS[name]`, e.g. bf16 against fp32 runs), with
    `compare_recipes(..., column=...)`'s statistics. The runs of both groups go in."""
    spec, prefix = table_spec(table), table.replace("-", "_")
    column, base, other = COMPARISONS[name]
    runs = read_runs(runs)
    compared = compare_recipes(runs, table, column=column, base=base, other=other)
    if compared.empty:
        raise HybridError(f"--compare {name}: no cell has runs with both {base} and {other}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamp = provenance(runs, command)
    paths = {
        "csv": out / f"{prefix}_{name}.csv",
        "md": out / f"{prefix}_{name}.md",
        "provenance": out / f"{prefix}_{name}_provenance.json",
    }
    write_atomic(paths["csv"], compared.to_csv(index=False, float_format="%.6g"))
    write_atomic(
        paths["md"],
        f"# {spec['title']}: {other} against {base} runs\n\n{provenance_text(stamp)}\n"
        + comparison_markdown(compared, runs, base, other),
    )
    write_atomic(paths["provenance"], json.dumps(stamp, indent=2) + "\n")
    return paths


def _relative_runs(runs: pd.DataFrame, out: Path) -> pd.DataFrame:
    """`runs` with each run folder named relative to `out` (a portable runs.csv)."""

    def relative(run_dir) -> str:
        try:
            return Path(os.path.relpath(Path(run_dir).resolve(), out.resolve())).as_posix()
        except ValueError:  # Windows: another drive
            return str(run_dir)

    return runs.assign(run_dir=runs["run_dir"].map(relative))


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on `path` for the block (POSIX `flock`; none on Windows)."""
    if fcntl is None:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
