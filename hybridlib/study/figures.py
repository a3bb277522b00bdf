"""The study's figures from run folders: a paper's table as dots, curves and confusion matrices.

    from hybridlib.study.figures import plot_table, write_figures
    plot_table(runs, "paper-a")                      # every seed beside the paper's number
    write_figures("runs/paper-a", "paper-a")         # every figure of a grid, into figures/

    python -m hybridlib results RUNS --table paper-a --figures figures/results/paper-a

The drawing is `hybridlib.plots`'; this module picks what to draw from a grid's
runs: the paper's table (`table.png`), the loss / accuracy curves per data set
over the seeds (paper A's Figs 8-11, `curves-<dataset>.png`) and the confusion
matrix of each cell's first seed (its Figs 12-14, `confusion-<dataset>-<model>.png`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from hybridlib import plots
from hybridlib.errors import HybridError
from hybridlib.study.papers import LABELS, TABLES, dataset_labels
from hybridlib.study.report import provenance
from hybridlib.study.runs import complete_runs
from hybridlib.study.tables import paper_table

__all__ = ["plot_table", "write_figures"]


def plot_table(runs, table: str = "paper-a", *, title: str | None = None, save=None) -> Figure:
    """A paper's table as dots: one panel per data set, one column per model.

    Every seed is a dot, the bar its mean with +- one standard deviation, and a red
    diamond the paper's single run (`hybridlib.plots.plot_accuracy_table`).

    Args:
        runs: a `read_runs` frame, or run / grid directories (one recipe).
        table: "paper-a" or "paper-b".
        title: figure title (default: the table's, and the recipe unless the paper's).
        save: path to save the figure to.
    """
    runs = complete_runs(runs)
    long = paper_table(runs, table).reset_index()
    long = long[long["n_seeds"] > 0]
    if long.empty:
        raise ValueError("no finished runs to draw")
    seeds = pd.DataFrame(
        {
            "model": runs["model"],
            "dataset": runs["dataset"],
            "accuracy": runs["test_acc"].astype(float) * 100,
        }
    )
    recipes = set(runs["recipe"].fillna("paper"))
    recipe = f", {recipes.pop()} recipe" if recipes != {"paper"} and len(recipes) == 1 else ""
    return plots.plot_accuracy_table(
        long,
        seeds,
        names=LABELS,
        panel_titles=dataset_labels(long),
        title=title or TABLES[table]["title"] + recipe,
        save=save,
    )


def write_figures(
    runs, table: str, *, figures_dir: str | Path | None = None, command: str | None = None
) -> list[Path]:
    """The table as dots, curves per data set and a confusion matrix per cell (first seed).

    Args:
        runs: a grid directory, run directories or a `read_runs` frame (one recipe).
        table: "paper-a" or "paper-b" (the order of the models).
        figures_dir: where the PNGs go (default: `<grid directory>/figures`).
        command: the command to name in `provenance.json` (default: this process's).
    Returns:
        The PNG files written; `provenance.json` beside them says what made them.
    """
    if figures_dir is None:
        if isinstance(runs, pd.DataFrame):
            raise HybridError("write_figures needs figures_dir when given a runs table")
        figures_dir = Path(runs) / "figures"
    runs = complete_runs(runs)
    names = dataset_labels(runs)
    figures = Path(figures_dir)
    written: list[Path] = []
    models = [m for m in TABLES[table]["models"] if m in set(runs["model"])]
    models += [m for m in dict.fromkeys(runs["model"]) if m not in models]
    if len(runs):
        plot_table(runs, table, save=figures / "table.png")
        written.append(figures / "table.png")
    for dataset in dict.fromkeys(runs["dataset"]):
        cell_runs = runs[runs["dataset"] == dataset]
        written += _dataset_figures(cell_runs, dataset, names[dataset], models, figures)
    if written:  # what made these pictures: command, hardware, versions, seeds, files
        stamp = {**provenance(runs, command), "figures": sorted(p.name for p in written)}
        (figures / "provenance.json").write_text(json.dumps(stamp, indent=2) + "\n")
    return written


def _dataset_figures(
    runs: pd.DataFrame, dataset: str, where: str, models: list[str], figures: Path
) -> list[Path]:
    """One data set's figures: a confusion matrix per model (its first seed), then the
    curves of every model over its seeds.

    Args:
        runs: the finished runs on `dataset`.
        where: the data set's label in titles (`dataset_label`).
        models: the models in the order to draw them.
        figures: the folder to write into.
    """
    written = []
    curves = {}
    for model in models:
        dirs = runs[runs["model"] == model].sort_values("seed")["run_dir"].tolist()
        if not dirs:
            continue
        curves[LABELS.get(model, model)] = dirs
        path = figures / f"confusion-{dataset}-{model}.png"
        seed = int(runs.loc[runs["run_dir"] == dirs[0], "seed"].iloc[0])
        title = f"{LABELS.get(model, model)} on {where} (seed {seed})"
        plots.plot_confusion(dirs[0], title=title, save=path)
        written.append(path)
    if curves:
        path = figures / f"curves-{dataset}.png"
        n = max(len(d) for d in curves.values())
        suffix = f", mean ± sd over {n} seeds" if n > 1 else ""
        recipes = set(runs["recipe"].fillna("paper"))
        if recipes != {"paper"}:
            suffix += f" ({', '.join(sorted(recipes))} recipe)"
        plots.plot_curves(curves, title=f"{where}{suffix}", save=path)
        written.append(path)
    return written
