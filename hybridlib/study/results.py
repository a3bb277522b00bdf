"""The `results` command: run directories -> the papers' tables, the papers' numbers beside ours.

    python -m hybridlib results RUNS_OR_GRID_DIRS... [--table paper-a|paper-b|runs] [--markdown]
    python -m hybridlib results SHARD_DIR1 SHARD_DIR2 --table paper-a --out MERGED

    from hybridlib.study import results               # the study's names in one place
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

Where each part lives (this module gathers their names):

- `hybridlib.study.papers`: the papers' numbers, models, data sets and compared pairs;
- `hybridlib.study.runs`: finding, reading and copying run folders;
- `hybridlib.study.stats`: Welch's interval, Holm, the pooled sd, the MDE, the binomial
  SE, the one-run range;
- `hybridlib.study.tables`: `paper_table`, `wide_table`, `compare_pairs`, `compare_recipes`;
- `hybridlib.study.markdown`: the tables as markdown;
- `hybridlib.study.report`: `write_tables` and the provenance stamp;
- `hybridlib.study.figures`: the figures of a grid (`plot_table`, `write_figures`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hybridlib.errors import HybridError
from hybridlib.study.figures import write_figures
from hybridlib.study.markdown import to_markdown
from hybridlib.study.papers import (
    LABELS,
    PAPER_A,
    PAPER_B,
    PAPER_TRAIN_SIZES,
    TABLES,
    dataset_label,
    dataset_labels,
)
from hybridlib.study.report import provenance, write_comparison, write_tables
from hybridlib.study.runs import (
    RUN_COLUMNS,
    complete_runs,
    copy_runs,
    find_run_dirs,
    one_split,
    read_runs,
)
from hybridlib.study.stats import (
    binomial_se,
    holm,
    minimum_detectable_effect,
    one_run_range,
    pooled_sd,
    welch_interval,
)
from hybridlib.study.tables import compare_pairs, compare_recipes, paper_table, wide_table

__all__ = [
    "LABELS",
    "PAPER_A",
    "PAPER_B",
    "PAPER_TRAIN_SIZES",
    "RUN_COLUMNS",
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
    "one_split",
    "paper_table",
    "pooled_sd",
    "provenance",
    "read_runs",
    "to_markdown",
    "welch_interval",
    "wide_table",
    "write_tables",
]


def cli_results(args) -> int:
    """`python -m hybridlib results RUN_DIR... [--table ...] [--markdown]`

    Prints the runs (`--table runs`) or a paper's table and its pair tests; with `--out`
    also writes the tables (`write_tables`), with `--copy-runs` first copies the runs
    beside them, and with `--figures` draws the figures (`write_figures`).
    """
    runs = read_runs(args.run_dirs)
    if runs.empty:
        raise HybridError(
            f"no run directories found in {' '.join(args.run_dirs)}; pass folders "
            "written by `train` or `reproduce`"
        )
    if args.table == "runs" and getattr(args, "out", None):
        raise HybridError("--out writes a paper's tables: add --table paper-a or --table paper-b")
    if args.table == "runs":
        _print_runs(runs, args.markdown)
        return 0
    if getattr(args, "compare", None):
        if not getattr(args, "out", None) or args.table == "runs":
            raise HybridError("--compare writes a comparison: add --table paper-a and --out DIR")
        paths = write_comparison(runs, args.out, args.table, args.compare)
        print(paths["md"].read_text(), end="")
        print(f"wrote {paths['md']} and {paths['csv']} from {len(complete_runs(runs))} runs")
        return 0
    if getattr(args, "copy_runs", False) and not getattr(args, "out", None):
        raise HybridError("--copy-runs copies the runs beside the tables: add --out DIR")
    runs = _write_outputs(runs, args)
    _print_table(runs, args.table, args.markdown)
    return 0


def _print_runs(runs: pd.DataFrame, markdown: bool) -> None:
    """`--table runs`: one line per run, accuracies in %."""
    frame = runs.drop(columns=["run_dir", "torch", "git_commit"]).copy()
    for column in ("train_acc", "val_acc", "test_acc"):
        frame[column] = frame[column].astype(float) * 100.0
    frame["lr"] = frame["lr"].map(lambda lr: "-" if pd.isna(lr) else f"{lr:g}")  # 1e-4: 0.0001
    _print(frame, markdown, index=False)


def _write_outputs(runs: pd.DataFrame, args) -> pd.DataFrame:
    """`--copy-runs`, `--out` and `--figures`, in that order. Returns the runs the
    tables are made from (the copies, with `--copy-runs`)."""
    if getattr(args, "copy_runs", False):
        runs = read_runs(copy_runs(runs, Path(args.out) / "runs"))
        print(f"copied {len(runs)} finished runs into {Path(args.out) / 'runs'}")
    if getattr(args, "out", None):
        paths = write_tables(runs, args.out, args.table)
        print(f"wrote {paths['table_md']} and {paths['tests_md']} from {len(runs)} runs")
    if getattr(args, "figures", None):
        written = write_figures(runs, args.table, figures_dir=args.figures)
        print(f"wrote {len(written)} figures into {args.figures}")
    return runs


def _print_table(runs: pd.DataFrame, table: str, markdown: bool) -> None:
    """The paper's table laid out as in the paper, then the tests of its pairs."""
    long = paper_table(runs, table)
    print(TABLES[table]["title"])
    _print(wide_table(long), markdown)
    tests = compare_pairs(runs, table)
    if not tests.empty:
        print(
            "\nWelch's t-test between the models the paper compares (diff = a - b, points; "
            "Holm p over these comparisons):"
        )
        _print(tests, markdown, index=False)


def _print(frame: pd.DataFrame, markdown: bool, index: bool = True) -> None:
    if markdown:
        print(to_markdown(frame, index=index), end="")
    else:
        options = ("display.width", 200, "display.max_columns", None)
        with pd.option_context(*options, "display.float_format", "{:.2f}".format):
            print(frame.to_string(index=index))
