"""Data sets, splits, the two loading paths, the cache hook and every user error.

Format-exact fake layouts come from tests/fixtures/layouts.py; tests marked
`realdata` read the real subsets through the `shared_data` fixture. The disk cache
and the per-rank loader are tested in tests/test_loading_*.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import layouts
from PIL import Image
from torchvision.datasets import CIFAR10

from hybridlib import data, datasets
from hybridlib.data import DATASET_NAMES, DeviceLoader, load_dataset
from hybridlib.engine.cache import disk_cache
from hybridlib.errors import HybridError
from hybridlib.tools import cli


def reference_batch(bundle, split, indices, **kwargs):
    """(x, y) for `indices` through the torchvision path."""
    ds = bundle.dataset(split, **kwargs)
    items = [ds[i] for i in indices]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


def fast_batch(bundle, split, **kwargs):
    """The whole split through the fast path, in order, as one batch."""
    loader = bundle.loader(split, 10**6, shuffle=False, augment=False, **kwargs)
    (x, y), *rest = list(loader)
    assert not rest
    return x, y


# ---------------------------------------------------------------------------------------
# digits: the embedded data set


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits_splits_are_stratified_and_seeded(digits):
    assert digits.sizes == {"train": 1293, "val": 144, "test": 360}
    assert digits.classes == [str(i) for i in range(10)]
    assert digits.num_classes == 10 and digits.image_size == 32
    totals = sum(np.array(digits.class_counts(split)) for split in ("train", "val", "test"))
    for split, fraction in (("test", 0.2), ("val", 0.08)):
        counts = np.array(digits.class_counts(split))
        assert np.all(np.abs(counts - fraction * totals) <= 2), (split, counts)
    again = load_dataset("digits")
    other = load_dataset("digits", seed=1)
    assert again._parts["test"].keys == digits._parts["test"].keys
    assert other._parts["test"].keys != digits._parts["test"].keys
    assert not set(digits._parts["train"].keys) & set(digits._parts["test"].keys)


def test_digits_tensors_and_statistics(digits):
    images, targets = digits.tensors("train")
    assert images.shape == (1293, 3, 32, 32) and images.dtype == torch.uint8
    assert targets.dtype == torch.int64 and targets.shape == (1293,)
    # 8x8 gray digits become 3 equal channels.
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])
    mean = images.double().mean(dim=(0, 2, 3)) / 255
    assert np.allclose(digits.mean, mean.numpy()) and len(digits.std) == 3


@pytest.mark.parametrize("split", ["train", "val", "test"])
@pytest.mark.parametrize("crop", [None, 24])
def test_fast_path_equals_torchvision_path(digits, split, crop):
    x, y = fast_batch(digits, split, crop=crop)
    indices = [0, 5, len(y) // 2, len(y) - 1]
    ref_x, ref_y = reference_batch(digits, split, indices, augment=False, crop=crop)
    assert x.dtype == torch.float32 and x.shape[1:] == (3, crop or 32, crop or 32)
    torch.testing.assert_close(x[indices], ref_x, atol=1e-6, rtol=0)
    assert torch.equal(y[indices], ref_y)


def test_plain_dataloader_runs(digits):
    loader = torch.utils.data.DataLoader(digits.dataset("train"), batch_size=8, shuffle=True)
    x, y = next(iter(loader))
    assert x.shape == (8, 3, 32, 32) and y.dtype == torch.int64
    assert len(digits.dataset("train").targets) == 1293


def test_loader_defaults_and_lengths(digits):
    train = digits.loader("train", 100)
    assert train.shuffle and train.augment and train.batch_size == 100
    assert len(train) == 13 and train.num_samples == 1293
    assert len(digits.loader("train", 100, drop_last=True)) == 12
    assert sum(len(y) for _, y in digits.loader("train", 100, drop_last=True)) == 1200
    test = digits.loader("test", 64)
    assert not test.shuffle and not test.augment
    x, y = next(iter(digits.loader("test", 64, channels_last=True)))
    assert x.is_contiguous(memory_format=torch.channels_last) and y.shape == (64,)


def test_epochs_depend_only_on_seed_and_epoch(digits):
    def epoch_batches(loader, epoch):
        loader.set_epoch(epoch)
        return [(x.clone(), y.clone()) for x, y in loader]

    a = digits.loader("train", 256, seed=3, crop=24)
    b = digits.loader("train", 256, seed=3, crop=24)
    first = epoch_batches(a, 4)
    for (xa, ya), (xb, yb) in zip(first, epoch_batches(b, 4), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(first[0][1], epoch_batches(a, 5)[0][1])
    assert not torch.equal(first[0][1], epoch_batches(digits.loader("train", 256, seed=4), 4)[0][1])
    # Without set_epoch, each pass moves on to the next epoch: a resumed loader that
    # calls set_epoch(e) sees what an uninterrupted one saw in epoch e.
    c = digits.loader("train", 256, seed=3, crop=24)
    list(c)
    second = [y for _, y in c]
    a.set_epoch(1)
    assert all(torch.equal(y1, y2) for y1, y2 in zip(second, [y for _, y in a], strict=True))


def test_flips_are_per_image_and_both_directions(digits):
    plain, _ = fast_batch(digits, "train")
    loader = digits.loader("train", 10**6, shuffle=False, augment=True, seed=0)
    ((x, _),) = list(loader)
    seen = set()
    for i in range(200):
        options = {
            "none": plain[i],
            "h": plain[i].flip(2),
            "v": plain[i].flip(1),
            "hv": plain[i].flip(1).flip(2),
        }
        matches = [k for k, v in options.items() if torch.equal(x[i], v)]
        assert matches, i
        seen.update(matches)
    assert {"h", "v", "hv"} <= seen


def test_random_crops_are_windows_of_the_image(digits):
    plain, _ = fast_batch(digits, "val")
    loader = digits.loader("val", 10**6, shuffle=False, augment=True, crop=24, seed=1)
    ((x, _),) = list(loader)
    assert x.shape == (144, 3, 24, 24)
    offsets = set()
    for i in range(20):
        found = [
            (top, left)
            for top in range(9)
            for left in range(9)
            for image in (plain[i], plain[i].flip(2), plain[i].flip(1), plain[i].flip(1).flip(2))
            if torch.equal(x[i], image[:, top : top + 24, left : left + 24])
        ]
        assert found, i
        offsets.update(found)
    assert len(offsets) > 3


def test_limit_keeps_a_stratified_subsample():
    bundle = load_dataset("digits", limit=50)
    assert bundle.sizes == {"train": 50, "val": 50, "test": 50}
    assert all(c in (4, 5, 6) for c in bundle.class_counts("train"))
    tiny = load_dataset("digits", limit=3)
    assert tiny.sizes == {"train": 3, "val": 3, "test": 3}


def test_num_classes_subset_and_image_size():
    bundle = load_dataset("digits", num_classes=3, image_size=16)
    assert bundle.classes == ["0", "1", "2"]
    x, y = next(iter(bundle.loader("test", 500)))
    assert x.shape[1:] == (3, 16, 16) and set(y.tolist()) == {0, 1, 2}


# ---------------------------------------------------------------------------------------
# errors


def test_unknown_name_lists_the_choices():
    with pytest.raises(HybridError) as error:
        load_dataset("cifar100")
    for name in DATASET_NAMES:
        assert name in str(error.value)


@pytest.mark.parametrize(
    "name, looked",
    [
        ("cifar10", "cifar-10-batches-py"),
        ("caltech101", "101_ObjectCategories"),
        ("tiny-imagenet", "wnids.txt"),
    ],
)
def test_missing_data_says_where_it_looked_and_how_to_download(tmp_path, name, looked):
    with pytest.raises(HybridError) as error:
        load_dataset(name, tmp_path / "nowhere")
    message = str(error.value)
    assert str(tmp_path / "nowhere") in message and looked in message
    assert "download=True" in message and "--download" in message
    assert not (tmp_path / "nowhere").exists()  # nothing was created while looking


def test_bad_arguments(digits):
    with pytest.raises(HybridError, match="num_classes=11"):
        load_dataset("digits", num_classes=11)
    with pytest.raises(HybridError, match="limit"):
        load_dataset("digits", limit=0)
    with pytest.raises(HybridError, match="unknown split 'valid'"):
        digits.tensors("valid")
    with pytest.raises(HybridError, match="crop=40"):
        digits.loader("train", 8, crop=40)
    with pytest.raises(HybridError, match="batch_size"):
        digits.loader("train", 0)
    with pytest.raises(HybridError, match="folder=PATH"):
        load_dataset("folder")
    with pytest.raises(HybridError, match="cache=True must be None .* read\\(\\) and write\\(\\)"):
        load_dataset("digits", cache=True)


def test_class_too_small_for_a_test_split(tmp_path):
    layouts.write_image_folder(tmp_path / "pets", {"cat": 6, "dog": 6, "emu": 1})
    with pytest.raises(HybridError, match="no test images.*'emu' \\(1\\)"):
        load_dataset("folder", tmp_path, folder="pets")


def test_unreadable_image_names_the_file(tmp_path):
    layouts.write_image_folder(tmp_path / "pets", {"cat": 6, "dog": 6})
    broken = tmp_path / "pets" / "dog" / "3.png"
    broken.write_bytes(broken.read_bytes()[:100])  # truncated
    bundle = load_dataset("folder", folder=tmp_path / "pets")
    split = next(
        s
        for s in ("train", "val", "test")
        if any("3.png" in k and "dog" in k for k in bundle._parts[s].keys)
    )
    with pytest.raises(HybridError) as error:
        bundle.tensors(split)
    assert str(broken) in str(error.value) and "truncated" in str(error.value)
    (tmp_path / "pets" / "cat" / "0.png").write_text("not an image")
    with pytest.raises(HybridError, match="0.png"):
        datasets.read_rgb(tmp_path / "pets" / "cat" / "0.png")


# ---------------------------------------------------------------------------------------
# folder, and the cache hook


def test_folder_dataset(tmp_path):
    layouts.write_image_folder(tmp_path / "pets", {"cat": 20, "dog": 10, "emu": 10})
    bundle = load_dataset("folder", tmp_path, folder="pets")
    assert bundle.classes == ["cat", "dog", "emu"]
    assert bundle.sizes == {"train": 28, "val": 4, "test": 8}
    assert bundle.class_counts("test") == [4, 2, 2]
    x, y = fast_batch(bundle, "test")
    ref_x, ref_y = reference_batch(bundle, "test", range(8), augment=False)
    torch.testing.assert_close(x, ref_x, atol=1e-6, rtol=0)
    assert torch.equal(y, ref_y)
    assert load_dataset("folder", folder=tmp_path / "pets", num_classes=2).classes == ["cat", "dog"]


class DictCache:
    """The smallest `SplitCache`: decoded splits kept in a dict, keyed by bundle and split."""

    def __init__(self):
        self.stored, self.reads = {}, 0

    def read(self, bundle, split):
        self.reads += 1
        return self.stored.get((bundle.name, bundle.seed, split))

    def write(self, bundle, split, images, targets):
        self.stored[bundle.name, bundle.seed, split] = (images.clone(), targets.clone())


def test_a_cache_is_read_before_decoding_and_written_after(tmp_path, monkeypatch):
    layouts.write_image_folder(tmp_path / "pets", {"cat": 10, "dog": 10})
    cache = DictCache()
    first = load_dataset("folder", tmp_path, folder="pets", cache=cache)
    assert first.cache is cache and load_dataset("digits").cache is None  # default: none
    images, targets = first.tensors("train")
    assert cache.reads == 1 and list(cache.stored) == [("folder", 0, "train")]
    assert first.tensors("train")[0] is images and cache.reads == 1  # once per bundle

    def no_decoding(*args):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(data.DataBundle, "_decode", no_decoding)
    again, again_targets = load_dataset("folder", tmp_path, folder="pets", cache=cache).tensors(
        "train"
    )
    assert torch.equal(again, images) and torch.equal(again_targets, targets)
    with pytest.raises(AssertionError, match="decoded although cached"):  # not in the cache
        load_dataset("folder", tmp_path, folder="pets", seed=1, cache=cache).tensors("train")
    with pytest.raises(AssertionError, match="decoded although cached"):  # no cache
        load_dataset("folder", tmp_path, folder="pets").tensors("train")


# ---------------------------------------------------------------------------------------
# format-exact fixtures of the original layouts


@pytest.fixture()
def cifar_batches(tmp_path, monkeypatch):
    """A data root with a small cifar-10-batches-py whose md5s torchvision accepts."""
    train_list, test_list, meta, train, test = layouts.write_cifar10_batches(tmp_path)
    monkeypatch.setattr(CIFAR10, "train_list", train_list)
    monkeypatch.setattr(CIFAR10, "test_list", test_list)
    monkeypatch.setattr(CIFAR10, "meta", meta)
    return tmp_path, train, test


def test_cifar10_pickle_batches(cifar_batches):
    root, train, test = cifar_batches
    bundle = load_dataset("cifar10", root)
    assert bundle.classes == layouts.CIFAR10_CLASSES
    assert bundle.sizes == {"train": 90, "val": 10, "test": 20}  # 10 % of train held out
    assert bundle.class_counts("val") == [1] * 10
    assert bundle.source.endswith("cifar-10-batches-py")
    images, targets = bundle.tensors("test")
    # 32x32 images pass through unchanged: pixel for pixel the pickled arrays.
    assert torch.equal(images, torch.from_numpy(test).permute(0, 3, 1, 2))
    assert targets.tolist() == [c for c in range(10) for _ in range(2)]
    x, _ = fast_batch(bundle, "val")
    ref_x, _ = reference_batch(bundle, "val", range(10), augment=False)
    torch.testing.assert_close(x, ref_x, atol=1e-6, rtol=0)


def test_cifar10_corrupt_batch_is_reported(cifar_batches):
    root, _, _ = cifar_batches
    batch = root / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:-10])
    with pytest.raises(HybridError, match="checksum.*partial or corrupt"):
        load_dataset("cifar10", root)


def test_cifar10_image_folder(tmp_path):
    layouts.write_cifar10_jpg(tmp_path)
    bundle = load_dataset("cifar10", tmp_path)
    assert bundle.classes == layouts.CIFAR10_CLASSES
    assert bundle.sizes == {"train": 90, "val": 10, "test": 30}
    assert bundle.class_counts("val") == [1] * 10 and bundle.class_counts("test") == [3] * 10
    assert load_dataset("cifar10", tmp_path, num_classes=4).sizes["test"] == 12


def test_caltech101_layout(tmp_path):
    layouts.write_caltech101(tmp_path)
    bundle = load_dataset("caltech101", tmp_path, num_classes=3)
    # The three most common categories, BACKGROUND_Google left out, in sorted order.
    assert bundle.classes == ["Faces", "airplanes", "car_side"]
    assert sum(bundle.sizes.values()) == 12 + 20 + 11
    assert bundle.class_counts("test") == [3, 4, 2]
    # Grayscale files become 3 equal channels (paper A forces 3 channels).
    part = bundle._parts["train"]
    gray = [i for i, k in enumerate(part.keys) if int(k[-8:-4]) % 4 == 0]
    images, _ = bundle.tensors("train")
    assert gray and all(torch.equal(images[i, 0], images[i, 2]) for i in gray)
    assert not torch.equal(
        images[[i for i in range(len(part)) if i not in gray][0], 0],
        images[[i for i in range(len(part)) if i not in gray][0], 2],
    )
    with pytest.raises(HybridError, match="num_classes=6 but caltech101 has 5"):
        load_dataset("caltech101", tmp_path, num_classes=6)


def test_tiny_imagenet_layout(tmp_path):
    base = layouts.write_tiny_imagenet(tmp_path)
    bundle = load_dataset("tiny-imagenet", tmp_path)
    assert bundle.classes == [
        "goldfish",
        "European fire salamander",
        "bullfrog",
        "tailed frog",
        "American alligator",
    ]
    assert bundle.sizes == {"train": 36, "val": 4, "test": 10}
    assert bundle.class_counts("test") == [2] * 5
    ds = datasets.TinyImageNet(tmp_path, split="val", classes=None)
    assert len(ds) == 12 and ds.wnids[0] == "n01443537" and len(ds.classes) == 6
    image, target = ds[0]
    assert image.mode == "RGB" and image.size == (64, 64) and 0 <= target < 6
    with pytest.raises(HybridError, match="num_classes=7 but tiny-imagenet here has 6"):
        load_dataset("tiny-imagenet", tmp_path, num_classes=7)
    shutil.rmtree(base / "train" / "n01629819")
    with pytest.raises(HybridError, match="incomplete.*n01629819"):
        load_dataset("tiny-imagenet", tmp_path)


@pytest.fixture()
def tiny_archive(tmp_path, monkeypatch):
    """The official-style zip of a small Tiny ImageNet, and a download_url that copies it."""
    source = tmp_path / "source"
    layouts.write_tiny_imagenet(source)
    archive = tmp_path / "served.zip"
    md5 = layouts.zip_folder(source / "tiny-imagenet-200", archive)
    monkeypatch.setattr(datasets.TinyImageNet, "md5", md5)
    served = {"bytes": archive.read_bytes(), "calls": 0}

    def fake_download_url(url, root, filename, md5=None):
        served["calls"] += 1
        Path(root, filename).write_bytes(served["bytes"])

    monkeypatch.setattr(datasets, "download_url", fake_download_url)
    return tmp_path / "data", served


def test_tiny_imagenet_download_and_extract(tiny_archive):
    root, served = tiny_archive
    bundle = load_dataset("tiny-imagenet", root, download=True)
    assert bundle.sizes == {"train": 36, "val": 4, "test": 10}
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []  # no temp folders
    load_dataset("tiny-imagenet", root, download=True)
    assert served["calls"] == 1  # present: not downloaded again


def test_tiny_imagenet_corrupt_download_leaves_nothing_that_looks_valid(tiny_archive):
    root, served = tiny_archive
    good = served["bytes"]
    served["bytes"] = good[: len(good) // 2]  # an interrupted transfer
    with pytest.raises(HybridError, match="checksum mismatch.*partial or corrupt"):
        load_dataset("tiny-imagenet", root, download=True)
    assert not (root / "tiny-imagenet-200").exists()
    assert not (root / "tiny-imagenet-200.zip").exists()
    with pytest.raises(HybridError, match="not found"):
        load_dataset("tiny-imagenet", root)
    served["bytes"] = good
    assert load_dataset("tiny-imagenet", root, download=True).sizes["test"] == 10


def test_tiny_imagenet_failed_extraction_leaves_nothing(tiny_archive, monkeypatch):
    root, _ = tiny_archive

    def extract_half(archive, to_path):
        (Path(to_path) / "tiny-imagenet-200" / "train").mkdir(parents=True)
        (Path(to_path) / "tiny-imagenet-200" / "wnids.txt").write_text("n01443537\n")
        raise OSError("No space left on device")

    monkeypatch.setattr(datasets, "extract_archive", extract_half)
    with pytest.raises(HybridError, match="cannot extract.*No space left"):
        load_dataset("tiny-imagenet", root, download=True)
    assert sorted(p.name for p in root.iterdir()) == ["tiny-imagenet-200.zip"]


# ---------------------------------------------------------------------------------------
# the command line


def test_cli_data_prints_classes_and_sizes(capsys):
    assert cli.main(["data", "digits"]) == 0
    out = capsys.readouterr().out
    assert "train 1,293 / val 144 / test 360" in out and "\n9 " in out
    assert cli.main(["data", "imagenet"]) == 2
    assert "choose one of: cifar10, caltech101" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# the real data subsets


@pytest.mark.realdata
def test_real_caltech101(shared_data):
    bundle = load_dataset("caltech101", shared_data, cache=disk_cache("caltech101", shared_data))
    assert bundle.sizes == {"train": 2432, "val": 271, "test": 676}  # paper A
    assert bundle.classes == [
        "Faces",
        "Faces_easy",
        "Leopards",
        "Motorbikes",
        "airplanes",
        "bonsai",
        "car_side",
        "chandelier",
        "ketch",
        "watch",
    ]
    totals = [800, 798, 435, 435, 239, 200, 128, 123, 114, 107]
    sizes = dict(
        zip(
            [
                "airplanes",
                "Motorbikes",
                "Faces",
                "Faces_easy",
                "watch",
                "Leopards",
                "bonsai",
                "car_side",
                "ketch",
                "chandelier",
            ],
            totals,
            strict=True,
        )
    )
    for split, fraction in (("test", 0.2), ("val", 0.08)):
        for name, count in zip(bundle.classes, bundle.class_counts(split), strict=True):
            assert abs(count - fraction * sizes[name]) <= 1.5, (split, name, count)
    assert load_dataset("caltech101", shared_data)._parts["val"].keys == bundle._parts["val"].keys
    # The grayscale originals come out with three equal channels.
    part = bundle._parts["test"]
    gray = [i for i, path in enumerate(part.keys) if Image.open(path).mode == "L"]
    images, _ = bundle.tensors("test")
    assert gray and all(torch.equal(images[i, 0], images[i, 1]) for i in gray)
    indices = [gray[0], 0, 337, 675]
    for crop in (None, 24):
        x, y = fast_batch(bundle, "test", crop=crop)
        ref_x, ref_y = reference_batch(bundle, "test", indices, augment=False, crop=crop)
        torch.testing.assert_close(x[indices], ref_x, atol=1e-6, rtol=0)
        assert torch.equal(y[indices], ref_y)


@pytest.mark.realdata
def test_real_tiny_imagenet(shared_data):
    cache = disk_cache("tiny-imagenet", shared_data)
    bundle = load_dataset("tiny-imagenet", shared_data, cache=cache)
    assert bundle.sizes == {"train": 1800, "val": 200, "test": 500}  # paper A
    assert bundle.classes == [
        "goldfish",
        "European fire salamander",
        "bullfrog",
        "tailed frog",
        "American alligator",
    ]
    assert bundle.class_counts("test") == [100] * 5 and bundle.class_counts("val") == [40] * 5
    x, y = fast_batch(bundle, "val")
    ref_x, ref_y = reference_batch(bundle, "val", [0, 99, 199], augment=False)
    torch.testing.assert_close(x[[0, 99, 199]], ref_x, atol=1e-6, rtol=0)
    assert torch.equal(y[[0, 99, 199]], ref_y)


@pytest.mark.realdata
def test_real_cifar10_image_folder(shared_data):
    """The complete CIFAR-10: paper A's 45,000 / 5,000 / 10,000, stratified."""
    # The disk cache, as the command line uses it: the 60,000 images decode once a machine.
    bundle = load_dataset("cifar10", shared_data, cache=disk_cache("cifar10", shared_data))
    assert bundle.source.endswith("cifar10-jpg")
    assert bundle.classes == layouts.CIFAR10_CLASSES  # torchvision CIFAR10.classes order
    assert bundle.sizes == {"train": 45_000, "val": 5_000, "test": 10_000}
    assert bundle.class_counts("train") == [4_500] * 10
    assert bundle.class_counts("val") == [500] * 10
    assert bundle.class_counts("test") == [1_000] * 10
    train, val = set(bundle._parts["train"].keys), set(bundle._parts["val"].keys)
    assert not train & val and len(train | val) == 50_000  # the held-out 10 % is disjoint
    x, y = next(iter(bundle.loader("test", 32)))
    assert x.shape == (32, 3, 32, 32) and y.shape == (32,)
    quick = load_dataset("cifar10", shared_data, limit=200)
    assert quick.sizes == {"train": 200, "val": 200, "test": 200}
    assert quick.class_counts("test") == [20] * 10


def test_device_loader_directly():
    images = torch.arange(4 * 3 * 2 * 2, dtype=torch.uint8).view(4, 3, 2, 2)
    loader = DeviceLoader(images, torch.arange(4), batch_size=3, mean=(0, 0, 0), std=(1, 1, 1))
    batches = list(loader)
    assert [len(y) for _, y in batches] == [3, 1]
    torch.testing.assert_close(batches[0][0], images[:3].float() / 255)


@pytest.mark.cuda
def test_cuda_loader_matches_cpu_loader(digits):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    for kwargs in ({}, {"crop": 24}):
        cpu = digits.loader("train", 128, seed=5, **kwargs)
        gpu = digits.loader("train", 128, seed=5, device="cuda", **kwargs)
        for (xc, yc), (xg, yg) in zip(cpu, gpu, strict=True):
            assert xg.is_cuda and torch.equal(yc, yg.cpu())
            torch.testing.assert_close(xc, xg.cpu(), atol=1e-6, rtol=0)
