"""Results tables: run directories -> the papers' tables, with the papers' numbers beside ours.

    python -m hybridlib results RUNS_OR_GRID_DIRS... [--table paper-a|paper-b|runs] [--markdown]
    python -m hybridlib results SHARD_DIR1 SHARD_DIR2 --table paper-a --out MERGED

    from hybridlib import results
    runs = results.read_runs(["~/hybridlib/runs/paper-a"])
    table = results.paper_table(runs, "paper-a")     # (model, dataset) rows: n_seeds, mean, std,
                                                    # paper, diff (test accuracy in %)
    results.wide_table(table)                        # models x datasets, as in the paper
    results.compare_pairs(runs, "paper-a")           # Welch's t-test per compared pair

Paper A's Table I and paper B's Table 1 report one run per cell and no error bars.
With several seeds per cell we report mean +- standard deviation (sample std,
n - 1) and the number of seeds, and for every pair of models a paper compares,
Welch's t-test (unequal variances) says whether our difference is larger than
the seed-to-seed noise.

Any number of run and grid directories merge into one table: the shards of a grid
(`reproduce --shard i/n`), in one shared directory or in one directory per machine,
give the same table as the whole grid run in one place.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import warnings
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hybridlib.errors import HybridError

__all__ = [
    "PAPER_A",
    "PAPER_B",
    "TABLES",
    "cli_results",
    "compare_pairs",
    "compare_recipes",
    "complete_runs",
    "copy_runs",
    "dataset_label",
    "dataset_labels",
    "find_run_dirs",
    "paper_table",
    "provenance",
    "read_runs",
    "to_markdown",
    "wide_table",
    "write_tables",
]

# Paper A, Table I: test accuracy (%) of each model on each data set.
PAPER_A = {
    "cnn": {"cifar10": 80.0, "caltech101": 91.0, "tiny-imagenet": 64.0},
    "cnn_lstm": {"cifar10": 80.0, "caltech101": 78.0, "tiny-imagenet": 59.0},
    "cnn_lstm_skip": {"cifar10": 78.0, "caltech101": 91.0, "tiny-imagenet": 65.0},
    "autoencoder": {"cifar10": 66.0, "caltech101": 90.0, "tiny-imagenet": 63.0},
}
# Paper B, Table 1: CIFAR-10 test accuracy (%).
PAPER_B = {
    "yu_cnn": {"cifar10": 72.0},
    "yu_cnn_nolrn": {"cifar10": 69.0},
    "row_gru": {"cifar10": 46.0},
    "row_lstm": {"cifar10": 47.0},
    "yu_conv_lstm": {"cifar10": 78.0},
}

# Training-split sizes of the papers' experiments; a run on fewer images is a subset
# and its table column says so.
PAPER_TRAIN_SIZES = {"cifar10": 45_000, "caltech101": 2_432, "tiny-imagenet": 1_800}

LABELS = {
    "cnn": "CNN",
    "cnn_lstm": "CNN + LSTM",
    "cnn_lstm_skip": "CNN + LSTM + skip",
    "autoencoder": "Auto-encoder",
    "yu_cnn": "CNN with LRN",
    "yu_cnn_nolrn": "CNN without LRN",
    "row_gru": "GRU (rows)",
    "row_lstm": "LSTM (rows)",
    "yu_conv_lstm": "two-layer conv + LSTM",
    "cifar10": "CIFAR-10",
    "caltech101": "Caltech 101",
    "tiny-imagenet": "Tiny ImageNet",
    "digits": "digits",
}

# Each table: its numbers, its models and data sets in the paper's order, and the
# pairs (a, b) whose difference the paper discusses.
TABLES: dict[str, dict[str, Any]] = {
    "paper-a": {
        "title": "Paper A, Table I: test accuracy (%)",
        "paper": PAPER_A,
        "models": ("cnn", "cnn_lstm", "cnn_lstm_skip", "autoencoder"),
        "datasets": ("cifar10", "caltech101", "tiny-imagenet"),
        "pairs": (
            ("cnn_lstm", "cnn"),  # does an LSTM after the convs help?
            ("cnn_lstm_skip", "cnn_lstm"),  # does the skip branch help the LSTM?
            ("cnn_lstm_skip", "cnn"),  # the paper's proposal against the plain CNN
            ("autoencoder", "cnn"),  # does the reconstruction task help?
        ),
    },
    "paper-b": {
        "title": "Paper B, Table 1: CIFAR-10 test accuracy (%)",
        "paper": PAPER_B,
        "models": ("yu_cnn", "yu_cnn_nolrn", "row_gru", "row_lstm", "yu_conv_lstm"),
        "datasets": ("cifar10",),
        "pairs": (
            ("yu_cnn", "yu_cnn_nolrn"),  # local response normalisation
            ("row_lstm", "row_gru"),  # LSTM against GRU on image rows
            ("yu_conv_lstm", "yu_cnn"),  # the paper's proposal against its CNN
            ("yu_conv_lstm", "row_lstm"),  # ... and against the row LSTM
        ),
    },
}

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
    "torch",
    "git_commit",
)


def _table_spec(table: str) -> dict[str, Any]:
    if table not in TABLES:
        from hybridlib.errors import choices_error

        raise choices_error("table", table, TABLES)
    return TABLES[table]


# ---------------------------------------------------------------------------
# Reading run directories
# ---------------------------------------------------------------------------


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
    rows = [_read_run(run_dir) for run_dir in find_run_dirs(paths)]
    return pd.DataFrame(rows, columns=list(RUN_COLUMNS))


def _read_run(run_dir: Path) -> dict[str, Any]:
    config = json.loads((run_dir / "config.json").read_text())
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    row = {name: summary.get(name, config.get(name)) for name in RUN_COLUMNS}
    row["run_dir"] = str(run_dir)
    row["status"] = summary.get("status", "incomplete")
    row["limit"] = config.get("limit")
    row["train_size"] = (summary.get("sizes") or {}).get("train")
    return row


def complete_runs(runs) -> pd.DataFrame:
    """The finished runs (status "complete", with a test accuracy) of a `read_runs` frame
    or of run / grid directories."""
    runs = read_runs(runs)
    return runs[(runs["status"] == "complete") & runs["test_acc"].notna()]


# ---------------------------------------------------------------------------
# The papers' tables
# ---------------------------------------------------------------------------


def paper_table(
    runs,
    table: str = "paper-a",
    *,
    models: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per (model, dataset) cell of a paper's table, ours beside the paper's.

    Args:
        runs: a `read_runs` frame, or run / grid directories.
        table: "paper-a" (Table I) or "paper-b" (Table 1).
        models: rows (default: the paper's models).
        datasets: data sets (default: those with finished runs, the paper's first; the
            paper's when there are none).
    Returns:
        A DataFrame indexed by (model, dataset) (and recipe first, if runs of several
        recipes are mixed) with columns n_seeds, mean, std, min, max (test accuracy in
        %), paper (the paper's %, NaN where it has none), diff (mean - paper, points),
        seeds (the seeds used), epochs and train_size (training images per run, NaN
        where unknown or where the cell's runs differ).
    """
    spec = _table_spec(table)
    runs = complete_runs(runs)
    models = tuple(models or spec["models"])
    runs = runs[runs["model"].isin(models)]
    if datasets is None:
        present = list(dict.fromkeys(runs["dataset"]))
        ours = [d for d in spec["datasets"] if d in present]
        datasets = ours + [d for d in present if d not in ours] or list(spec["datasets"])
    recipes = sorted(runs["recipe"].dropna().unique()) or ["paper"]
    rows = []
    for recipe in recipes:
        for model in models:
            for dataset in datasets:
                cell = runs[
                    (runs["model"] == model)
                    & (runs["dataset"] == dataset)
                    & (runs["recipe"].fillna("paper") == recipe)
                ]
                accuracy = cell["test_acc"].astype(float).to_numpy() * 100.0
                paper = spec["paper"].get(model, {}).get(dataset, math.nan)
                mean = float(accuracy.mean()) if len(accuracy) else math.nan
                rows.append(
                    {
                        "recipe": recipe,
                        "model": model,
                        "dataset": dataset,
                        "n_seeds": len(accuracy),
                        "mean": mean,
                        "std": float(accuracy.std(ddof=1)) if len(accuracy) > 1 else math.nan,
                        "min": float(accuracy.min()) if len(accuracy) else math.nan,
                        "max": float(accuracy.max()) if len(accuracy) else math.nan,
                        "paper": paper,
                        "diff": mean - paper,
                        "seeds": " ".join(str(int(s)) for s in sorted(cell["seed"])),
                        "epochs": " ".join(str(int(e)) for e in sorted(set(cell["epochs"]))),
                        "train_size": _train_size(cell),
                    }
                )
    frame = pd.DataFrame(rows)
    keys = ["recipe", "model", "dataset"] if len(recipes) > 1 else ["model", "dataset"]
    if len(recipes) == 1:
        frame = frame.drop(columns="recipe")
    return frame.set_index(keys)


