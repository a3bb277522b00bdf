"""The papers' tables from our runs: ours beside the paper's, and the pairs it compares.

    from hybridlib.study import tables
    long = tables.paper_table(runs, "paper-a")   # (model, dataset) rows: n_seeds, mean, std,
                                                 # paper, diff (test accuracy in %)
    tables.wide_table(long)                      # models x data sets, as in the paper
    tables.compare_pairs(runs, "paper-a")        # Welch's t-test per compared pair
    tables.compare_recipes(runs, "paper-a")      # the improved recipe against the paper's

`runs` is a `hybridlib.study.runs.read_runs` frame or run / grid directories; any
number of them merge into one table, so the shards of a grid give the same table
as the whole grid run in one place. The statistics are `hybridlib.study.stats`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from hybridlib.errors import HybridError
from hybridlib.study.papers import LABELS, dataset_labels, table_spec
from hybridlib.study.runs import complete_runs
from hybridlib.study.stats import binomial_se, holm_verdicts, one_run_range, welch_test

__all__ = ["compare_pairs", "compare_recipes", "paper_table", "range_table", "wide_table"]


# ---------------------------------------------------------------------------
# A paper's table: one row per cell
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
    spec = table_spec(table)
    runs = _one_experiment_per_cell(complete_runs(runs))
    models = tuple(models or spec["models"])
    runs = runs[runs["model"].isin(models)]
    if datasets is None:
        datasets = _datasets_in(runs, spec) or list(spec["datasets"])
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
                paper = spec["paper"].get(model, {}).get(dataset, math.nan)
                keys = {"recipe": recipe, "model": model, "dataset": dataset}
                rows.append({**keys, **_cell_summary(cell, paper)})
    frame = pd.DataFrame(rows)
    keys = ["recipe", "model", "dataset"] if len(recipes) > 1 else ["model", "dataset"]
    if len(recipes) == 1:
        frame = frame.drop(columns="recipe")
    return frame.set_index(keys)


def _one_experiment_per_cell(runs: pd.DataFrame, *, across: str | None = None) -> pd.DataFrame:
    """`runs`, after checking that no cell (model, data set, recipe) mixes runs trained
    on different splits or in different precisions. With `across` (a column two groups
    of runs are compared on, as in `compare_recipes`) a cell is (model, data set): both
    groups must have the same split, and each group one precision, which may differ
    between the groups (a bf16 grid against an fp32 one: the comparison says so)."""
    runs = runs.assign(recipe=runs["recipe"].fillna("paper"))
    fields = {"train_size": "splits", "precision": "precisions", "recipe": "recipes"}
    fields = {f: what for f, what in fields.items() if f in runs}  # old runs.csv: no precision
    if across is None:
        checks = [(["model", "dataset", "recipe"], ("train_size", "precision"))]
    else:
        whole = tuple(f for f in ("train_size", "recipe") if f != across)
        side = () if across == "precision" else ("precision",)
        checks = [(["model", "dataset"], whole), (["model", "dataset", across], side)]
    for keys, checked in checks:
        checked = [f for f in checked if f in fields]
        for key, cell in runs.groupby(keys, sort=False):
            for field in checked:
                _refuse_mixed(cell, field, fields[field], key)
    return runs


def _refuse_mixed(cell: pd.DataFrame, field: str, what: str, key: tuple) -> None:
    """Raise `HybridError` if the runs of one cell differ in `field`."""
    values = sorted(set(cell[field].dropna()))
    if len(values) <= 1:
        return
    if field == "train_size":
        shown = " and ".join(f"{int(v):,}" for v in values) + " training images"
    else:
        shown = " and ".join(map(str, values))
    where = f" ({key[2]} recipe)" if len(key) > 2 else ""
    raise HybridError(
        f"the runs of {key[0]} on {key[1]}{where} were trained on different {what} "
        f"({shown}): a cell must be one experiment; keep one split per data set "
        "with `hybridlib.study.results.one_split`, and table other precisions apart"
    )


def _cell_summary(cell: pd.DataFrame, paper: float) -> dict[str, Any]:
    """The columns of `paper_table` for one cell's runs and the paper's number."""
    accuracy = cell["test_acc"].astype(float).to_numpy() * 100.0
    mean = float(accuracy.mean()) if len(accuracy) else math.nan
    std = float(accuracy.std(ddof=1)) if len(accuracy) > 1 else math.nan
    n_test = _test_size(cell)
    se_test = binomial_se(mean, n_test)
    low, high = one_run_range(mean, std, len(accuracy), se_test)
    return {
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
            bool(low <= paper <= high) if not (math.isnan(paper) or math.isnan(low)) else None
        ),
    }


def _test_size(cell: pd.DataFrame) -> float:
    sizes = set(cell["test_size"].dropna().astype(int)) if "test_size" in cell else set()
    return float(sizes.pop()) if len(sizes) == 1 else math.nan


def _train_size(cell: pd.DataFrame) -> float:
    sizes = set(cell["train_size"].dropna().astype(int)) if "train_size" in cell else set()
    return float(sizes.pop()) if len(sizes) == 1 else math.nan


def _datasets_in(runs: pd.DataFrame, spec: dict[str, Any]) -> list[str]:
    """The data sets with runs: the paper's first, in its order, then any others."""
    present = list(dict.fromkeys(runs["dataset"]))
    return [d for d in spec["datasets"] if d in present] + [
        d for d in present if d not in spec["datasets"]
    ]


