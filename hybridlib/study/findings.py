"""The study's answer, written from its tables: what the runs support, in words.

    from hybridlib.study import findings, results
    tests = results.compare_pairs(runs, "paper-a")
    recipes = results.compare_recipes(runs, "paper-a")
    print(findings.findings_markdown(tests, recipes, recall, labels=labels))

Every number in the text is read from the tables given, so the prose cannot drift
from the outputs a reader sees above it: a difference is called real only when its
Holm-adjusted p is below alpha; otherwise the text says which sizes of effect the
95 % interval leaves open and which the design could have detected (`mde`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

__all__ = ["findings_markdown", "model_findings", "per_class_findings", "recipe_findings"]


def _name(labels: Mapping[str, str], key: str) -> str:
    return labels.get(key, key)


def _points(x: float) -> str:
    """A signed difference in points to one decimal, or two where one decimal would
    show a difference that is not zero as 0.0 ("-0.04", not "-0.0")."""
    text = f"{x:+.1f}"
    return f"{x:+.2f}" if text in ("+0.0", "-0.0") and x != 0 else text


def _untested(rows):
    """True where a comparison has no test: fewer than 2 seeds a side, or no p (for a
    frame of comparisons, a boolean Series; for one row, a bool)."""
    return (rows["n_a"] < 2) | (rows["n_b"] < 2) | pd.isna(rows["p_holm"])


def _pair_sentence(row: pd.Series, labels: Mapping[str, str], alpha: float) -> str:
    a, b = _name(labels, row["a"]), _name(labels, row["b"])
    if _untested(row):
        return (
            f"{a} vs {b}: {_points(row['diff'])} points from {int(row['n_a'])} and "
            f"{int(row['n_b'])} seeds: not tested (a test needs 2 seeds or more per model)."
        )
    low, high = _points(row["ci_low"]), _points(row["ci_high"])
    interval = f"{_points(row['diff'])} points (95 % CI {low} to {high})"
    if row["p_holm"] < alpha:
        return f"{a} vs {b}: {interval}, Holm p = {row['p_holm']:.3f}: larger than seed noise."
    caveat = (
        " (the interval alone excludes zero, Holm's correction over the table's comparisons"
        " does not)"
        if row["ci_low"] > 0 or row["ci_high"] < 0
        else ""
    )
    return (
        f"{a} vs {b}: {interval}, Holm p = {row['p_holm']:.2f}: within seed noise{caveat}; the "
        f"runs leave differences from {low} to {high} points "
        f"open, and the design detects only about {row['mde']:.1f} points or more "
        f"({int(row['n_a'])} and {int(row['n_b'])} seeds)."
    )


def model_findings(
    tests: pd.DataFrame, labels: Mapping[str, str] | None = None, *, alpha: float = 0.05
) -> list[str]:
    """One line per data set: which of the paper's model comparisons exceed seed noise.

    Args:
        tests: a `compare_pairs` table (one row per data set and pair).
        labels: display names of models and data sets.
        alpha: the level the Holm-adjusted p is compared with.
    Returns:
        Markdown bullet lines.
    """
    labels = labels or {}
    lines = []
    for dataset, part in tests.groupby("dataset", sort=False):
        real, untested = int((part["p_holm"] < alpha).sum()), int(_untested(part).sum())
        head = (
            f"**{_name(labels, dataset)}**: {real} of {len(part) - untested} tested comparisons "
            "exceed seed noise" + (f" ({untested} not testable yet)." if untested else ".")
        )
        pairs = [_pair_sentence(row, labels, alpha) for _, row in part.iterrows()]
        lines.append("* " + head + "\n" + "\n".join(f"  * {p}" for p in pairs))
    return lines


def recipe_findings(
    recipes: pd.DataFrame, labels: Mapping[str, str] | None = None, *, alpha: float = 0.05
) -> list[str]:
    """What the training recipe changes: improved minus paper, per cell, in one line.

    Args:
        recipes: a `compare_recipes` table (model, dataset, diff, ci_low, ci_high, p_holm).
    Returns:
        Markdown bullet lines (none for an empty table).
    """
    if recipes is None or not len(recipes):
        return []
    labels = labels or {}

    def cells(rows: pd.DataFrame) -> str:
        return ", ".join(
            f"{_name(labels, r.model)} on {_name(labels, r.dataset)} ({_points(r.diff)})"
            for r in rows.itertuples()
        )

    untested = _untested(recipes)
    tested = recipes[~untested]
    real = tested[tested["p_holm"] < alpha]
    smallest, largest = recipes["diff"].min(), recipes["diff"].max()
    where = ", ".join(_name(labels, d) for d in dict.fromkeys(recipes["dataset"]))
    line = (
        f"* **The recipe**: the improved recipe minus the paper's ranges from "
        f"{_points(smallest)} to {_points(largest)} points over {len(recipes)} cells ({where}); "
        f"{len(real)} of the {len(tested)} tested exceed seed noise after Holm's correction."
    )
    if len(real) < len(tested):
        line += f" Within seed noise: {cells(tested[tested['p_holm'] >= alpha])}."
    if untested.any():
        line += f" Not tested yet (fewer than 2 seeds a side): {cells(recipes[untested])}."
    return [line]


def per_class_findings(
    recall: Mapping[str, pd.DataFrame], labels: Mapping[str, str] | None = None, worst: int = 2
) -> list[str]:
    """The classes every model finds hardest, per data set (mean recall over models).

    Args:
        recall: data set -> DataFrame of recall (0..1), classes as rows, models as columns.
        worst: how many classes to name per data set.
    Returns:
        Markdown bullet lines.
    """
    labels = labels or {}
    lines = []
    for dataset, table in recall.items():
        mean = table.mean(axis=1).sort_values()
        named = ", ".join(f"{cls} ({value:.0%})" for cls, value in mean.head(worst).items())
        best = f"{mean.index[-1]} ({mean.iloc[-1]:.0%})"
        lines.append(
            f"* **{_name(labels, dataset)}, per class**: lowest mean recall over the models: "
            f"{named}; highest: {best}."
        )
    return lines


def findings_markdown(
    tests: pd.DataFrame,
    recipes: pd.DataFrame | None = None,
    recall: Mapping[str, pd.DataFrame] | None = None,
    *,
    labels: Mapping[str, str] | None = None,
    recipe_labels: Mapping[str, str] | None = None,
    alpha: float = 0.05,
) -> str:
    """The findings of the tables as Markdown: models, recipe, classes.

    `recipe_labels` name the data sets of the recipe comparison where it ran on
    another split than `tests` (default: `labels`).

    Returns:
        Markdown text; its every number is one of the tables' values, rounded.
    """
    if not len(tests):
        return "No comparisons: the runs hold fewer than two seeds per cell."
    lines = model_findings(tests, labels, alpha=alpha)
    lines += recipe_findings(recipes, recipe_labels or labels, alpha=alpha)
    lines += per_class_findings(recall or {}, labels)
    seeds = sorted({int(n) for n in pd.concat([tests["n_a"], tests["n_b"]]) if not math.isnan(n)})
    note = (
        f"Seeds per cell: {', '.join(map(str, seeds))}. A difference is called larger than "
        f"seed noise when its Holm-adjusted p is below {alpha}; the seed sd is measured on "
        "one fixed test split and leaves out the test-set sampling noise."
    )
    return "\n".join(lines) + "\n\n" + note