def _train_size(cell: pd.DataFrame) -> float:
    sizes = set(cell["train_size"].dropna().astype(int)) if "train_size" in cell else set()
    return float(sizes.pop()) if len(sizes) == 1 else math.nan


def dataset_label(dataset: str, train_size: float | None = None) -> str:
    """The data set's name in a table; "(subset, N train)" where N is below the paper's."""
    label = LABELS.get(dataset, dataset)
    full = PAPER_TRAIN_SIZES.get(dataset)
    if full and train_size is not None and not math.isnan(train_size) and train_size < full:
        label += f" (subset, {int(train_size):,} train)"
    return label


def dataset_labels(frame: pd.DataFrame) -> dict[str, str]:
    """{dataset: its `dataset_label`} for a runs frame or a `paper_table` (reset), from the
    smallest training split among its rows."""
    labels = {}
    for dataset, rows in frame.groupby("dataset", sort=False):
        sizes = rows["train_size"].dropna() if "train_size" in rows else pd.Series(dtype=float)
        labels[dataset] = dataset_label(dataset, sizes.min() if len(sizes) else None)
    return labels


def _cell_text(row: pd.Series) -> str:
    if row["n_seeds"] == 0:
        return "-"
    if row["n_seeds"] == 1:
        return f"{row['mean']:.1f} (n=1)"
    return f"{row['mean']:.1f} ± {row['std']:.1f} (n={row['n_seeds']})"