# ---------------------------------------------------------------------------
# The table laid out for reading
# ---------------------------------------------------------------------------


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


def _number(value, fmt: str = ".1f") -> str:
    """`value` formatted, or "-" where it is missing."""
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    return "-" if missing else format(value, fmt)


def range_table(long: pd.DataFrame) -> pd.DataFrame:
    """Per cell of a `paper_table`: mean, seed sd, test SE, the one-run range, the
    paper's number and whether it lies in the range."""
    frame = long.reset_index()
    names = dataset_labels(frame)
    return pd.DataFrame(
        {
            **({"recipe": frame["recipe"]} if "recipe" in frame else {}),
            "model": frame["model"].map(lambda m: LABELS.get(m, m)),
            "data set": frame["dataset"].map(names),
            "n": frame["n_seeds"],
            "mean": frame["mean"].map(_number),
            "sd": frame["std"].map(lambda v: _number(v, ".2f")),
            "n_test": frame["test_size"].map(lambda v: _number(v, ".0f")),
            "test SE": frame["se_test"].map(lambda v: _number(v, ".2f")),
            "one-run 95 % range": [
                "-" if math.isnan(lo) else f"{lo:.1f} to {hi:.1f}"
                for lo, hi in zip(frame["run_low"], frame["run_high"], strict=True)
            ],
            "paper": frame["paper"].map(lambda v: _number(v, ".0f")),
            "in range": frame["paper_in_range"].map(
                lambda v: "-" if v is None or v != v else ("yes" if v else "no")
            ),
        }
    )


# ---------------------------------------------------------------------------
# Comparisons: the pairs a paper discusses, and one recipe against another
# ---------------------------------------------------------------------------


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
    spec = table_spec(table)
    runs = _one_experiment_per_cell(complete_runs(runs))
    recipes = sorted(runs["recipe"].fillna("paper").unique()) or ["paper"]
    rows = []
    for recipe in recipes:
        same = runs[runs["recipe"].fillna("paper") == recipe]
        rows += holm_verdicts(_pair_family(same, spec, recipe, alpha), alpha)
    columns = ["dataset", "a", "b", "n_a", "n_b", "mean_a", "mean_b", "diff", "ci_low"]
    columns += ["ci_high", "paper_diff", "t", "df", "p_value", "p_holm", "verdict"]
    columns += ["sd_a", "sd_b", "sd_pooled", "mde", "se_test_a", "se_test_b"]
    if len(recipes) > 1:
        columns = ["recipe", *columns]
    return pd.DataFrame(rows, columns=columns)


def _pair_family(
    runs: pd.DataFrame, spec: dict[str, Any], recipe: str, alpha: float
) -> list[dict[str, Any]]:
    """The tests of every compared pair on every data set of one recipe's runs."""
    family = []
    for dataset in _datasets_in(runs, spec):
        for a, b in spec["pairs"]:
            acc_a = _accuracies(runs, a, dataset)
            acc_b = _accuracies(runs, b, dataset)
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
                    **welch_test(acc_a, acc_b, alpha),
                    "paper_diff": paper_a - paper_b,
                    "se_test_a": _cell_se(runs, a, dataset),
                    "se_test_b": _cell_se(runs, b, dataset),
                }
            )
    return family


