"""Progress display: a live bar where someone watches, one line per stage in a log.

    from hybridlib.progress import bar
    for item in bar(items, desc="decoding cifar10/train", unit="image"):
        ...

In a terminal `bar` is a tqdm text bar, in a notebook tqdm's widget. Where stderr is
neither (CI logs, `2> log.txt`, a pipe), a redrawn bar would write hundreds of
carriage-return updates into one line, so each stage prints one line when it ends
instead: `decoding cifar10/train: 45,000 images ... done in 12.3 s`. `TQDM_DISABLE=1`
or `progress=False` turns both off.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator

from tqdm.auto import tqdm

__all__ = ["StageLine", "bar", "enabled", "interactive"]


def interactive() -> bool:
    """stderr is a terminal, or this runs in a notebook (tqdm.auto chose its widget)."""
    in_notebook = any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__)
    return in_notebook or sys.stderr.isatty()


def enabled(progress: bool = True) -> bool:
    """Progress on, unless switched off here or with tqdm's TQDM_DISABLE=1."""
    return progress and os.environ.get("TQDM_DISABLE", "").lower() not in ("1", "true", "yes")


def bar(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str,
    unit: str,
    progress: bool = True,
    leave: bool = False,
):
    """A tqdm bar, or a `StageLine` where stderr is neither a terminal nor a notebook.

    Args:
        iterable: what to iterate over (or None, and `update(n)` by hand).
        total: the number of items (default: `len(iterable)`).
        desc: the stage, e.g. "epoch 3/30".
        unit: one item, singular: "image", "step", "batch".
        progress: False shows nothing.
        leave: keep a terminal bar on screen when it ends.
    Returns:
        An object with tqdm's `update`, `set_postfix`, `close`, `n` and iteration.
    """
    if enabled(progress) and not interactive():
        return StageLine(iterable, total=total, desc=desc, unit=unit)
    return tqdm(
        iterable, total=total, desc=desc, unit=unit, leave=leave, disable=not enabled(progress)
    )


class StageLine:
    """tqdm's interface, printing one line to stderr when the stage ends (not on errors)."""

    def __init__(self, iterable=None, *, total: int | None = None, desc: str, unit: str):
        self.iterable, self.desc, self.unit = iterable, desc, unit
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.n, self.closed = total, 0, False
        self._start = time.perf_counter()

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.n += 1
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, *args, **kwargs) -> None:
        pass  # the stage's numbers are printed by whoever ran it (e.g. the epoch line)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        count = self.total if self.total is not None else self.n
        plural = "es" if self.unit.endswith(("s", "x", "ch", "sh")) else "s"
        units = self.unit if count == 1 else self.unit + plural
        seconds = time.perf_counter() - self._start
        print(f"{self.desc}: {count:,} {units} ... done in {seconds:.1f} s", file=sys.stderr)

    def __enter__(self) -> StageLine:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
