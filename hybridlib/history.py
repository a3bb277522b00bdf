"""The record of a training run: one row per finished epoch (`History`)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

__all__ = ["History"]


class History:
    """One row per finished epoch: losses, accuracies (0..1), lr, seconds, images/s.

    `val_loss` / `val_acc` are NaN in epochs without validation. `stopped_at` is
    (epoch, step) when a stop request ended training inside an epoch (that partial
    epoch has no row), else None.
    """

    COLUMNS = (
        "epoch",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "lr",
        "time_s",
        "images_per_s",
    )
    TIMING_COLUMNS = ("time_s", "images_per_s")  # differ between otherwise identical runs

    def __init__(self, rows: list[dict[str, Any]] | None = None):
        self.rows: list[dict[str, Any]] = [dict(row) for row in rows or []]
        self.stopped_at: tuple[int, int] | None = None

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append({column: row.get(column, math.nan) for column in self.COLUMNS})

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.rows[index]

    @property
    def last(self) -> dict[str, Any] | None:
        return self.rows[-1] if self.rows else None

    def last_validated(self) -> dict[str, Any] | None:
        """The last row with a validation result."""
        for row in reversed(self.rows):
            if not math.isnan(row["val_acc"]):
                return row
        return None

    def to_frame(self) -> pd.DataFrame:
        """The history as a DataFrame with one row per epoch."""
        return pd.DataFrame(self.rows, columns=list(self.COLUMNS))

    def to_records(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self.rows]

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> History:
        return cls(frame.to_dict("records"))

    def __repr__(self) -> str:
        stopped = f", stopped_at={self.stopped_at}" if self.stopped_at else ""
        return f"History({len(self)} epochs{stopped})"
