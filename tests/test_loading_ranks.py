"""Per-rank loaders (hybridlib.engine.loading.rank_loader): each rank's slice of every batch.

Their batches must be exactly those the loader gave before the per-rank slicing moved out
of hybridlib.data: digests recorded then, on synthetic images, for every case below; the
core loader itself for one rank; and the slicing rule, written out once more, for more.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from hybridlib.data import load_dataset
from hybridlib.engine.loading import RankLoader, rank_loader
from hybridlib.errors import HybridError

# ---------------------------------------------------------------------------------------
# recorded before the move: RankLoader(...) == the old DeviceLoader(..., shard=...)

CASES = {  # name -> loader options, over 45 synthetic images of 3x8x8
    "train": dict(batch_size=4, shuffle=True, augment=True, crop=6, seed=3),
    "train_flipless": dict(batch_size=5, shuffle=True, augment=True, crop=6, flip=False, seed=1),
    "train_drop": dict(batch_size=4, shuffle=True, augment=True, drop_last=True, seed=0),
    "eval": dict(batch_size=3),
    "eval_crop": dict(batch_size=7, crop=6),
}
# "case/rank/world" -> [len(loader), num_samples, digest of epochs 0-2's batches and indices]
RECORDED = {
    "train/0/1": [12, 45, "95a80acf1b0f49b115929a4a07e4dbc0"],
    "train/0/2": [6, 23, "37954415e48fed48f4d5c25c7e1341e1"],
    "train/1/2": [6, 22, "a6138823ea88ec7fcc6bccde6da03ac8"],
    "train/0/3": [4, 15, "ace06a8af946d1cb6be50c4c3a38fe66"],
    "train/1/3": [4, 15, "a1da413205fa55a899b129dda162c990"],
    "train/2/3": [4, 15, "40130f2580551d567d078416c988f833"],
    "train/0/4": [3, 12, "0054fa053631ff57e08bbecfc553e57b"],
    "train/3/4": [3, 11, "997a30f17e57995cd273fabf33ab02a6"],
    "train/5/8": [2, 5, "9cd936fe22128b5f4a8437f0010bb546"],
    "train_flipless/0/1": [9, 45, "bae135a6ef03b56eb7a129c9c50582f4"],
    "train_flipless/0/2": [5, 23, "a0ab87a12c5c83fb30b374b24f9bb988"],
    "train_flipless/1/2": [5, 22, "380ec6a06c390a24ff1dcd01cc886924"],
    "train_flipless/0/3": [3, 15, "8ddf38bba6d4a7097f60e23d5a764793"],
    "train_flipless/1/3": [3, 15, "bf303fec00824f640d8d8837862e808e"],
    "train_flipless/2/3": [3, 15, "93fa427ceeca17c2dc954bc15bc6704d"],
    "train_flipless/0/4": [3, 12, "8f3b7757ba85e10b5d127bd58ea7fd39"],
    "train_flipless/3/4": [3, 11, "d21d7f7a04f830d39ccee3a0c0b915dd"],
    "train_flipless/5/8": [1, 5, "8ec751ecd261caba2adc60dccf0c7fa8"],
    "train_drop/0/1": [11, 44, "e6b2893744bef7f5e16a5186c60a646e"],
    "train_drop/0/2": [5, 20, "e78f09498d42064a96b899db624ec2e5"],
    "train_drop/1/2": [5, 20, "da7876929c2cfb57a87473e298d8122e"],
    "train_drop/0/3": [3, 12, "59c981d61d74b298428d88c76eefe833"],
    "train_drop/1/3": [3, 12, "a48953a947a8564bcd5a7626c2504782"],
    "train_drop/2/3": [3, 12, "509f88af89134206d7a2ee8367a9066a"],
    "train_drop/0/4": [2, 8, "76497534669ac0c411d08d82c411ca0e"],
    "train_drop/3/4": [2, 8, "1191c7342551fe1c694d1d49b8f7461e"],
    "train_drop/5/8": [1, 4, "f9094efa4aed9a1d1051aa23d6aecd40"],
    "eval/0/1": [15, 45, "9087aa68d139adebe5cc346bedfffaac"],
    "eval/0/2": [8, 23, "9364b141a417c5013a861de3057159d4"],
    "eval/1/2": [8, 22, "ddbb9581003da1326fdb0266339177a6"],
    "eval/0/3": [5, 15, "fd0d21696a40dd578c70ae022f242530"],
    "eval/1/3": [5, 15, "c6f627c7380c40bddfbf7441e5e45f49"],
    "eval/2/3": [5, 15, "0c3869883a24ef8c54d52646c425c9a2"],
    "eval/0/4": [4, 12, "94391c71c664c39a50186db6ce392e24"],
    "eval/3/4": [4, 11, "39391257834fe5f18060badcca03e7af"],
    "eval/5/8": [2, 5, "9dbcefcc5bc09578ff0c0db89495c68d"],
    "eval_crop/0/1": [7, 45, "74cec699aebabc3a8ac6ae57cd44d228"],
    "eval_crop/0/2": [4, 23, "bfdb9de78e88e7321beba7a3998d0872"],
    "eval_crop/1/2": [4, 22, "645c5897587618781b91b479fa35aa82"],
    "eval_crop/0/3": [3, 15, "d63fb238940befcbc43c8449077abdb7"],
    "eval_crop/1/3": [3, 15, "5c3470eb015b81fb10949b6974aaf9bc"],
    "eval_crop/2/3": [3, 15, "0248a3826d77a5506a9c9bdb927c6a69"],
    "eval_crop/0/4": [2, 12, "038592bdd5a2c10b08295a9bb04545c2"],
    "eval_crop/3/4": [2, 11, "6e734b20ce015ca4b98c48933dd46703"],
    "eval_crop/5/8": [1, 5, "0d98fa44b28c298c7fab594e2556d850"],
}


def synthetic_images() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (45, 3, 8, 8), dtype=torch.uint8, generator=generator)
    return images, torch.arange(45) % 5


def digest(loader, epochs=(0, 1, 2)) -> list:
    h = hashlib.sha256()
    for epoch in epochs:
        loader.set_epoch(epoch)
        for x, y in loader:
            h.update(x.contiguous().numpy().tobytes())
            h.update(y.numpy().tobytes())
        h.update(loader.sample_indices(epoch).numpy().tobytes())
    return [len(loader), loader.num_samples, h.hexdigest()[:32]]


@pytest.mark.parametrize("key", sorted(RECORDED))
def test_batches_are_the_recorded_ones(key):
    case, rank, world = key.split("/")
    images, targets = synthetic_images()
    options = dict(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), **CASES[case])
    loader = RankLoader(images, targets, shard=(int(rank), int(world)), **options)
    assert digest(loader) == RECORDED[key]


# ---------------------------------------------------------------------------------------
# against the core loader


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", limit=45)


OPTIONS = [  # (split, batch size, options)
    ("train", 4, dict(augment=True, crop=24, seed=3)),
    ("train", 5, dict(crop=24, flip=False, seed=1)),
    ("train", 4, dict(drop_last=True)),
    ("val", 3, dict(channels_last=True)),
    ("test", 7, dict(crop=24)),
]


def batches(loader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch)
    return list(loader)


@pytest.mark.parametrize("split, batch_size, options", OPTIONS)
def test_one_rank_is_the_core_loader(digits, split, batch_size, options):
    core = digits.loader(split, batch_size, **options)
    alone = rank_loader(digits, split, batch_size, shard=(0, 1), **options)
    assert (len(alone), alone.num_samples) == (len(core), core.num_samples)
    for epoch in (0, 3):
        for (x, y), (xc, yc) in zip(batches(alone, epoch), batches(core, epoch), strict=True):
            assert torch.equal(x, xc) and torch.equal(y, yc) and x.stride() == xc.stride()
        assert torch.equal(alone.sample_indices(epoch), core.sample_indices(epoch))


def slicing_rule(n, batch_size, rank, world, shuffle, drop_last) -> list[tuple[int, int]]:
    """The rule, written out: rank `rank`'s (start, stop) in the epoch's order, per step."""
    size = batch_size * world
    slices = []
    for begin in range(0, n, size):
        count = min(size, n - begin)
        if count < size and (drop_last or (shuffle and count < world)):
            break  # dropped, or too few images for every rank to get one
        share, extra = divmod(count, world)  # the first `extra` ranks take one more
        start = begin + rank * share + min(rank, extra)
        stop = start + share + (1 if rank < extra else 0)
        if stop > start:
            slices.append((start, stop))
    return slices


@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize("split, batch_size, options", OPTIONS)
def test_ranks_follow_the_slicing_rule(digits, split, batch_size, options, world):
    """Each rank's batches are its slices of the whole epoch as one process orders it."""
    # The epoch as one batch, in order (drop_last would drop it all).
    whole = digits.loader(split, 10**6, **{k: v for k, v in options.items() if k != "drop_last"})
    for rank in range(world):
        loader = rank_loader(digits, split, batch_size, shard=(rank, world), **options)
        n = digits.sizes[split]
        rule = slicing_rule(n, batch_size, rank, world, loader.shuffle, loader.drop_last)
        assert len(loader) == len(rule)
        assert loader.num_samples == sum(b - a for a, b in rule)
        for epoch in (0, 2):
            ((x_all, y_all),) = batches(whole, epoch)
            got = batches(loader, epoch)
            for (x, y), (a, b) in zip(got, rule, strict=True):
                assert torch.equal(x, x_all[a:b]) and torch.equal(y, y_all[a:b])
            mine = [i for a, b in rule for i in range(a, b)]
            assert (
                loader.sample_indices(epoch).tolist() == whole.sample_indices(epoch)[mine].tolist()
            )