def wide_table(table: pd.DataFrame) -> pd.DataFrame:
    """The long `paper_table` laid out like the paper: models x data sets.

    For every data set three columns: ours ("mean ± std (n=seeds)"), the paper's
    number and the difference in points. A data set whose runs trained on fewer
    images than the paper's is labelled as a subset (`dataset_label`).
    """
    frame = table.reset_index()
    names = dataset_labels(frame)
    group = [c for c in ("recipe",) if c in frame.columns]
    columns: dict[str, list] = {}
    index = []
    for keys, rows in frame.groupby(group + ["model"], sort=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        label = LABELS.get(keys[-1], keys[-1])
        index.append(f"{keys[0]}: {label}" if group else label)
        for _, row in rows.iterrows():
            name = names[row["dataset"]]
            columns.setdefault(name, []).append(_cell_text(row))
            columns.setdefault(f"{name} paper", []).append(
                "-" if math.isnan(row["paper"]) else f"{row['paper']:.0f}"
            )
            columns.setdefault(f"{name} diff", []).append(
                "-" if math.isnan(row["diff"]) else f"{row['diff']:+.1f}"
            )
    return pd.DataFrame(columns, index=pd.Index(index, name="model"))


def compare_pairs(runs, table: str = "paper-a", *, alpha: float = 0.05) -> pd.DataFrame:
    """Welch's t-test for each pair of models the paper compares, per data set.

    Args:
        runs: a `read_runs` frame, or run / grid directories.
        table: "paper-a" or "paper-b".
        alpha: significance level for the verdict.
    Returns:
        One row per (dataset, a, b): seeds and mean accuracy (%) of each, our
        difference a - b, the paper's difference, Welch's t and two-sided p, and
        a verdict. Runs of several recipes are compared within each recipe (a
        first column `recipe` then says which).
    """
    spec = _table_spec(table)
    runs = complete_runs(runs)
    recipes = sorted(runs["recipe"].fillna("paper").unique()) or ["paper"]
    rows = []
    for recipe in recipes:
        same = runs[runs["recipe"].fillna("paper") == recipe]
        for dataset in _datasets_in(same, spec):
            for a, b in spec["pairs"]:
                acc_a = _accuracies(same, a, dataset)
                acc_b = _accuracies(same, b, dataset)
                if len(acc_a) == 0 and len(acc_b) == 0:
                    continue
                paper_a = spec["paper"].get(a, {}).get(dataset, math.nan)
                paper_b = spec["paper"].get(b, {}).get(dataset, math.nan)
                rows.append(
                    {
                        "recipe": recipe,
                        "dataset": dataset,
                        "a": a,
                        "b": b,
                        **_welch(acc_a, acc_b, alpha),
                        "paper_diff": paper_a - paper_b,
                    }
                )
    columns = ["dataset", "a", "b", "n_a", "n_b", "mean_a", "mean_b", "diff", "paper_diff"]
    columns += ["t", "p_value", "verdict"]
    if len(recipes) > 1:
        columns = ["recipe", *columns]
    return pd.DataFrame(rows, columns=columns)


def compare_recipes(
    runs,
    table: str = "paper-a",
    *,
    base: str = "paper",
    other: str = "improved",
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Each cell trained with two recipes: accuracy, Welch's t-test and training time.

    Args:
        runs: a `read_runs` frame, or run / grid directories, holding runs of both recipes.
        table: "paper-a" or "paper-b" (its models and numbers).
        base, other: the two recipes; differences are other - base.
        alpha: significance level for the verdict.
    Returns:
        One row per (model, dataset) with runs of both recipes: seeds and mean test
        accuracy (%) of each (n_a, mean_a: `other`; n_b, mean_b: `base`), diff, t,
        p_value, verdict, the paper's number, whether `other`'s mean beats it and
        beats `base`'s (`beats_paper`, `beats_base`: larger mean, and for the latter
        a significant Welch test), and the mean training time per run of each
        recipe (`time_base_s`, `time_other_s`).
    """
    spec = _table_spec(table)
    runs = complete_runs(runs)
    recipe = runs["recipe"].fillna("paper")
    rows = []
    for model in spec["models"]:
        for dataset in _datasets_in(runs, spec):
            acc_base = _accuracies(runs[recipe == base], model, dataset)
            acc_other = _accuracies(runs[recipe == other], model, dataset)
            if len(acc_base) == 0 or len(acc_other) == 0:
                continue
            test = _welch(acc_other, acc_base, alpha)
            paper = spec["paper"].get(model, {}).get(dataset, math.nan)
            rows.append(
                {
                    "model": model,
                    "dataset": dataset,
                    **test,
                    "paper": paper,
                    "beats_paper": bool(test["mean_a"] > paper) if not math.isnan(paper) else None,
                    "beats_base": bool(test["diff"] > 0 and test["p_value"] < alpha),
                    "time_base_s": _mean_time(runs[recipe == base], model, dataset),
                    "time_other_s": _mean_time(runs[recipe == other], model, dataset),
                }
            )
    columns = ["model", "dataset", "n_a", "n_b", "mean_a", "mean_b", "diff", "t", "p_value"]
    columns += ["verdict", "paper", "beats_paper", "beats_base", "time_base_s", "time_other_s"]
    return pd.DataFrame(rows, columns=columns)


def _datasets_in(runs: pd.DataFrame, spec: dict[str, Any]) -> list[str]:
    """The data sets with runs: the paper's first, in its order, then any others."""
    present = list(dict.fromkeys(runs["dataset"]))
    return [d for d in spec["datasets"] if d in present] + [
        d for d in present if d not in spec["datasets"]
    ]


def _welch(acc_a: np.ndarray, acc_b: np.ndarray, alpha: float) -> dict[str, Any]:
    """Seeds, means, difference a - b, Welch's t and two-sided p, and a verdict."""
    from scipy import stats

    t = p = math.nan
    if len(acc_a) >= 2 and len(acc_b) >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zero variance: nan, handled in _verdict
            result = stats.ttest_ind(acc_a, acc_b, equal_var=False)
        t, p = float(result.statistic), float(result.pvalue)
    diff = float(acc_a.mean() - acc_b.mean()) if len(acc_a) and len(acc_b) else math.nan
    return {
        "n_a": len(acc_a),
        "n_b": len(acc_b),
        "mean_a": float(acc_a.mean()) if len(acc_a) else math.nan,
        "mean_b": float(acc_b.mean()) if len(acc_b) else math.nan,
        "diff": diff,
        "t": t,
        "p_value": p,
        "verdict": _verdict(acc_a, acc_b, diff, p, alpha),
    }


def _accuracies(runs: pd.DataFrame, model: str, dataset: str) -> np.ndarray:
    cell = runs[(runs["model"] == model) & (runs["dataset"] == dataset)]
    return cell["test_acc"].astype(float).to_numpy() * 100.0


def _mean_time(runs: pd.DataFrame, model: str, dataset: str) -> float:
    cell = runs[(runs["model"] == model) & (runs["dataset"] == dataset)]
    times = cell["train_time_s"].dropna().astype(float)
    return float(times.mean()) if len(times) else math.nan


def _verdict(acc_a, acc_b, diff: float, p: float, alpha: float) -> str:
    if len(acc_a) < 2 or len(acc_b) < 2:
        return "needs >= 2 seeds per model"
    if math.isnan(p):
        return "identical runs" if diff == 0 else "no seed noise to compare with"
    if p < alpha:
        return f"larger than seed noise (p < {alpha:g})"
    return "within seed noise"


# ---------------------------------------------------------------------------
# Writing tables
# ---------------------------------------------------------------------------


def to_markdown(frame: pd.DataFrame, *, floatfmt: str = ".2f", index: bool = True) -> str:
    """A GitHub-flavoured markdown table (no extra dependency)."""
    frame = frame.reset_index() if index else frame
    header = [str(c) for c in frame.columns]

    def cell(value) -> str:
        if isinstance(value, float):
            return "-" if math.isnan(value) else format(value, floatfmt)
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for values in frame.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in values) + " |")
    return "\n".join(lines) + "\n"


