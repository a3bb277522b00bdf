"""Results tables: run directories -> the papers' tables, with the papers' numbers beside ours.

    python -m hybridlib results RUNS_OR_GRID_DIRS... [--table paper-a|paper-b|runs] [--markdown]
    python -m hybridlib results SHARD_DIR1 SHARD_DIR2 --table paper-a --out MERGED

    from hybridlib.study import results
    runs = results.read_runs(["~/hybridlib/runs/paper-a"])
    table = results.paper_table(runs, "paper-a")     # (model, dataset) rows: n_seeds, mean, std,
                                                    # paper, diff (test accuracy in %)
    results.wide_table(table)                        # models x datasets, as in the paper
    results.compare_pairs(runs, "paper-a")           # Welch's t-test per compared pair

Paper A's Table I and paper B's Table 1 report one run per cell and no error bars.
With several seeds per cell we report mean +- standard deviation (sample std,
n - 1) and the number of seeds, and for every pair of models a paper compares:

- the difference a - b (points) with its 95 % confidence interval, from Welch's
  standard error sqrt(s_a^2 / n_a + s_b^2 / n_b) and the Welch-Satterthwaite degrees
  of freedom (t quantile from scipy);
- Welch's two-sided p, and the Holm-adjusted p over the family of comparisons of
  one tests table: every comparison written into one `*_tests.csv`, per recipe
  (paper A: 4 pairs x 3 data sets = 12; paper B: 4). The verdict uses the Holm p;
- the minimum detectable effect (MDE): the smallest true difference the design
  finds with 80 % power at alpha 0.05 two-sided, from the pooled seed sd and the
  seeds per arm, solved exactly with the noncentral t distribution of the
  equal-variance t-test (df = n_a + n_b - 2);
- the test-set sampling noise: the binomial standard error of one run's accuracy,
  sqrt(p (1 - p) / n_test) in points (n_test from each run's summary), beside the
  seed sd. The seed sd is measured on one fixed test split, so it does not contain
  this noise; a run on another test sample of the same size would.

`paper_table` also gives, per cell, the range where one more run of ours, tested on
another sample of n_test images, would land 95 % of the time (`run_low`,
`run_high`), and whether the paper's single run lies in it (`paper_in_range`).
`compare_recipes` gives the same interval, Holm p (over all its cells) and MDE.

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
    "binomial_se",
    "cli_results",
    "compare_pairs",
    "compare_recipes",
    "complete_runs",
    "copy_runs",
    "dataset_label",
    "dataset_labels",
    "find_run_dirs",
    "holm",
    "minimum_detectable_effect",
    "one_run_range",
    "paper_table",
    "pooled_sd",
    "provenance",
    "read_runs",
    "to_markdown",
    "welch_interval",
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
        where unknown or where the cell's runs differ), test_size (test images per
        run), se_test (binomial standard error of one run's accuracy on them, points),
        run_low / run_high (`one_run_range`: where one more run of ours on another
        test sample of that size lands 95 % of the time) and paper_in_range (whether
        the paper's single run lies in that range; None where either is missing).
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
                std = float(accuracy.std(ddof=1)) if len(accuracy) > 1 else math.nan
                n_test = _test_size(cell)
                se_test = binomial_se(mean, n_test)
                low, high = one_run_range(mean, std, len(accuracy), se_test)
                rows.append(
                    {
                        "recipe": recipe,
                        "model": model,
                        "dataset": dataset,
                        "n_seeds": len(accuracy),
                        "mean": mean,
                        "std": std,
                        "min": float(accuracy.min()) if len(accuracy) else math.nan,
                        "max": float(accuracy.max()) if len(accuracy) else math.nan,
                        "paper": paper,
                        "diff": mean - paper,
                        "seeds": " ".join(str(int(s)) for s in sorted(cell["seed"])),
                        "epochs": " ".join(str(int(e)) for e in sorted(set(cell["epochs"]))),
                        "train_size": _train_size(cell),
                        "test_size": n_test,
                        "se_test": se_test,
                        "run_low": low,
                        "run_high": high,
                        "paper_in_range": (
                            bool(low <= paper <= high)
                            if not (math.isnan(paper) or math.isnan(low))
                            else None
                        ),
                    }
                )
    frame = pd.DataFrame(rows)
    keys = ["recipe", "model", "dataset"] if len(recipes) > 1 else ["model", "dataset"]
    if len(recipes) == 1:
        frame = frame.drop(columns="recipe")
    return frame.set_index(keys)


def _test_size(cell: pd.DataFrame) -> float:
    sizes = set(cell["test_size"].dropna().astype(int)) if "test_size" in cell else set()
    return float(sizes.pop()) if len(sizes) == 1 else math.nan


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
        alpha: significance level for the verdict (on the Holm-adjusted p).
    Returns:
        One row per (dataset, a, b): seeds and mean accuracy (%) of each, our
        difference a - b (points) with its 95 % interval (ci_low, ci_high; Welch's
        standard error and Welch-Satterthwaite df), the paper's difference, Welch's
        t, df and two-sided p, the Holm-adjusted p (`p_holm`) over the family of
        every comparison in the table, and the verdict on it; then the seed sd of
        each model (sd_a, sd_b), the pooled seed sd, the minimum detectable effect
        (`mde`, points; `minimum_detectable_effect`) and the binomial standard error
        of one run's accuracy on the test split (se_test_a, se_test_b, points). Runs
        of several recipes are compared within each recipe (a first column `recipe`
        then says which), and the Holm family is then each recipe's comparisons.
    """
    spec = _table_spec(table)
    runs = complete_runs(runs)
    recipes = sorted(runs["recipe"].fillna("paper").unique()) or ["paper"]
    rows = []
    for recipe in recipes:
        same = runs[runs["recipe"].fillna("paper") == recipe]
        family = []
        for dataset in _datasets_in(same, spec):
            for a, b in spec["pairs"]:
                acc_a = _accuracies(same, a, dataset)
                acc_b = _accuracies(same, b, dataset)
                if len(acc_a) == 0 and len(acc_b) == 0:
                    continue
                paper_a = spec["paper"].get(a, {}).get(dataset, math.nan)
                paper_b = spec["paper"].get(b, {}).get(dataset, math.nan)
                family.append(
                    {
                        "recipe": recipe,
                        "dataset": dataset,
                        "a": a,
                        "b": b,
                        **_welch(acc_a, acc_b, alpha),
                        "paper_diff": paper_a - paper_b,
                        "se_test_a": _cell_se(same, a, dataset),
                        "se_test_b": _cell_se(same, b, dataset),
                    }
                )
        rows += _holm_verdicts(family, alpha)
    columns = ["dataset", "a", "b", "n_a", "n_b", "mean_a", "mean_b", "diff", "ci_low"]
    columns += ["ci_high", "paper_diff", "t", "df", "p_value", "p_holm", "verdict"]
    columns += ["sd_a", "sd_b", "sd_pooled", "mde", "se_test_a", "se_test_b"]
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
        alpha: significance level for the verdict (on the Holm-adjusted p).
    Returns:
        One row per (model, dataset) with runs of both recipes: seeds and mean test
        accuracy (%) of each (n_a, mean_a: `other`; n_b, mean_b: `base`), diff with its
        95 % interval (ci_low, ci_high), t, df, p_value, the Holm-adjusted p over the
        family of all the table's cells (`p_holm`), the verdict on it, the paper's
        number, whether `other`'s mean beats it and beats `base`'s (`beats_paper`,
        `beats_base`: larger mean, and for the latter a significant Holm-adjusted
        test), the mean training time per run of each recipe (`time_base_s`,
        `time_other_s`), the seed sds, the minimum detectable effect (`mde`) and the
        binomial standard errors of one run's accuracy (`se_test_a`, `se_test_b`).
    """
    spec = _table_spec(table)
    runs = complete_runs(runs)
    recipe = runs["recipe"].fillna("paper")
    family = []
    for model in spec["models"]:
        for dataset in _datasets_in(runs, spec):
            acc_base = _accuracies(runs[recipe == base], model, dataset)
            acc_other = _accuracies(runs[recipe == other], model, dataset)
            if len(acc_base) == 0 or len(acc_other) == 0:
                continue
            test = _welch(acc_other, acc_base, alpha)
            paper = spec["paper"].get(model, {}).get(dataset, math.nan)
            family.append(
                {
                    "model": model,
                    "dataset": dataset,
                    **test,
                    "paper": paper,
                    "beats_paper": bool(test["mean_a"] > paper) if not math.isnan(paper) else None,
                    "time_base_s": _mean_time(runs[recipe == base], model, dataset),
                    "time_other_s": _mean_time(runs[recipe == other], model, dataset),
                    "se_test_a": _cell_se(runs[recipe == other], model, dataset),
                    "se_test_b": _cell_se(runs[recipe == base], model, dataset),
                }
            )
    rows = _holm_verdicts(family, alpha)
    for row in rows:
        row["beats_base"] = bool(row["diff"] > 0 and row["p_holm"] < alpha)
    columns = ["model", "dataset", "n_a", "n_b", "mean_a", "mean_b", "diff", "ci_low"]
    columns += ["ci_high", "t", "df", "p_value", "p_holm", "verdict", "paper", "beats_paper"]
    columns += ["beats_base", "time_base_s", "time_other_s", "sd_a", "sd_b", "sd_pooled"]
    columns += ["mde", "se_test_a", "se_test_b"]
    return pd.DataFrame(rows, columns=columns)


# ---------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------


def welch_interval(
    acc_a: Sequence[float], acc_b: Sequence[float], level: float = 0.95
) -> tuple[float, float, float]:
    """(low, high, df): the `level` confidence interval of mean(a) - mean(b), Welch.

    Standard error sqrt(s_a^2 / n_a + s_b^2 / n_b) (sample variances, n - 1), degrees
    of freedom by Welch-Satterthwaite, (v_a + v_b)^2 / (v_a^2 / (n_a - 1) + v_b^2 /
    (n_b - 1)) with v = s^2 / n, and the t quantile from scipy. NaN with fewer than
    two values in either arm or no variance at all.
    """
    from scipy import stats

    a, b = np.asarray(acc_a, dtype=float), np.asarray(acc_b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan, math.nan
    v_a, v_b = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if v_a + v_b == 0:
        return math.nan, math.nan, math.nan
    df = (v_a + v_b) ** 2 / (v_a**2 / (len(a) - 1) + v_b**2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + level / 2, df)) * math.sqrt(v_a + v_b)
    diff = float(a.mean() - b.mean())
    return diff - half, diff + half, float(df)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the given order; NaN stays NaN and is not
    counted in the family.

    With the m p-values sorted, p_(1) <= ... <= p_(m): adjusted p_(i) = max over j <= i
    of min(1, (m - j + 1) p_(j)). Rejecting where the adjusted p < alpha keeps the
    chance of any false positive in the family at most alpha.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, math.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    running = 0.0
    for rank, i in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def pooled_sd(acc_a: Sequence[float], acc_b: Sequence[float]) -> float:
    """The pooled seed sd, sqrt(((n_a - 1) s_a^2 + (n_b - 1) s_b^2) / (n_a + n_b - 2))."""
    a, b = np.asarray(acc_a, dtype=float), np.asarray(acc_b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return math.nan
    ss = (len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)
    return float(math.sqrt(ss / (len(a) + len(b) - 2)))


def minimum_detectable_effect(
    sd: float, n_a: int, n_b: int | None = None, *, alpha: float = 0.05, power: float = 0.8
) -> float:
    """The smallest true difference (in sd's unit) found with `power` at two-sided `alpha`.

    The equal-variance two-sample t-test with df = n_a + n_b - 2: the noncentrality
    lambda solving P(|T| > t_(1 - alpha/2, df) | T ~ noncentral t(df, lambda)) = power,
    times the standard error sd * sqrt(1/n_a + 1/n_b). (The normal approximation with t
    quantiles, (t_(1 - alpha/2, df) + t_(power, df)) * sd * sqrt(1/n_a + 1/n_b), is
    close and a little smaller.) NaN without an sd or with fewer than 2 seeds per arm.
    """
    from scipy import optimize, stats

    n_b = n_a if n_b is None else n_b
    if n_a < 2 or n_b < 2 or sd is None or not math.isfinite(sd):
        return math.nan
    df = n_a + n_b - 2
    crit = float(stats.t.ppf(1 - alpha / 2, df))

    def shortfall(nc: float) -> float:
        return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)) - power

    high = 1.0  # widen the bracket step by step (scipy's nct is NaN far out in the tail)
    while shortfall(high) < 0:
        high *= 2
    nc = optimize.brentq(shortfall, 0.0, high, xtol=1e-10)
    return float(nc * sd * math.sqrt(1 / n_a + 1 / n_b))


def binomial_se(accuracy: float, n_test: float) -> float:
    """sqrt(p (1 - p) / n_test) in points for an accuracy `accuracy` in % on n_test images:
    the test-set sampling noise of one run's accuracy."""
    if n_test is None or not n_test or math.isnan(n_test) or math.isnan(accuracy):
        return math.nan
    p = accuracy / 100.0
    return float(100.0 * math.sqrt(p * (1 - p) / n_test))


def one_run_range(
    mean: float, sd: float, n: int, se_test: float, level: float = 0.95
) -> tuple[float, float]:
    """Where one more run lands with probability `level`, tested on another sample of
    the test set's size: mean +- t_(level, df) * sqrt(sd^2 (1 + 1/n) + 2 se_test^2).

    sd^2 (1 + 1/n): a new seed's spread and the uncertainty of our mean; 2 se_test^2:
    our test split and the other sample each differ from the population by binomial
    noise (the seed sd, measured on one fixed split, holds none of it). The seed part
    is estimated from n seeds (n - 1 df), the binomial part is known, so df is
    Welch-Satterthwaite's: (A + B)^2 / (A^2 / (n - 1)) with A, B the two parts. This is
    the range a paper's single run of the same set-up would fall in. NaN below 2 seeds.
    """
    from scipy import stats

    if n < 2 or math.isnan(sd):
        return math.nan, math.nan
    seeds = sd**2 * (1 + 1 / n)
    test = 2 * se_test**2 if not math.isnan(se_test) else 0.0
    if seeds + test == 0:
        return mean, mean
    df = (seeds + test) ** 2 / (seeds**2 / (n - 1)) if seeds > 0 else math.inf
    half = float(stats.t.ppf(0.5 + level / 2, df)) * math.sqrt(seeds + test)
    return max(0.0, mean - half), min(100.0, mean + half)  # accuracies lie in 0..100 %


def _holm_verdicts(family: list[dict[str, Any]], alpha: float) -> list[dict[str, Any]]:
    """The rows of one family with their Holm p and the verdict on it."""
    adjusted = holm([row["p_value"] for row in family])
    for row, p_holm in zip(family, adjusted, strict=True):
        row["p_holm"] = float(p_holm)
        row["verdict"] = _verdict(row["n_a"], row["n_b"], row["diff"], p_holm, alpha)
    return family


def _datasets_in(runs: pd.DataFrame, spec: dict[str, Any]) -> list[str]:
    """The data sets with runs: the paper's first, in its order, then any others."""
    present = list(dict.fromkeys(runs["dataset"]))
    return [d for d in spec["datasets"] if d in present] + [
        d for d in present if d not in spec["datasets"]
    ]


def _welch(acc_a: np.ndarray, acc_b: np.ndarray, alpha: float) -> dict[str, Any]:
    """Seeds, means, difference a - b with its 95 % interval, Welch's t, df and two-sided
    p, the seed sds and the minimum detectable effect; the verdict comes with Holm."""
    from scipy import stats

    t = p = math.nan
    if len(acc_a) >= 2 and len(acc_b) >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zero variance: nan, handled in _verdict
            result = stats.ttest_ind(acc_a, acc_b, equal_var=False)
        t, p = float(result.statistic), float(result.pvalue)
    diff = float(acc_a.mean() - acc_b.mean()) if len(acc_a) and len(acc_b) else math.nan
    low, high, df = welch_interval(acc_a, acc_b)
    sd = pooled_sd(acc_a, acc_b)
    return {
        "n_a": len(acc_a),
        "n_b": len(acc_b),
        "mean_a": float(acc_a.mean()) if len(acc_a) else math.nan,
        "mean_b": float(acc_b.mean()) if len(acc_b) else math.nan,
        "diff": diff,
        "ci_low": low,
        "ci_high": high,
        "t": t,
        "df": df,
        "p_value": p,
        "sd_a": float(acc_a.std(ddof=1)) if len(acc_a) > 1 else math.nan,
        "sd_b": float(acc_b.std(ddof=1)) if len(acc_b) > 1 else math.nan,
        "sd_pooled": sd,
        "mde": minimum_detectable_effect(sd, len(acc_a), len(acc_b), alpha=alpha),
    }


def _cell_se(runs: pd.DataFrame, model: str, dataset: str) -> float:
    """The binomial standard error (points) of one run's accuracy in a cell."""
    cell = runs[(runs["model"] == model) & (runs["dataset"] == dataset)]
    accuracy = cell["test_acc"].astype(float) * 100.0
    return binomial_se(float(accuracy.mean()) if len(accuracy) else math.nan, _test_size(cell))


def _accuracies(runs: pd.DataFrame, model: str, dataset: str) -> np.ndarray:
    cell = runs[(runs["model"] == model) & (runs["dataset"] == dataset)]
    return cell["test_acc"].astype(float).to_numpy() * 100.0


def _mean_time(runs: pd.DataFrame, model: str, dataset: str) -> float:
    cell = runs[(runs["model"] == model) & (runs["dataset"] == dataset)]
    times = cell["train_time_s"].dropna().astype(float)
    return float(times.mean()) if len(times) else math.nan


def _verdict(n_a: int, n_b: int, diff: float, p_holm: float, alpha: float) -> str:
    if n_a < 2 or n_b < 2:
        return "needs >= 2 seeds per model"
    if math.isnan(p_holm):
        return "identical runs" if diff == 0 else "no seed noise to compare with"
    if p_holm < alpha:
        return f"larger than seed noise (Holm p < {alpha:g})"
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
        + "\nOurs: mean ± sample standard deviation over n seeds; diff = ours - paper.\n"
        + "\n## Our cells against the paper's single run\n\n"
        + to_markdown(range_table(long), index=False)
        + RANGE_NOTE,
    )
    _write_atomic(
        paths["tests_md"],
        f"# {spec['title']}: are the differences larger than seed noise?\n\n{header}\n"
        + tests_markdown(tests),
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


RANGE_NOTE = (
    "\nsd: seed-to-seed sample standard deviation, on one fixed test split; test SE: the "
    "binomial standard error sqrt(p (1 - p) / n_test) of one run's accuracy on n_test "
    "test images (test-set sampling noise, not in the sd); one-run 95 % range: mean ± "
    "t sqrt(sd² (1 + 1/n) + 2 SE²) (Welch-Satterthwaite df), where one more run of ours "
    "tested on another "
    "sample of n_test images would land 95 % of the time; in range: whether the paper's "
    "single run lies in it.\n"
)

TESTS_NOTE = (
    "\ndiff = a - b in points, with its 95 % confidence interval (Welch's standard error, "
    "Welch-Satterthwaite df, t quantile). p: Welch's t-test, two-sided. Holm p: adjusted "
    "by Holm's step-down method over the family of every comparison in this table "
    "({family}); the verdict uses the Holm p at 0.05. MDE: the smallest true difference "
    "this design detects with 80 % power at 0.05 two-sided (before the Holm correction), "
    "from the pooled seed sd and the seeds per model (noncentral t, df = n_a + n_b - 2). "
    "seed sd: the sample sd of each model's seeds (a, b); test SE: the binomial standard "
    "error of one run's accuracy on the test split (a, b), all in points.\n"
)


def _interval_text(low: float, high: float) -> str:
    return "-" if math.isnan(low) else f"[{low:+.2f}, {high:+.2f}]"


def _pair_text(a: float, b: float, fmt: str = ".2f") -> str:
    return ", ".join("-" if math.isnan(v) else format(v, fmt) for v in (a, b))


def tests_markdown(tests: pd.DataFrame) -> str:
    """`compare_pairs` as a readable markdown table and a note on every column."""
    shown = pd.DataFrame(
        {
            **({"recipe": tests["recipe"]} if "recipe" in tests else {}),
            "dataset": tests["dataset"],
            "a": tests["a"],
            "b": tests["b"],
            "n_a": tests["n_a"],
            "n_b": tests["n_b"],
            "mean_a": tests["mean_a"],
            "mean_b": tests["mean_b"],
            "diff": tests["diff"].map(lambda v: "-" if math.isnan(v) else f"{v:+.2f}"),
            "95 % CI": [
                _interval_text(lo, hi)
                for lo, hi in zip(tests["ci_low"], tests["ci_high"], strict=True)
            ],
            "paper_diff": tests["paper_diff"],
            "p": tests["p_value"].map(_p_text),
            "Holm p": tests["p_holm"].map(_p_text),
            "verdict": tests["verdict"],
            "MDE": tests["mde"],
            "seed sd (a, b)": [
                _pair_text(a, b) for a, b in zip(tests["sd_a"], tests["sd_b"], strict=True)
            ],
            "test SE (a, b)": [
                _pair_text(a, b)
                for a, b in zip(tests["se_test_a"], tests["se_test_b"], strict=True)
            ],
        }
    )
    if "recipe" in tests:
        sizes = tests.groupby("recipe")["p_value"].count()
        family = "; ".join(f"{r}: {n} comparisons" for r, n in sizes.items())
    else:
        family = f"{int(tests['p_value'].notna().sum())} comparisons"
    return to_markdown(shown, index=False) + TESTS_NOTE.format(family=family)


def range_table(long: pd.DataFrame) -> pd.DataFrame:
    """Per cell of a `paper_table`: mean, seed sd, test SE, the one-run range, the
    paper's number and whether it lies in the range."""
    frame = long.reset_index()
    names = dataset_labels(frame)

    def number(v, fmt=".1f"):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    return pd.DataFrame(
        {
            **({"recipe": frame["recipe"]} if "recipe" in frame else {}),
            "model": frame["model"].map(lambda m: LABELS.get(m, m)),
            "data set": frame["dataset"].map(names),
            "n": frame["n_seeds"],
            "mean": frame["mean"].map(number),
            "sd": frame["std"].map(lambda v: number(v, ".2f")),
            "n_test": frame["test_size"].map(lambda v: number(v, ".0f")),
            "test SE": frame["se_test"].map(lambda v: number(v, ".2f")),
            "one-run 95 % range": [
                "-" if math.isnan(lo) else f"{lo:.1f} to {hi:.1f}"
                for lo, hi in zip(frame["run_low"], frame["run_high"], strict=True)
            ],
            "paper": frame["paper"].map(lambda v: number(v, ".0f")),
            "in range": frame["paper_in_range"].map(
                lambda v: "-" if v is None or v != v else ("yes" if v else "no")
            ),
        }
    )


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
            "95 % CI": [
                _interval_text(lo, hi)
                for lo, hi in zip(compared["ci_low"], compared["ci_high"], strict=True)
            ],
            "p": compared["p_value"].map(_p_text),
            "Holm p": compared["p_holm"].map(_p_text),
            "verdict": compared["verdict"],
            "MDE": compared["mde"].map(lambda v: "-" if math.isnan(v) else f"{v:.1f}"),
            "paper": compared["paper"].map(lambda p: "-" if math.isnan(p) else f"{p:.0f}"),
            "s / run (paper's, improved)": [
                f"{a:.0f}, {b:.0f}"
                for a, b in zip(compared["time_base_s"], compared["time_other_s"], strict=True)
            ],
        }
    )
    lines = [
        to_markdown(shown, index=False),
        "\nAccuracy: mean test accuracy (%) over n seeds; diff = improved - paper's recipe, "
        "with its 95 % confidence interval (Welch, Welch-Satterthwaite df); p: Welch's "
        f"t-test (two-sided); Holm p: adjusted over the family of all {len(compared)} cells "
        "of this table, and the verdict uses it; MDE: the smallest difference (points) "
        "detected with 80 % power at 0.05 two-sided from the pooled seed sd (noncentral t). "
        "Time: mean training seconds per run.\n",
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
        from hybridlib.study.reproduce import write_figures

        written = write_figures(runs, args.table, figures_dir=args.figures)
        print(f"wrote {len(written)} figures into {args.figures}")
    long = paper_table(runs, args.table)
    print(TABLES[args.table]["title"])
    _print(wide_table(long), args.markdown)
    tests = compare_pairs(runs, args.table)
    if not tests.empty:
        print(
            "\nWelch's t-test between the models the paper compares (diff = a - b, points; "
            "Holm p over these comparisons):"
        )
        _print(tests, args.markdown, index=False)
    return 0


def _print(frame: pd.DataFrame, markdown: bool, index: bool = True) -> None:
    if markdown:
        print(to_markdown(frame, index=index), end="")
    else:
        options = ("display.width", 200, "display.max_columns", None)
        with pd.option_context(*options, "display.float_format", "{:.2f}".format):
            print(frame.to_string(index=index))
