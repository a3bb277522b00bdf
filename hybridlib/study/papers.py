"""The two papers' tables: their numbers, models, data sets and the comparisons they make.

    from hybridlib.study.papers import LABELS, PAPER_A, TABLES
    PAPER_A["cnn"]["cifar10"]               # 80.0: paper A's Table I, test accuracy (%)
    TABLES["paper-b"]["pairs"]              # the pairs of models paper B compares
    dataset_label("cifar10", 9_000)         # "CIFAR-10 (subset, 9,000 train)"

Paper A's Table I and paper B's Table 1 report one run per cell and no error bars;
`hybridlib.study.tables` sets our seeds beside these numbers.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from hybridlib.errors import choices_error

__all__ = [
    "LABELS",
    "PAPER_A",
    "PAPER_B",
    "PAPER_TRAIN_SIZES",
    "TABLES",
    "dataset_label",
    "dataset_labels",
    "table_spec",
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


def table_spec(table: str) -> dict[str, Any]:
    """The entry of `TABLES` for "paper-a" or "paper-b"; another name raises `HybridError`."""
    if table not in TABLES:
        raise choices_error("table", table, TABLES)
    return TABLES[table]


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