def provenance(runs: pd.DataFrame, command: str | None = None) -> dict[str, Any]:
    """Where a table's numbers come from: command, hardware, versions, seeds."""
    from hybridlib import __version__, runtime

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
    }


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
    spec = _table_spec(table)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Grid shards sharing `out` write one at a time, each from the runs finished when it
    # holds the lock, so the last writer's tables include every finished run.
    with _locked(out / ".tables.lock"):
        return _write_tables(spec, read_runs(runs), out, table, command)


def _write_tables(spec, runs: pd.DataFrame, out: Path, table: str, command) -> dict[str, Path]:
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
    _write_atomic(paths["table_csv"], long.to_csv(float_format="%.4f"))
    _write_atomic(paths["tests_csv"], tests.to_csv(index=False, float_format="%.6g"))
    _write_atomic(paths["runs_csv"], _relative_runs(runs, out).to_csv(index=False))
    header = _provenance_text(stamp)
    _write_atomic(
        paths["table_md"],
        f"# {spec['title']}\n\n{header}\n"
        + to_markdown(wide_table(long))
        + "\nOurs: mean ± sample standard deviation over n seeds; diff = ours - paper.\n",
    )
    _write_atomic(
        paths["tests_md"],
        f"# {spec['title']}: are the differences larger than seed noise?\n\n{header}\n"
        "Welch's t-test (two-sided, unequal variances) on the per-seed test accuracies; "
        "diff = a - b in points.\n\n"
        + to_markdown(tests.assign(p_value=tests["p_value"].map(_p_text)), index=False),
    )
    _write_atomic(paths["provenance"], json.dumps(stamp, indent=2) + "\n")
    recipes = set(complete_runs(runs)["recipe"].fillna("paper"))
    if {"paper", "improved"} <= recipes:
        compared = compare_recipes(runs, table)
        paths["recipes_csv"] = out / f"{prefix}_recipes.csv"
        paths["recipes_md"] = out / f"{prefix}_recipes.md"
        _write_atomic(paths["recipes_csv"], compared.to_csv(index=False, float_format="%.6g"))
        _write_atomic(
            paths["recipes_md"],
            f"# {spec['title']}: the improved recipe against the paper's\n\n{header}\n"
            + recipes_markdown(compared, runs),
        )
    return paths


