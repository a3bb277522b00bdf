"""The tables as markdown: what `results --out` writes into `*_table.md`, `*_tests.md` and
`*_recipes.md`, with a note on every column.

    from hybridlib.study.markdown import tests_markdown, to_markdown
    print(to_markdown(wide_table(long)))          # a GitHub-flavoured markdown table
    print(tests_markdown(compare_pairs(runs)))    # the pair tests, readable, with notes
"""

from __future__ import annotations

import math

import pandas as pd

from hybridlib.study.papers import LABELS, dataset_labels
from hybridlib.study.runs import complete_runs

__all__ = [
    "RANGE_NOTE",
    "TESTS_NOTE",
    "comparison_markdown",
    "recipes_markdown",
    "tests_markdown",
    "to_markdown",
]

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


def _comparisons(n: int) -> str:
    return f"{n} comparison" + ("" if n == 1 else "s")


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


def _interval_text(low: float, high: float) -> str:
    return "-" if math.isnan(low) else f"[{low:+.2f}, {high:+.2f}]"


def _pair_text(a: float, b: float, fmt: str = ".2f") -> str:
    return ", ".join("-" if math.isnan(v) else format(v, fmt) for v in (a, b))


def _p_text(p: float) -> str:
    """A p-value with three significant digits: 0.0503 must not print as 0.05, nor 4e-4 as
    0.00."""
    return "-" if math.isnan(p) else f"{p:.3g}"


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
        family = "; ".join(f"{r}: {_comparisons(n)}" for r, n in sizes.items())
    else:
        tested = int(tests["p_value"].notna().sum())
        family = _comparisons(tested)
        if tested < len(tests):
            family += f" with a p; {len(tests) - tested} more once each model has 2 seeds"
    return to_markdown(shown, index=False) + TESTS_NOTE.format(family=family)


def recipes_markdown(compared: pd.DataFrame, runs) -> str:
    """`compare_recipes` as markdown: every cell, then the best result per data set.

    Args:
        compared: a `compare_recipes` frame.
        runs: the runs it was made from (for the data sets' labels).
    """
    names = dataset_labels(complete_runs(runs))
    base, other = _precisions(compared, "precision_b"), _precisions(compared, "precision_a")
    per_cell = "," in base + other  # a side in several precisions: one column, cell by cell
    frame = _recipes_frame(compared, names, *(("", "") if per_cell else (base, other)))
    if per_cell:
        pairs = zip(compared["precision_b"], compared["precision_a"], strict=True)
        frame.insert(4, "precision (paper's, improved)", [f"{b}, {a}" for b, a in pairs])
    tested = int(compared["p_value"].notna().sum())
    family = (
        f"all {tested} cells of this table"
        if tested == len(compared)
        else f"the {tested} cells of this table with 2 seeds or more a side"
    )
    lines = [
        to_markdown(frame, index=False),
        "\nAccuracy: mean test accuracy (%) over n seeds; diff = improved - paper's recipe, "
        "with its 95 % confidence interval (Welch, Welch-Satterthwaite df); p: Welch's "
        f"t-test (two-sided); Holm p: adjusted over the family of {family}, "
        "and the verdict uses it; MDE: the smallest difference (points) "
        "detected with 80 % power at 0.05 two-sided from the pooled seed sd (noncentral t). "
        "Time: mean training seconds per run.\n",
    ]
    if per_cell:
        mixed = compared[compared["precision_a"] != compared["precision_b"]]
        lines.append(
            f"\nIn {len(mixed)} of the {len(compared)} cells the two recipes trained in "
            "different precisions (the precision column): each of those differences "
            "includes whatever the precision changes, which `results --compare precision` "
            "measures on a cell trained both ways, and their training times compare "
            "precisions (and machines) as much as recipes.\n"
        )
    elif base != other:
        lines.append(
            f"\nThe two recipes trained in different precisions (paper's recipe {base or '?'}, "
            f"improved {other or '?'}): each difference includes whatever the precision "
            "changes, which `results --compare precision` measures on a cell trained both "
            "ways, and the training times compare precisions (and machines) as much as "
            "recipes.\n"
        )
    lines.append("\n## Best per data set\n")
    for dataset in dict.fromkeys(compared["dataset"]):
        lines.append(_best_line(compared[compared["dataset"] == dataset], names[dataset]))
    return "".join(lines)


