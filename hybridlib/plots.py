"""Every figure of the course: curves, confusion matrices, predictions, reconstructions.

    from hybridlib import plots
    plots.plot_curves(run_dir)                          # loss and accuracy per epoch
    plots.plot_curves({"CNN": run_a, "CNN + LSTM": run_b}, save="figures/curves.png")
    plots.plot_confusion(run_dir)                       # heatmap with class names
    plots.plot_accuracy_table(cells, seeds)             # every seed beside a reference run
    plots.plot_samples(bundle)                          # a row of examples per class
    plots.plot_class_counts({"caltech101": bundle})     # images per class and split
    plots.plot_predictions(images, targets, predictions, classes)
    plots.plot_reconstructions(model, bundle)           # the auto-encoder's outputs

Each function returns a matplotlib `Figure` (a notebook shows it when it is the
cell's value) and saves it when given `save=PATH`. Figures are built without
pyplot's global state, so loops that draw many of them do not leak memory.

Paper A shows training and validation loss curves per model (its Figs 8-11) and
the confusion matrices of the CNN + LSTM + skip model on each data set
(Figs 12-14).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from hybridlib.errors import HybridError

__all__ = [
    "plot_accuracy_table",
    "plot_confusion",
    "plot_curves",
    "plot_class_counts",
    "plot_predictions",
    "plot_reconstructions",
    "plot_samples",
    "save_figure",
]


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Save `fig` to `path` (PNG, PDF or SVG by suffix), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def _finish(fig: Figure, save) -> Figure:
    if save is not None:
        save_figure(fig, save)
    return fig


# ---------------------------------------------------------------------------
# Data: examples and class counts
# ---------------------------------------------------------------------------


def plot_samples(bundle, *, per_class: int = 8, split: str = "train", save=None) -> Figure:
    """The first `per_class` images of every class of a `DataBundle` split, a row per class."""
    images, targets = bundle.tensors(split)  # uint8 (N, 3, H, W), int64 (N,)
    k = bundle.num_classes
    fig = Figure(figsize=(per_class * 0.8 + 1.6, k * 0.8))
    axes = fig.subplots(k, per_class, squeeze=False)
    for c in range(k):
        chosen = (targets == c).nonzero().flatten()[:per_class]
        for j, ax in enumerate(axes[c]):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.spines[:].set_visible(False)
            if j < len(chosen):
                # (3, H, W) -> (H, W, 3), the layout matplotlib draws
                ax.imshow(images[chosen[j]].permute(1, 2, 0).numpy(), interpolation="nearest")
        axes[c, 0].set_ylabel(bundle.classes[c][:14], rotation=0, ha="right", va="center",
                              fontsize=8)  # fmt: skip
    fig.suptitle(f"{bundle.name}: {split} examples", fontsize=10)
    return _finish(fig, save)


def plot_class_counts(bundles: Mapping[str, Any], *, save=None) -> Figure:
    """Images per class in each split (stacked bars), one panel per `DataBundle`."""
    fig = Figure(figsize=(4.2 * len(bundles), 3.6))
    axes = fig.subplots(1, len(bundles), squeeze=False)[0]
    for ax, (name, bundle) in zip(axes, bundles.items(), strict=True):
        splits = ("train", "val", "test")
        counts = pd.DataFrame(
            {split: bundle.class_counts(split) for split in splits},
            index=[c[:14] for c in bundle.classes],
        )
        counts.plot.barh(stacked=True, ax=ax, width=0.8)
        ax.invert_yaxis()
        ax.set(title=f"{name}: {sum(bundle.sizes.values()):,} images", xlabel="images")
        ax.get_legend().remove()
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", ncols=3)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return _finish(fig, save)


# ---------------------------------------------------------------------------
# A table of accuracies as a picture
# ---------------------------------------------------------------------------


def plot_accuracy_table(
    cells: pd.DataFrame,
    seeds: pd.DataFrame,
    *,
    names: Mapping[str, str] | None = None,
    panel_titles: Mapping[str, str] | None = None,
    title: str | None = None,
    save=None,
) -> Figure:
    """A models x data sets table of accuracies as dots: one panel per data set.

    Every seed is a dot, the bar its cell's mean with +- one standard deviation, and a
    red diamond a single reference run (a paper's number) where the cell has one.
    (`hybridlib.study.figures.plot_table` draws a paper's table from run folders.)

    Args:
        cells: one row per (model, dataset) cell, in the order to draw, with columns
            model, dataset, n_seeds, mean, std and paper (test accuracy in %; paper
            NaN where there is none).
        seeds: one row per run, with columns model, dataset and accuracy (%).
        names: {model: its label under its column} (default: the model's name).
        panel_titles: {dataset: its panel's title} (default: the data set's name).
        title: figure title.
        save: path to save the figure to.
    """
    names, panel_titles = names or {}, panel_titles or {}
    datasets = list(dict.fromkeys(cells["dataset"]))
    if not datasets:
        raise ValueError("no cells to draw: `cells` has no rows")
    fig = Figure(figsize=(1.1 * cells["model"].nunique() * len(datasets) + 2.5, 3.8))
    axes = fig.subplots(1, len(datasets), squeeze=False, sharey=True)[0]
    for ax, dataset in zip(axes, datasets, strict=True):
        part = cells[cells["dataset"] == dataset].reset_index(drop=True)
        for i, row in part.iterrows():
            chosen = (seeds["model"] == row["model"]) & (seeds["dataset"] == dataset)
            accuracy = seeds.loc[chosen, "accuracy"].to_numpy()
            ax.bar(i, row["mean"], color="tab:blue", alpha=0.25, width=0.6)
            if row["n_seeds"] > 1:
                ax.errorbar(i, row["mean"], yerr=row["std"], color="tab:blue", capsize=4)
            ax.scatter(np.full(len(accuracy), i), accuracy, color="tab:blue", s=14, zorder=3,
                       label="our seeds" if i == 0 else None)  # fmt: skip
            if not math.isnan(row["paper"]):
                ax.scatter(i, row["paper"], marker="D", color="tab:red", s=30, zorder=4,
                           label="the paper" if i == 0 else None)  # fmt: skip
        labels = [names.get(m, m) for m in part["model"]]
        ax.set_xticks(range(len(part)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(panel_titles.get(dataset, dataset), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set(ylabel="test accuracy (%)", ylim=(0, 100))
    axes[0].legend(fontsize=8, loc="lower left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _finish(fig, save)


# ---------------------------------------------------------------------------
# Loss and accuracy curves (paper A Figs 8-11)
# ---------------------------------------------------------------------------


def _history_frame(source) -> pd.DataFrame:
    """A history DataFrame from a History, a DataFrame, a run dir or a metrics.csv."""
    if hasattr(source, "to_frame"):
        return source.to_frame()
    if isinstance(source, pd.DataFrame):
        return source
    path = Path(source)
    return pd.read_csv(path / "metrics.csv" if path.is_dir() else path)


def _long_curves(frame: pd.DataFrame) -> pd.DataFrame:
    """(epoch, seed?, train/val columns) -> rows of (epoch, seed, split, loss, accuracy)."""
    parts = []
    for split in ("train", "val"):
        part = frame[["epoch", f"{split}_loss", f"{split}_acc"]].copy()
        part.columns = ["epoch", "loss", "accuracy"]
        part["accuracy"] = part["accuracy"] * 100.0
        part["seed"] = frame["seed"] if "seed" in frame else 0
        part["split"] = "training" if split == "train" else "validation"
        parts.append(part.dropna(subset=["loss"]))
    return pd.concat(parts, ignore_index=True)


def plot_curves(histories, *, title: str | None = None, save=None) -> Figure:
    """Training and validation loss and accuracy per epoch, one row per model.

    Args:
        histories: one history (a `History`, a DataFrame, a run directory or a
            metrics.csv) or a mapping {label: history or list of histories}. With
            several histories under one label (seeds), the line is their mean and
            the band their standard deviation.
        title: figure title.
        save: path to save the figure to.
    Returns:
        The Figure: rows = models, columns = (loss, accuracy %), every column on one
        y scale.
    """
    if not isinstance(histories, Mapping):
        histories = {"": histories}
    rows = len(histories)
    fig = Figure(figsize=(10, 3.2 * rows), layout="constrained")
    # one scale per column, so that the models' rows can be compared by eye
    axes = np.atleast_2d(fig.subplots(rows, 2, squeeze=False, sharex=True, sharey="col"))
    palette = {"training": "tab:blue", "validation": "tab:orange"}
    for row, (label, sources) in enumerate(histories.items()):
        if not isinstance(sources, (list, tuple)):
            sources = [sources]
        frames = []
        for seed, source in enumerate(sources):
            frame = _history_frame(source).copy()
            frame["seed"] = seed
            frames.append(frame)
        data = _long_curves(pd.concat(frames, ignore_index=True))
        band = ("sd", 1) if len(sources) > 1 else None
        for col, metric in enumerate(("loss", "accuracy")):
            ax = axes[row, col]
            sns.lineplot(
                data=data,
                x="epoch",
                y=metric,
                hue="split",
                palette=palette,
                marker="o",
                errorbar=band,
                ax=ax,
            )
            ax.set_ylabel("loss" if metric == "loss" else "accuracy (%)")
            ax.set_title(f"{label} {metric}".strip())
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
            if ax.get_legend() is not None:
                ax.get_legend().set_title(None)
    if title:
        fig.suptitle(title)
    return _finish(fig, save)


# ---------------------------------------------------------------------------
# Confusion matrices (paper A Figs 12-14)
# ---------------------------------------------------------------------------


def _confusion_frame(source, classes: Sequence[str] | None) -> pd.DataFrame:
    if isinstance(source, pd.DataFrame):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return pd.read_csv(path / "confusion.csv" if path.is_dir() else path, index_col=0)
    matrix = source.cpu().numpy() if isinstance(source, torch.Tensor) else np.asarray(source)
    names = list(classes) if classes is not None else [str(i) for i in range(len(matrix))]
    return pd.DataFrame(matrix, index=names, columns=names)


def plot_confusion(
    source,
    classes: Sequence[str] | None = None,
    *,
    normalize: bool = False,
    title: str | None = None,
    save=None,
) -> Figure:
    """A confusion-matrix heatmap with class names (rows true, columns predicted).

    Args:
        source: a (K, K) tensor / array, a labelled DataFrame, a run directory or a
            confusion.csv.
        classes: class names (for tensors and arrays).
        normalize: show each row as percentages of its true class (recall on the
            diagonal) instead of counts.
        title: the axes title (default: the accuracy).
        save: path to save the figure to.
    """
    frame = _confusion_frame(source, classes)
    counts = frame.to_numpy()
    total = counts.sum()
    accuracy = np.trace(counts) / total if total else math.nan
    k = len(frame)
    size = max(4.0, 0.45 * k + 2.0)
    fig = Figure(figsize=(size + 1.0, size), layout="constrained")
    ax = fig.subplots()
    if normalize:
        with np.errstate(divide="ignore", invalid="ignore"):
            shown = counts / counts.sum(axis=1, keepdims=True) * 100.0
        fmt = ".0f"
    else:
        shown, fmt = counts, "d"
    sns.heatmap(
        pd.DataFrame(shown, index=frame.index, columns=frame.columns),
        annot=k <= 20,
        fmt=fmt,
        cmap="Blues",
        square=True,
        cbar_kws={"label": "% of true class" if normalize else "images"},
        ax=ax,
    )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or f"accuracy {accuracy:.1%} ({int(total):,} images)")
    ax.tick_params(axis="x", labelrotation=45)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    return _finish(fig, save)


# ---------------------------------------------------------------------------
# Images: predictions and reconstructions
# ---------------------------------------------------------------------------


def _to_display(images: torch.Tensor, mean=None, std=None) -> np.ndarray:
    """(N, 3, H, W) uint8 or normalised float -> (N, H, W, 3) floats in 0..1."""
    images = images.detach().cpu()
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    elif mean is not None and std is not None:
        m = torch.tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
        images = images.float() * s + m
    return images.clamp(0, 1).permute(0, 2, 3, 1).numpy()


def plot_predictions(
    images: torch.Tensor,
    targets,
    predictions,
    classes: Sequence[str],
    *,
    confidence=None,
    n: int = 16,
    columns: int = 8,
    mean=None,
    std=None,
    title: str | None = None,
    save=None,
) -> Figure:
    """A grid of images titled "prediction (true class)", green when right, red when wrong.

    Args:
        images: (N, 3, H, W) uint8 images (from `bundle.tensors(split)`) or normalised
            float images with their `mean` and `std`.
        targets, predictions: N class indices each.
        classes: class names.
        confidence: optional N probabilities of the predicted class.
        n: show the first n images.
        columns: images per row.
        title: figure title.
        save: path to save the figure to.
    """
    n = min(n, len(images))
    pictures = _to_display(images[:n], mean, std)
    targets = [int(t) for t in targets[:n]]
    predictions = [int(p) for p in predictions[:n]]
    columns = max(1, min(columns, n))
    rows = max(1, math.ceil(n / columns))
    fig = Figure(figsize=(1.6 * columns, 1.9 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i >= n:
            continue
        ax.imshow(pictures[i], interpolation="nearest")
        right = predictions[i] == targets[i]
        text = f"{classes[predictions[i]]}"
        if confidence is not None:
            text += f" {float(confidence[i]):.0%}"
        if not right:
            text += f"\n({classes[targets[i]]})"
        ax.set_title(text, fontsize=8, color="tab:green" if right else "tab:red")
    if title:
        fig.suptitle(title)
    return _finish(fig, save)


@torch.no_grad()
def plot_reconstructions(
    model, bundle, *, split: str = "test", n: int = 8, device=None, save=None
) -> Figure:
    """The auto-encoder's reconstructions under the original images (paper A model 4).

    Args:
        model: the "autoencoder" classifier (its output has a `.reconstruction`).
        bundle: the `DataBundle` it was trained on (for the images and normalisation).
        split: which split's first `n` images to show.
        device: where to run the model (default: where its parameters are).
        save: path to save the figure to.
    """
    images, _ = bundle.tensors(split)
    images = images[:n]
    device = device or next(model.parameters()).device
    mean = torch.tensor(bundle.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(bundle.std, device=device).view(1, 3, 1, 1)
    x = (images.to(device).float() / 255.0 - mean) / std  # (N, 3, S, S) normalised
    was_training = model.training
    model.eval()
    output = model(x)
    model.train(was_training)
    if not hasattr(output, "reconstruction"):
        raise HybridError(
            f"model {getattr(model, 'name', '?')!r} has no reconstruction; "
            "plot_reconstructions needs the 'autoencoder' model"
        )
    originals = _to_display(images)
    rebuilt = _to_display(output.reconstruction.float(), bundle.mean, bundle.std)
    count = len(originals)
    fig = Figure(figsize=(1.4 * count, 3.2), layout="constrained")
    axes = fig.subplots(2, count, squeeze=False)
    for i in range(count):
        for row, picture in enumerate((originals[i], rebuilt[i])):
            axes[row, i].imshow(picture, interpolation="nearest")
            axes[row, i].set_axis_off()
    axes[0, 0].set_title("input", fontsize=9, loc="left")
    axes[1, 0].set_title("reconstruction", fontsize=9, loc="left")
    return _finish(fig, save)