def _p_text(p: float) -> str:
    """A p-value with three significant digits: 0.0503 must not print as 0.05, nor 4e-4 as
    0.00."""
    return "-" if math.isnan(p) else f"{p:.3g}"


def recipes_markdown(compared: pd.DataFrame, runs) -> str:
    """`compare_recipes` as markdown: every cell, then the best result per data set."""
    names = dataset_labels(complete_runs(runs))
    shown = pd.DataFrame(
        {
            "model": compared["model"].map(lambda m: LABELS.get(m, m)),
            "data set": compared["dataset"].map(names),
            "paper's recipe (ours)": [
                f"{m:.1f} (n={n})" for m, n in zip(compared["mean_b"], compared["n_b"], strict=True)
            ],
            "improved": [
                f"{m:.1f} (n={n})" for m, n in zip(compared["mean_a"], compared["n_a"], strict=True)
            ],
            "diff": compared["diff"].map("{:+.1f}".format),
            "p": compared["p_value"].map(_p_text),
            "verdict": compared["verdict"],
            "paper": compared["paper"].map(lambda p: "-" if math.isnan(p) else f"{p:.0f}"),
            "s / run (paper's, improved)": [
                f"{a:.0f}, {b:.0f}"
                for a, b in zip(compared["time_base_s"], compared["time_other_s"], strict=True)
            ],
        }
    )
    lines = [
        to_markdown(shown, index=False),
        "\nAccuracy: mean test accuracy (%) over n seeds; diff = improved - paper's recipe; "
        "p: Welch's t-test (two-sided). Time: mean training seconds per run.\n",
        "\n## Best per data set\n",
    ]
    for dataset in dict.fromkeys(compared["dataset"]):
        part = compared[compared["dataset"] == dataset]
        best_base = part.loc[part["mean_b"].idxmax()]
        best_other = part.loc[part["mean_a"].idxmax()]
        beaten = int((part["mean_a"] > part["mean_b"]).sum())
        # over the same cells for both recipes, so that the times compare
        time_base, time_other = part["time_base_s"].mean(), part["time_other_s"].mean()
        lines.append(
            f"- {names[dataset]}: best with the paper's recipe "
            f"{best_base['mean_b']:.1f} % ({LABELS.get(best_base['model'], best_base['model'])}), "
            f"best improved {best_other['mean_a']:.1f} % "
            f"({LABELS.get(best_other['model'], best_other['model'])}); the improved mean is "
            f"higher in {beaten} of {len(part)} cells; mean training time per run "
            f"{time_base:.0f} s (paper's) and {time_other:.0f} s (improved), "
            f"{time_other / time_base:.2f}x.\n"
        )
    return "".join(lines)