@pytest.mark.parametrize("world", [2, 3])
def test_rank_slices_make_the_global_batch(digits, world):
    """The ranks' batches of every step, side by side, are one process's global batch."""
    options = dict(augment=True, crop=24, seed=3)
    one = digits.loader("train", 6 * world, **options)
    ranks = [rank_loader(digits, "train", 6, shard=(r, world), **options) for r in range(world)]
    for epoch in (1, 2):
        steps = [batches(loader, epoch) for loader in ranks]
        assert all(len(s) == len(one) for s in steps)
        for step, (x, y) in enumerate(batches(one, epoch)):
            assert torch.equal(torch.cat([s[step][0] for s in steps]), x)
            assert torch.equal(torch.cat([s[step][1] for s in steps]), y)
        # each rank a disjoint part, together every image, reshuffled per epoch
        parts = [loader.sample_indices().tolist() for loader in ranks]
        assert sorted(sum(parts, [])) == list(range(45))
    assert ranks[0].sample_indices(1).tolist() != ranks[0].sample_indices(2).tolist()
    assert ranks[0].global_batch_size == 6 * world


def test_a_last_batch_smaller_than_the_ranks_is_left_out_of_training(digits):
    train = [rank_loader(digits, "train", 4, shard=(r, 4), seed=0) for r in range(4)]  # 2x16+13
    assert [len(t) for t in train] == [3, 3, 3, 3]
    assert sum(t.num_samples for t in train) == 45
    odd = [rank_loader(digits, "train", 1, shard=(r, 4), seed=0) for r in range(4)]  # 11x4+1
    assert [len(t) for t in odd] == [11, 11, 11, 11]
    assert sum(t.num_samples for t in odd) == 44  # 1 image for 4 ranks: left out
    test = [rank_loader(digits, "test", 2, shard=(r, 4)) for r in range(4)]  # evaluation: all
    assert sorted(sum((t.sample_indices(0).tolist() for t in test), [])) == list(range(45))


