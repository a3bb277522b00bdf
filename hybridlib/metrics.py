"""Evaluation numbers: accuracy, the confusion matrix, per-class precision and recall.

    cm = ConfusionMatrix(num_classes=10, device=device)
    for x, y in loader:
        cm.update(model(x).argmax(1), y)       # stays on the device: no host sync
    matrix = cm.compute()                      # (K, K) int64 on the CPU; rows = true class
    accuracy(matrix), per_class(matrix, classes)

Paper A reports accuracy only, and confusion matrices of the CNN + LSTM + skip
model (its Figs 12-14); precision and recall per class are added because the
Caltech 101 subset is unbalanced (800 airplanes, 107 chandeliers), where
accuracy alone hides the small classes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

__all__ = ["ConfusionMatrix", "accuracy", "confusion_frame", "misclassified", "per_class"]


class ConfusionMatrix:
    """A confusion matrix accumulated on the device: counts[true, predicted]."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu"):
        self.num_classes = num_classes
        self.counts = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch of predicted and true class indices (both (B,) integer tensors)."""
        k = self.num_classes
        # (B,) pairs -> one bin per (true, predicted) cell of the flattened (K*K,) matrix
        cells = targets.to(torch.int64) * k + predictions.to(torch.int64)
        # scatter_add_, not bincount: bincount reads the largest value back to size its
        # output, a host sync per batch on CUDA; this stays on the device
        self.counts.scatter_add_(0, cells, torch.ones_like(cells))

    def compute(self) -> torch.Tensor:
        """The (K, K) int64 matrix on the CPU; rows are true classes, columns predictions."""
        return self.counts.view(self.num_classes, self.num_classes).cpu()

    def reset(self) -> None:
        self.counts.zero_()


def _as_array(matrix) -> np.ndarray:
    if isinstance(matrix, torch.Tensor):
        return matrix.detach().cpu().numpy()
    if isinstance(matrix, pd.DataFrame):
        return matrix.to_numpy()
    return np.asarray(matrix)


def accuracy(matrix) -> float:
    """Fraction of correct predictions (0..1): the trace over the total."""
    m = _as_array(matrix)
    total = m.sum()
    return float(np.trace(m) / total) if total else float("nan")


def per_class(matrix, classes: list[str] | None = None) -> pd.DataFrame:
    """Support, precision, recall and F1 per class (0..1; NaN where undefined).

    Args:
        matrix: (K, K) counts, rows true classes, columns predictions.
        classes: K class names (default: their indices).
    Returns:
        A DataFrame indexed by class name.
    """
    m = _as_array(matrix).astype(np.float64)
    true_positive = np.diag(m)
    support = m.sum(axis=1)  # how many images of each class there are
    predicted = m.sum(axis=0)  # how many images were given each class
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, true_positive / predicted, np.nan)
        recall = np.where(support > 0, true_positive / support, np.nan)
        f1 = 2 * precision * recall / (precision + recall)
    names = list(classes) if classes is not None else [str(i) for i in range(len(m))]
    frame = pd.DataFrame(
        {"support": support.astype(np.int64), "precision": precision, "recall": recall, "f1": f1},
        index=pd.Index(names, name="class"),
    )
    return frame


def confusion_frame(matrix, classes: list[str] | None = None) -> pd.DataFrame:
    """The matrix as a labelled DataFrame (index: true class, columns: predicted class)."""
    m = _as_array(matrix).astype(np.int64)
    names = list(classes) if classes is not None else [str(i) for i in range(len(m))]
    return pd.DataFrame(
        m, index=pd.Index(names, name="true"), columns=pd.Index(names, name="predicted")
    )


def misclassified(predictions: pd.DataFrame, n: int | None = None) -> pd.DataFrame:
    """The wrongly classified test images, most confident mistakes first.

    Args:
        predictions: a frame like a run's predictions.csv (columns index, target,
            prediction, confidence, ...).
        n: keep at most this many rows.
    """
    wrong = predictions[predictions["target"] != predictions["prediction"]]
    wrong = wrong.sort_values("confidence", ascending=False, kind="stable")
    return wrong if n is None else wrong.head(n)