def _relative_runs(runs: pd.DataFrame, out: Path) -> pd.DataFrame:
    """`runs` with each run folder named relative to `out` (a portable runs.csv)."""

    def relative(run_dir) -> str:
        try:
            return Path(os.path.relpath(Path(run_dir).resolve(), out.resolve())).as_posix()
        except ValueError:  # Windows: another drive
            return str(run_dir)

    return runs.assign(run_dir=runs["run_dir"].map(relative))


# Files of a run folder worth keeping beside a results table (not the checkpoints).
RUN_FILES = (
    "config.json",
    "summary.json",
    "metrics.csv",
    "predictions.csv",
    "confusion.csv",
    "per_class.csv",
)


def copy_runs(paths, dest: str | os.PathLike) -> list[Path]:
    """Copy the finished runs in `paths` into `dest/<run name>/`, without checkpoints.

    What is copied (`RUN_FILES`) is all that the tables, the figures and notebook 08
    read, a few hundred kilobytes per run instead of the checkpoint's megabytes. A
    run already in `dest` is replaced; two runs with one name are an error.
    """
    runs = complete_runs(paths)
    dest = Path(dest)
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
                _write_atomic(target / name, (source / name).read_text())
        copied.append(target)
    return copied


def _write_atomic(path: Path, text: str) -> None:
    """Readers (and other shards) see the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on `path` for the block (POSIX `flock`; none on Windows)."""
    try:
        import fcntl
    except ImportError:  # Windows: shards there should write to their own folders
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _provenance_text(stamp: dict[str, Any]) -> str:
    return (
        f"Made by `{stamp['command']}` on {', '.join(stamp['devices']) or 'unknown hardware'} "
        f"(torch {', '.join(stamp['torch']) or '?'}, hybridlib {stamp['hybridlib']}, "
        f"commit {stamp['git_commit'] or 'none'}), {stamp['written']}; "
        f"{stamp['runs']} runs, seeds {stamp['seeds']}, epochs {stamp['epochs']}.\n"
    )


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def cli_results(args) -> int:
    """`python -m hybridlib results RUN_DIR... [--table ...] [--markdown]`"""
    runs = read_runs(args.run_dirs)
    if runs.empty:
        raise HybridError(
            f"no run directories found in {' '.join(args.run_dirs)}; pass folders "
            "written by `train` or `reproduce`"
        )
    if args.table == "runs" and getattr(args, "out", None):
        raise HybridError("--out writes a paper's tables: add --table paper-a or --table paper-b")
    if args.table == "runs":
        frame = runs.drop(columns=["run_dir", "torch", "git_commit"]).copy()
        for column in ("train_acc", "val_acc", "test_acc"):
            frame[column] = frame[column].astype(float) * 100.0
        frame["lr"] = frame["lr"].map(lambda lr: "-" if pd.isna(lr) else f"{lr:g}")  # 1e-4: 0.0001
        _print(frame, args.markdown, index=False)
        return 0
    if getattr(args, "copy_runs", False) and not getattr(args, "out", None):
        raise HybridError("--copy-runs copies the runs beside the tables: add --out DIR")
    if getattr(args, "copy_runs", False):
        runs = read_runs(copy_runs(runs, Path(args.out) / "runs"))
        print(f"copied {len(runs)} finished runs into {Path(args.out) / 'runs'}")
    if getattr(args, "out", None):
        paths = write_tables(runs, args.out, args.table)
        print(f"wrote {paths['table_md']} and {paths['tests_md']} from {len(runs)} runs")
    if getattr(args, "figures", None):
        from hybridlib.reproduce import write_figures

        written = write_figures(runs, args.table, figures_dir=args.figures)
        print(f"wrote {len(written)} figures into {args.figures}")
    long = paper_table(runs, args.table)
    print(TABLES[args.table]["title"])
    _print(wide_table(long), args.markdown)
    tests = compare_pairs(runs, args.table)
    if not tests.empty:
        print("\nWelch's t-test between the models the paper compares (diff = a - b, points):")
        _print(tests, args.markdown, index=False)
    return 0


def _print(frame: pd.DataFrame, markdown: bool, index: bool = True) -> None:
    if markdown:
        print(to_markdown(frame, index=index), end="")
    else:
        options = ("display.width", 200, "display.max_columns", None)
        with pd.option_context(*options, "display.float_format", "{:.2f}".format):
            print(frame.to_string(index=index))