def _recipes_frame(
    compared: pd.DataFrame, names: dict[str, str], base: str, other: str
) -> pd.DataFrame:
    """The cells of `compare_recipes` as text columns, the paper's recipe first; each
    recipe's column names its precision (`base`, `other`) where the runs record one."""
    return pd.DataFrame(
        {
            "model": compared["model"].map(lambda m: LABELS.get(m, m)),
            "data set": compared["dataset"].map(names),
            f"paper's recipe (ours{', ' + base if base else ''})": [
                f"{m:.1f} (n={n})" for m, n in zip(compared["mean_b"], compared["n_b"], strict=True)
            ],
            "improved" + (f" ({other})" if other else ""): [
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


def _precisions(compared: pd.DataFrame, column: str) -> str:
    """The precisions in one column of a `compare_recipes` frame, e.g. "bf16", or ""."""
    if column not in compared:  # a frame written before precisions were recorded
        return ""
    return ", ".join(sorted({str(p) for p in compared[column].dropna()}))


def comparison_markdown(compared: pd.DataFrame, runs, base: str, other: str) -> str:
    """A `compare_recipes(..., column=...)` frame of two groups (e.g. fp32 and bf16 runs)
    as markdown: each cell's means, the difference other - base with its interval, the
    Welch and Holm p, the verdict, the MDE and the training time per run."""
    names = dataset_labels(complete_runs(runs))
    frame = pd.DataFrame(
        {
            "model": compared["model"].map(lambda m: LABELS.get(m, m)),
            "data set": compared["dataset"].map(names),
            base: [
                f"{m:.1f} (n={n})" for m, n in zip(compared["mean_b"], compared["n_b"], strict=True)
            ],  # fmt: skip
            other: [
                f"{m:.1f} (n={n})" for m, n in zip(compared["mean_a"], compared["n_a"], strict=True)
            ],  # fmt: skip
            "diff": compared["diff"].map("{:+.2f}".format),
            "95 % CI": [
                _interval_text(lo, hi)
                for lo, hi in zip(compared["ci_low"], compared["ci_high"], strict=True)
            ],  # fmt: skip
            "p": compared["p_value"].map(_p_text),
            "Holm p": compared["p_holm"].map(_p_text),
            "verdict": compared["verdict"],
            "MDE": compared["mde"].map(lambda v: "-" if math.isnan(v) else f"{v:.2f}"),
            f"s / run ({base}, {other})": [
                f"{a:.0f}, {b:.0f}"
                for a, b in zip(compared["time_base_s"], compared["time_other_s"], strict=True)
            ],
        }
    )
    return to_markdown(frame, index=False) + (
        f"\nAccuracy: mean test accuracy (%) over n seeds; diff = {other} - {base}, with its "
        "95 % confidence interval (Welch, Welch-Satterthwaite df); p: Welch's t-test "
        f"(two-sided); Holm p: over the {len(compared)} cell(s) of this table; the verdict "
        "uses it; MDE: the smallest difference (points) detected with 80 % power at 0.05 "
        "two-sided from the pooled seed sd. Time: mean training seconds per run.\n"
    )


def _best_line(part: pd.DataFrame, name: str) -> str:
    """One data set's bullet: the best mean of each recipe, how often the improved one is
    higher, and the training times."""
    best_base = part.loc[part["mean_b"].idxmax()]
    best_other = part.loc[part["mean_a"].idxmax()]
    beaten = int((part["mean_a"] > part["mean_b"]).sum())
    # over the same cells for both recipes, so that the times compare
    time_base, time_other = part["time_base_s"].mean(), part["time_other_s"].mean()
    return (
        f"- {name}: best with the paper's recipe "
        f"{best_base['mean_b']:.1f} % ({LABELS.get(best_base['model'], best_base['model'])}), "
        f"best improved {best_other['mean_a']:.1f} % "
        f"({LABELS.get(best_other['model'], best_other['model'])}); the improved mean is "
        f"higher in {beaten} of {len(part)} cells; mean training time per run "
        f"{time_base:.0f} s (paper's) and {time_other:.0f} s (improved), "
        f"{time_other / time_base:.2f}x.\n"
    )