def compare_recipes(
    runs,
    table: str = "paper-a",
    *,
    base: str = "paper",
    other: str = "improved",
    alpha: float = 0.05,
    column: str = "recipe",
) -> pd.DataFrame:
    """Each cell trained with two recipes: accuracy, Welch's t-test and training time.

    Args:
        runs: a `read_runs` frame, or run / grid directories, holding runs of both recipes.
        table: "paper-a" or "paper-b" (its models and numbers).
        base, other: the two recipes; differences are other - base.
        alpha: significance level for the verdict (on the Holm-adjusted p).
        column: what tells the two groups apart: "recipe", or another column of the
            runs, e.g. `column="precision", base="fp32", other="bf16"`.
    Returns:
        One row per (model, dataset) with runs of both recipes: seeds and mean test
        accuracy (%) of each (n_a, mean_a: `other`; n_b, mean_b: `base`), diff with its
        95 % interval (ci_low, ci_high), t, df, p_value, the Holm-adjusted p over the
        family of all the table's cells (`p_holm`), the verdict on it, the paper's
        number, whether `other`'s mean beats it and beats `base`'s (`beats_paper`,
        `beats_base`: larger mean, and for the latter a significant Holm-adjusted
        test), the mean training time per run of each recipe (`time_base_s`,
        `time_other_s`), the seed sds, the minimum detectable effect (`mde`), the
        binomial standard errors of one run's accuracy (`se_test_a`, `se_test_b`) and
        the precision each side trained in (`precision_a`, `precision_b`: "fp32" or
        "bf16"; each side of a cell is one precision, the two sides may differ).
    """
    spec = table_spec(table)
    runs = complete_runs(runs)
    group = runs[column].fillna("paper") if column == "recipe" else runs[column]
    _one_experiment_per_cell(runs[group.isin([base, other])], across=column)
    base_runs, other_runs = runs[group == base], runs[group == other]
    family = []
    for model in spec["models"]:
        for dataset in _datasets_in(runs, spec):
            row = _recipe_row(spec, base_runs, other_runs, model, dataset, alpha)
            if row is not None:
                family.append(row)
    rows = holm_verdicts(family, alpha)
    for row in rows:
        row["beats_base"] = bool(row["diff"] > 0 and row["p_holm"] < alpha)
    columns = ["model", "dataset", "n_a", "n_b", "mean_a", "mean_b", "diff", "ci_low"]
    columns += ["ci_high", "t", "df", "p_value", "p_holm", "verdict", "paper", "beats_paper"]
    columns += ["beats_base", "time_base_s", "time_other_s", "sd_a", "sd_b", "sd_pooled"]
    columns += ["mde", "se_test_a", "se_test_b", "precision_a", "precision_b"]
    return pd.DataFrame(rows, columns=columns)


def _recipe_row(
    spec: dict[str, Any],
    base_runs: pd.DataFrame,
    other_runs: pd.DataFrame,
    model: str,
    dataset: str,
    alpha: float,
) -> dict[str, Any] | None:
    """One cell of `compare_recipes` (other - base), or None without runs of both."""
    acc_base = _accuracies(base_runs, model, dataset)
    acc_other = _accuracies(other_runs, model, dataset)
    if len(acc_base) == 0 or len(acc_other) == 0:
        return None
    test = welch_test(acc_other, acc_base, alpha)
    paper = spec["paper"].get(model, {}).get(dataset, math.nan)
    return {
        "model": model,
        "dataset": dataset,
        **test,
        "paper": paper,
        "beats_paper": bool(test["mean_a"] > paper) if not math.isnan(paper) else None,
        "time_base_s": _mean_time(base_runs, model, dataset),
        "time_other_s": _mean_time(other_runs, model, dataset),
        "se_test_a": _cell_se(other_runs, model, dataset),
        "se_test_b": _cell_se(base_runs, model, dataset),
        "precision_a": _cell_precision(other_runs, model, dataset),
        "precision_b": _cell_precision(base_runs, model, dataset),
    }


def _cell_precision(runs: pd.DataFrame, model: str, dataset: str) -> str | None:
    """The precision a cell's runs trained in (one, checked), or None where unrecorded."""
    if "precision" not in runs:
        return None
    cell = runs[(runs["model"] == model) & (runs["dataset"] == dataset)]
    found = sorted(set(cell["precision"].dropna()))
    return found[0] if found else None


def _cell_se(runs: pd.DataFrame, model: str, dataset: str) -> float:
    """The binomial standard error (points) of one run's accuracy in a cell."""
    cell = runs[(runs["model"] == model) & (runs["dataset"] == dataset)]
    accuracy = cell["test_acc"].astype(float) * 100.0
    return binomial_se(float(accuracy.mean()) if len(accuracy) else math.nan, _test_size(cell))


def _accuracies(runs: pd.DataFrame, model: str, dataset: str) -> np.ndarray:
    """The test accuracies (%) of a cell's runs, in the runs' order."""
    cell = runs[(runs["model"] == model) & (runs["dataset"] == dataset)]
    return cell["test_acc"].astype(float).to_numpy() * 100.0


def _mean_time(runs: pd.DataFrame, model: str, dataset: str) -> float:
    cell = runs[(runs["model"] == model) & (runs["dataset"] == dataset)]
    times = cell["train_time_s"].dropna().astype(float)
    return float(times.mean()) if len(times) else math.nan
