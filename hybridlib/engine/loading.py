"""Data for runs: a run config's bundle (with the disk cache) and per-rank loaders.

    from hybridlib.engine.loading import load_bundle, rank_loader
    bundle = load_bundle(config)                   # hybridlib.data.load_dataset + DiskCache
    train = rank_loader(bundle, "train", 16, shard=distributed.shard(), device=device)

`load_bundle` is what the command line's train, evaluate and reproduce, the dashboard
and the bench load; `rank_loader` is `bundle.loader(...)` for one rank of a torchrun
job, where each rank takes its slice of every global batch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from hybridlib.config import RunConfig
from hybridlib.data import DataBundle, DeviceLoader, load_dataset
from hybridlib.engine.cache import disk_cache
from hybridlib.errors import HybridError

__all__ = ["RankLoader", "load_bundle", "rank_loader"]


def load_bundle(config: RunConfig) -> DataBundle:
    """The data set and splits a run config trains on (the same for train, evaluate, widgets).

    Decoded splits are kept in the disk cache (`hybridlib.engine.cache`), so only the
    first run of a data set decodes its images.
    """
    return load_dataset(
        config.dataset,
        config.data_root,
        download=config.download,
        seed=config.split_seed,
        image_size=config.image_size,
        num_classes=config.num_classes,
        folder=config.folder,
        limit=config.limit,
        cache=disk_cache(config.dataset, config.data_root),
    )


def rank_loader(
    bundle: DataBundle, split: str, batch_size: int, *, shard: tuple[int, int] = (0, 1), **options
) -> RankLoader:
    """`bundle.loader(split, batch_size, **options)` for rank `rank` of `world` processes.

    Args:
        bundle: the data set (every rank loads the same one).
        split: "train", "val" or "test".
        batch_size: this rank's share of a global batch of `batch_size * world` images.
        shard: (rank, world), e.g. `hybridlib.engine.distributed.shard()`.
        options: as `DataBundle.loader`'s (device, shuffle, augment, crop, seed, ...).
    Returns:
        A `RankLoader`; with world=1 its batches are exactly `bundle.loader`'s.
    """
    loader = bundle.loader(split, batch_size, **options)
    return RankLoader(**{f.name: getattr(loader, f.name) for f in fields(loader)}, shard=shard)


@dataclass
class RankLoader(DeviceLoader):
    """A `DeviceLoader` that yields one rank's slice of every global batch.

    With `shard=(rank, world)` (training under torchrun), `batch_size` is this rank's
    share of a global batch of `batch_size * world` images. Every rank draws the order,
    flips and crops of the whole split from `(seed, epoch)`, exactly as one process with
    the global batch would, and takes its contiguous slice of every global batch, so the
    ranks together see what that one process sees, step by step. A last, shorter global
    batch is split as evenly as possible. Shuffled loaders (training) give every rank the
    same number of batches: a last global batch with fewer images than ranks is left out
    (at most world - 1 images, different ones every epoch); unshuffled ones (evaluation)
    cover every image exactly once. With `world=1` nothing changes.
    """

    shard: tuple[int, int] = (0, 1)

    def __post_init__(self) -> None:
        super().__post_init__()
        rank, world = self.shard
        if world < 1 or not 0 <= rank < world:
            raise HybridError(f"shard={self.shard!r} must be (rank, world) with 0 <= rank < world")

    @property
    def global_batch_size(self) -> int:
        """Images per step over all ranks: `batch_size * world`."""
        return self.batch_size * self.shard[1]

    def _slices(self) -> list[tuple[int, int]]:
        """This rank's (start, stop) positions in the epoch's order, one pair per batch."""
        n, (rank, world) = len(self.images), self.shard
        size = self.global_batch_size
        slices = []
        for begin in range(0, n, size):
            count = min(size, n - begin)
            if count < size and (self.drop_last or (self.shuffle and count < world)):
                break
            share, extra = divmod(count, world)  # the first `extra` ranks take one more
            start = begin + rank * share + min(rank, extra)
            stop = start + share + (1 if rank < extra else 0)
            if stop > start:
                slices.append((start, stop))
        return slices

    def _batches(self) -> list[tuple[int, int]]:
        """This rank's batches as (start, stop) positions in its own part of the order."""
        batches, stop = [], 0
        for first, last in self._slices():
            batches.append((stop, stop + last - first))
            stop += last - first
        return batches

    def _plan(self, epoch: int):
        """The whole split's plan (as one process draws it), cut down to this rank's part."""
        plan = super()._plan(epoch)
        if self.shard[1] == 1:  # one rank: the whole plan, as DeviceLoader's
            return plan
        slices = self._slices()
        mine = torch.cat([torch.arange(a, b) for a, b in slices]) if slices else torch.arange(0)
        mine = mine.to(self.device)
        return tuple(None if t is None else t[mine] for t in plan)