def test_shards_are_disjoint(digits):
    def indices(rank, world, shuffle):
        loader = rank_loader(digits, "val", 7, shard=(rank, world), shuffle=shuffle)
        return loader.sample_indices(0).tolist(), len(loader)

    parts = [indices(r, 3, False)[0] for r in range(3)]
    assert sorted(sum(parts, [])) == list(range(45))
    shuffled = [indices(r, 3, True) for r in range(3)]
    assert all(len(p) == 15 and n == 3 for p, n in shuffled)
    assert len(set(sum((p for p, _ in shuffled), []))) == 45
    with pytest.raises(HybridError, match=r"shard=\(3, 3\) must be \(rank, world\)"):
        rank_loader(digits, "val", 7, shard=(3, 3))
    with pytest.raises(HybridError, match="batch_size"):
        rank_loader(digits, "val", 0, shard=(0, 2))


@pytest.mark.cuda
def test_cuda_rank_loader_matches_cpu_rank_loader(digits):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    options = dict(augment=True, crop=24, seed=5)
    for rank, world in ((0, 1), (0, 2), (1, 2), (2, 3)):
        cpu = rank_loader(digits, "train", 4, shard=(rank, world), **options)
        gpu = rank_loader(digits, "train", 4, shard=(rank, world), device="cuda", **options)
        for (xc, yc), (xg, yg) in zip(cpu, gpu, strict=True):
            assert xg.is_cuda and torch.equal(yc, yg.cpu())
            torch.testing.assert_close(xc, xg.cpu(), atol=1e-6, rtol=0)
        assert torch.equal(cpu.sample_indices(), gpu.sample_indices().cpu())
