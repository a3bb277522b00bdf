"""Data sets with the papers' splits, preprocessing and a fast in-memory loader.

    from hybridlib.data import load_dataset
    bundle = load_dataset("caltech101", root="~/hybridlib/data")  # "digits" needs no files
    bundle.classes, bundle.sizes        # [...], {'train': 2432, 'val': 271, 'test': 676}
    for x, y in bundle.loader("train", 16, device="cuda"):  # x: (16, 3, 32, 32) float32
        ...
    # The reference path: per-sample torchvision transforms through a plain DataLoader.
    plain = torch.utils.data.DataLoader(bundle.dataset("train"), batch_size=16, shuffle=True)

Command line: `python -m hybridlib data caltech101 [--data-root DIR] [--download]` prints
the classes and the split sizes.

Data sets (`name`: where it is read from under the data root -> train / val / test):

- `cifar10`: `cifar-10-batches-py/` (the official pickle batches, read by torchvision's
  `CIFAR10`; `download=True` fetches them) or else `cifar10-jpg/{train,test}/<class>/*.jpg`
  (the same images as an image folder); an empty or half-copied pickle folder does not
  hide a complete image folder. Validation = a seeded, stratified 10 % of the
  official training set, test = the official test set: 45,000 / 5,000 / 10,000 (paper A).
- `caltech101`: `caltech101/101_ObjectCategories/<category>/image_NNNN.jpg`, without
  `BACKGROUND_Google`; the 10 most common categories (paper A): 2,432 / 271 / 676.
  The image files that are there are used, whatever their names; hidden and non-image
  files (`.DS_Store`, notes) are left out, as torchvision's folder datasets do.
- `tiny-imagenet`: `tiny-imagenet-200/` in its original layout; the first 5 class ids in
  sorted order (paper A's setting; `num_classes` picks another count) and only the
  training folders, as in paper A: 1,800 / 200 / 500.
- `digits`: scikit-learn's embedded handwritten digits (no files, no network): 1,293 /
  144 / 360. The course's quick profile uses it.
- `folder`: `folder=PATH`, any folder of class sub-folders of images.

Splits: where a data set has no official test set, a stratified 20 % test split is
drawn first and then a stratified 10 % of the rest is held out for validation, both
seeded by `seed` (scikit-learn's `train_test_split(stratify=...)`). `limit` keeps at
most that many images of each split (a stratified subsample) for quick runs.

Preprocessing (paper A): every image is converted to 3-channel RGB (Caltech 101 has
grayscale images), resized to `image_size` x `image_size` (32), turned into a tensor in
0..1 and normalised with per-channel mean and std computed on the training split.
Augmentation: random horizontal and vertical flips (paper A), on by default for the
training split only. `crop=24` gives paper B's input: random 24x24 crops while
augmenting, centre crops otherwise; `flip=False` keeps the crops without the flips
(paper B mentions crops only).

Two paths give the same samples:

- `bundle.dataset(split)`: a torchvision-style Dataset that decodes and transforms one
  image per `__getitem__` (the reference path, used with a `DataLoader`).
- `bundle.loader(split, batch_size, device=...)`: the fast path. The whole split is
  decoded once into a uint8 tensor, moved to the device, shuffled with `randperm`,
  flipped and cropped on the device and batched by indexing; no worker processes
  (they are slower than indexing memory on small machines). The order, flips and crops
  of epoch `e` depend only on `(seed, e)`.

Errors a user can fix raise `HybridError`: an unknown name, missing data (the message
says where it looked and how to download), a corrupt download, a class subset larger than
what is there, a class too small for a test split. An unreadable or truncated image file
stops the decoding with its name: it is not skipped, since skipping would silently
change the split sizes. `bundle.check()` decodes every split (a run calls it before its
first epoch) and `bundle.dataset(split)` decodes its split once, so a bad file shows at
the start. `bundle.split_record()` lists each split's images (a run saves it as
`splits.json`) and `bundle.split_changes(record)` says, in one line, what differs.

Disk cache: the decoded uint8 tensor of each split is saved as one file in
`<data root>/.hybridlib-cache/` (or `$HYBRIDLIB_CACHE`, or `~/.cache/hybridlib` when the
data root is read-only), named after the data set, split and image size plus a hash of
every setting that changes its content (seed, image size, classes, limit, source, file
names, sizes and times). Files are written to a temporary name and renamed, so an
interrupted run never leaves a half-written cache, and each holds a SHA-256 of its
pixels: a file that fails it is decoded again, with a one-line warning. A cache that
cannot be written (read-only, full disk) costs only the decoding time, with a warning.
Delete the folder to reclaim space; `cache=False` turns it off. `digits` decodes in
well under a second and is not cached.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

from hybridlib.datasets import (
    CIFAR10Folder,
    Digits,
    TinyImageNet,
    download_caltech101,
    image_folder,
    read_rgb,
)
from hybridlib.errors import HybridError, choices_error
from hybridlib.paths import data_root

__all__ = [
    "CACHE_DIRNAME",
    "DATASET_NAMES",
    "SPLITS",
    "DataBundle",
    "DeviceLoader",
    "SplitDataset",
    "cli_data",
    "load_dataset",
]

DATASET_NAMES = ("cifar10", "caltech101", "tiny-imagenet", "digits", "folder")
SPLITS = ("train", "val", "test")
TEST_FRACTION = 0.2  # paper A: stratified 20 % test split ...
VAL_FRACTION = 0.1  # ... then 10 % of the rest for validation
CACHE_DIRNAME = ".hybridlib-cache"
SPLIT_RECORD_FORMAT = 1  # the layout of a run's splits.json
CACHE_ENV = "HYBRIDLIB_CACHE"
_CACHE_VERSION = 2  # bump when the decoding changes, so old cache files are ignored
# num_classes=None means the paper's choice: Caltech 101's 10 most common categories and
# Tiny ImageNet's first 5 sorted class ids (paper A); every class elsewhere.
_DEFAULT_CLASSES = {"caltech101": 10, "tiny-imagenet": 5}


# ---------------------------------------------------------------------------------------
# Images of one split, not decoded yet


class _FileLoader:
    """Position -> RGB image, read from a list of files."""

    def __init__(self, paths: Sequence[str]):
        self.paths = list(paths)

    def __call__(self, i: int) -> Image.Image:
        return read_rgb(self.paths[i])


class _ArrayLoader:
    """Position -> RGB image, from an in-memory uint8 array (N, H, W) or (N, H, W, 3)."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def __call__(self, i: int) -> Image.Image:
        return Image.fromarray(self.array[i]).convert("RGB")


class _Indexed:
    """A loader restricted to some positions of another one."""

    def __init__(self, load: Callable[[int], Image.Image], index: np.ndarray):
        self.load, self.index = load, index

    def __call__(self, i: int) -> Image.Image:
        return self.load(int(self.index[i]))


@dataclass
class _Part:
    keys: list[str]  # a stable id per image: its file path, or "<source>#<n>"
    targets: np.ndarray  # int64 class indices
    load: Callable[[int], Image.Image]  # position -> RGB PIL image
    files: bool = False  # keys are file paths (stat them for the cache key)

    def __len__(self) -> int:
        return len(self.keys)

    def subset(self, index) -> _Part:
        index = np.asarray(index, dtype=np.int64)
        keys = [self.keys[i] for i in index]
        return _Part(keys, self.targets[index], _Indexed(self.load, index), self.files)

    def fingerprint(self) -> str:
        digest = hashlib.sha1()
        digest.update(np.ascontiguousarray(self.targets, dtype=np.int64).tobytes())
        for key in self.keys:
            digest.update(key.encode())
            if self.files:
                info = os.stat(key)
                digest.update(f"{info.st_size}:{info.st_mtime_ns}".encode())
        return digest.hexdigest()


def _file_part(samples: Sequence[tuple[str, int]]) -> _Part:
    paths = [os.fspath(p) for p, _ in samples]
    targets = np.array([t for _, t in samples], dtype=np.int64)
    return _Part(paths, targets, _FileLoader(paths), files=True)


def _keep_classes(part: _Part, keep: Sequence[int]) -> _Part:
    """Only the images of the classes `keep`, relabelled 0..len(keep)-1 in that order."""
    relabel = np.full(int(part.targets.max(initial=0)) + 1, -1, dtype=np.int64)
    relabel[np.asarray(keep, dtype=np.int64)] = np.arange(len(keep))
    sub = part.subset(np.flatnonzero(np.isin(part.targets, keep)))
    sub.targets = relabel[sub.targets]
    return sub


def _check_num_classes(name: str, num_classes: int | None, available: int) -> int:
    if num_classes is None:
        return available
    if not 1 <= num_classes <= available:
        raise HybridError(
            f"num_classes={num_classes} but {name} has {available} classes here; choose "
            f"num_classes between 1 and {available} (or None for the default)"
        )
    return num_classes


# ---------------------------------------------------------------------------------------
# Sources: (class names, {"all": part} or {"train": part, "test": part}, description)


def _digits(root: Path, download: bool, num_classes, folder):
    ds = Digits()
    part = _Part(
        [f"sklearn-digits#{i}" for i in range(len(ds))],
        np.asarray(ds.targets, dtype=np.int64),
        _ArrayLoader(ds.data),
    )
    k = _check_num_classes("digits", num_classes, len(ds.classes))
    return ds.classes[:k], {"all": _keep_classes(part, range(k))}, "sklearn.datasets.load_digits"


def _cifar10(root: Path, download: bool, num_classes, folder):
    batches, jpg = root / "cifar-10-batches-py", root / "cifar10-jpg"
    # The folder that holds data wins: an empty or half-copied pickle folder must not
    # hide a complete image folder.
    files = ["batches.meta", *(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]
    present = [f for f in files if (batches / f).is_file()]
    has_jpg = (jpg / "train").is_dir() and (jpg / "test").is_dir()
    if present and len(present) < len(files) and not has_jpg and not download:
        missing = [f for f in files if f not in present]
        raise HybridError(
            f"{batches} is incomplete: {', '.join(missing)} missing; delete it and run "
            "again with download=True (command line: --download)"
        )
    if len(present) == len(files) or (download and not has_jpg):
        from torchvision.datasets import CIFAR10

        try:
            train = CIFAR10(os.fspath(root), train=True, download=download)
            test = CIFAR10(os.fspath(root), train=False)
        except RuntimeError as error:
            raise HybridError(
                f"cifar10 in {batches} failed torchvision's checksum check ({error}): a partial "
                f"or corrupt download. Delete {batches} and run again with download=True "
                "(command line: --download)"
            ) from None
        classes, source = list(train.classes), os.fspath(batches)
        parts = {
            split: _Part(
                [f"{source}:{split}#{i}" for i in range(len(ds))],
                np.asarray(ds.targets, dtype=np.int64),
                _ArrayLoader(ds.data),
            )
            for split, ds in (("train", train), ("test", test))
        }
    elif jpg.is_dir():  # the image folder (or a half-made one: CIFAR10Folder says what lacks)
        train, test = CIFAR10Folder(root, "train"), CIFAR10Folder(root, "test")
        if train.classes != test.classes:
            raise HybridError(
                f"{jpg}: train/ and test/ have different class folders "
                f"({train.classes} vs {test.classes}); give both the same classes"
            )
        classes, source = train.classes, os.fspath(jpg)
        parts = {"train": _file_part(train.samples), "test": _file_part(test.samples)}
    else:
        raise HybridError(
            f"cifar10 not found: looked for {batches} (official pickle batches) and {jpg} "
            "(image folder). Pass download=True (command line: --download) to download it "
            "(170 MB) from https://www.cs.toronto.edu/~kriz/cifar.html, or point the data "
            "root (root=..., --data-root or $HYBRIDLIB_DATA) at the folder that holds it."
        )
    k = _check_num_classes("cifar10", num_classes, len(classes))
    return classes[:k], {s: _keep_classes(p, range(k)) for s, p in parts.items()}, source


def _caltech101(root: Path, download: bool, num_classes, folder):
    categories = root / "caltech101" / "101_ObjectCategories"
    if download:
        download_caltech101(root)
    if not categories.is_dir():
        raise HybridError(
            f"caltech101 not found: looked for {categories}. Pass download=True (command line: "
            "--download) to download it (131 MB) from https://data.caltech.edu, or point the "
            "data root (root=..., --data-root or $HYBRIDLIB_DATA) at the folder that holds it."
        )
    # The files that are there, as torchvision's folder datasets find them (hidden and
    # non-image files left out), rather than torchvision Caltech101's image_0001 ..
    # image_<count>.jpg, which names files that do not exist when a folder holds others.
    names, samples = image_folder(categories, exclude=("BACKGROUND_Google",), allow_empty=True)
    k = _check_num_classes("caltech101", num_classes, len(names))
    # Paper A: the k most common categories (ties broken by name), kept in sorted order.
    counts = np.bincount([y for _, y in samples], minlength=len(names))
    by_size = sorted(range(len(names)), key=lambda c: (-counts[c], names[c]))
    keep = sorted(by_size[:k])
    part = _keep_classes(_file_part(samples), keep)
    return [names[c] for c in keep], {"all": part}, os.fspath(categories)


def _tiny_imagenet(root: Path, download: bool, num_classes, folder):
    ds = TinyImageNet(root, "train", classes=num_classes, download=download)
    # Paper A splits the training folders; the official val images are not used.
    return list(ds.classes), {"all": _file_part(ds.samples)}, os.fspath(ds.folder / "train")


def _folder(root: Path, download: bool, num_classes, folder):
    if folder is None:
        raise HybridError(
            "dataset 'folder' needs folder=PATH: a folder with one sub-folder of images per "
            "class (e.g. pets/cat/*.jpg, pets/dog/*.jpg)"
        )
    path = Path(folder).expanduser()
    if not path.is_absolute() and not path.is_dir() and (root / path).is_dir():
        path = root / path
    if not path.is_dir():
        raise HybridError(
            f"folder={os.fspath(folder)!r} is not a directory; give a folder "
            "with one sub-folder of images per class"
        )
    path = path.resolve()  # the images' ids in a run's splits.json are relative to it
    classes, samples = image_folder(path)
    k = _check_num_classes("folder", num_classes, len(classes))
    classes, samples = classes[:k], [(p, t) for p, t in samples if t < k]
    return classes, {"all": _file_part(samples)}, os.fspath(path)


_SOURCES = {
    "cifar10": _cifar10,
    "caltech101": _caltech101,
    "tiny-imagenet": _tiny_imagenet,
    "digits": _digits,
    "folder": _folder,
}


# ---------------------------------------------------------------------------------------
# Splits


def _hold_out(
    part: _Part, fraction: float, seed: int, split: str, classes, strict: bool = True
) -> tuple[_Part, _Part]:
    """Stratified split of `part` into (rest, held out `fraction`).

    strict: a class that would get no held-out image is an error (the test split).
    Otherwise (the validation split of a very small data set) a plain seeded split is
    used where stratification is impossible.
    """
    from sklearn.model_selection import train_test_split

    index = np.arange(len(part))
    counts = np.bincount(part.targets, minlength=len(classes))
    too_small = [f"{classes[c]!r} ({counts[c]})" for c in range(len(classes)) if counts[c] < 2]
    try:
        if too_small:
            raise ValueError(f"class(es) {', '.join(too_small)} have fewer than 2 images")
        rest, held = train_test_split(
            index, test_size=fraction, stratify=part.targets, random_state=seed
        )
    except ValueError as error:
        if strict:
            raise HybridError(
                f"the stratified {fraction:.0%} {split} split would leave a class with no "
                f"{split} images ({error}): each class needs at least "
                f"{math.ceil(1 / fraction)} images; add images or leave those classes out "
                "(num_classes=...)"
            ) from None
        rest, held = train_test_split(index, test_size=fraction, random_state=seed)
    return part.subset(np.sort(rest)), part.subset(np.sort(held))


def _make_splits(pools: dict[str, _Part], seed: int, classes) -> dict[str, _Part]:
    if "all" in pools:
        rest, test = _hold_out(pools["all"], TEST_FRACTION, seed, "test", classes)
    else:
        rest, test = pools["train"], pools["test"]
    train, val = _hold_out(rest, VAL_FRACTION, seed, "val", classes, strict=False)
    counts = np.bincount(test.targets, minlength=len(classes))
    empty = [repr(classes[c]) for c in range(len(classes)) if counts[c] == 0]
    if empty:
        raise HybridError(
            f"the test split has no images of class(es) {', '.join(empty)}; add test images "
            "or leave those classes out"
        )
    return {"train": train, "val": val, "test": test}


def _limit(part: _Part, limit: int | None, seed: int) -> _Part:
    """At most `limit` images, a stratified subsample where possible."""
    if limit is None or len(part) <= limit:
        return part
    from sklearn.model_selection import train_test_split

    index = np.arange(len(part))
    try:
        keep, _ = train_test_split(
            index, train_size=limit, stratify=part.targets, random_state=seed
        )
    except ValueError:  # fewer images than classes: a plain seeded sample
        keep = np.random.default_rng(seed).choice(index, size=limit, replace=False)
    return part.subset(np.sort(keep))


# ---------------------------------------------------------------------------------------
# The record of a run's splits


def _relative_ids(keys: Sequence[str], source: str) -> list[str]:
    """Image ids that survive a moved data root: paths relative to the source folder."""
    ids = []
    for key in keys:
        if key.startswith(source) and key[len(source) : len(source) + 1] in (os.sep, ":"):
            key = key[len(source) + 1 :]
        ids.append(key.replace(os.sep, "/"))
    return ids


def _ids_digest(ids: Sequence[str], targets: np.ndarray) -> str:
    digest = hashlib.sha256()
    for image_id, target in zip(ids, targets.tolist(), strict=True):
        digest.update(f"{image_id}\t{target}\n".encode())
    return digest.hexdigest()


def _count(ids: list[str], what: str) -> str:
    noun = "image" if len(ids) == 1 else "images"
    return f"{len(ids):,} {noun} {what}" + (f" (e.g. {ids[0]})" if ids else "")


# ---------------------------------------------------------------------------------------
# The bundle


def _cache_dir(root: Path, cache) -> Path | None:
    if cache is False or cache is None:
        return None
    if cache is not True:
        return Path(cache).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # the cache folder will be created below this one
    if _writable(existing):
        return root / CACHE_DIRNAME
    # A read-only data root (a shared copy): cache in the user's cache folder instead.
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hybridlib"


def _writable(folder: Path) -> bool:
    # The mode bits as well as os.access: a folder marked read-only (r-x) stays untouched
    # even for root, for whom os.access always answers yes.
    try:
        return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & stat.S_IWUSR)
    except OSError:
        return False


class SplitDataset(Dataset):
    """One split as a torchvision-style Dataset: decode and transform one image at a time.

    Items are `(x, y)`: x a float32 tensor (3, S, S) after the transform, y an int.
    Attributes: `classes`, `targets`, `transform`.
    """

    def __init__(self, part: _Part, classes: list[str], transform: Callable, name: str = ""):
        self._part, self.classes, self.transform, self.name = part, classes, transform, name
        self.targets = [int(t) for t in part.targets]

    def __len__(self) -> int:
        return len(self._part)

    def __getitem__(self, index: int):
        return self.transform(self._part.load(index)), self.targets[index]

    def __repr__(self) -> str:
        return f"SplitDataset({self.name}, {len(self)} images)\n{self.transform}"


class DataBundle:
    """One data set's classes, splits, statistics, datasets and loaders.

    Built by `load_dataset`; see the module docstring. Attributes: `name`, `classes`,
    `num_classes`, `image_size`, `sizes`, `mean`, `std` (per channel, 0..1 scale,
    computed on the training split), `seed`, `source`.
    """

    def __init__(
        self, name, classes, parts, *, image_size, seed, limit, source, cache_dir, settings
    ):
        self.name, self.classes, self.image_size = name, list(classes), image_size
        self.seed, self.limit, self.source, self.cache_dir = seed, limit, source, cache_dir
        self._parts: dict[str, _Part] = parts
        self._settings = settings
        self._tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._on_device: dict[tuple[str, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}
        self._stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None
        # Paper A resizes every image to 32x32; the same transform decodes both paths.
        self._resize = transforms.Resize((image_size, image_size))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def sizes(self) -> dict[str, int]:
        return {split: len(part) for split, part in self._parts.items()}

    def class_counts(self, split: str) -> list[int]:
        """Images per class in `split`, in class order."""
        part = self._part(split)
        return np.bincount(part.targets, minlength=self.num_classes).tolist()

    def _part(self, split: str) -> _Part:
        if split not in self._parts:
            raise choices_error("split", split, SPLITS)
        return self._parts[split]

    # -- what a run records of its data ------------------------------------------------

    def check(self) -> None:
        """Decode every image of every split now (or find it in the cache).

        A run calls this before its first epoch, so an unreadable image file stops it
        at the start, naming the file, instead of after the last epoch.
        """
        for split in SPLITS:
            self.tensors(split)

    def split_record(self) -> dict:
        """The images of each split, as a run records them (its `splits.json`).

        Returns:
            {"format", "dataset", "source", "classes", "splits": {split: {"size",
            "sha256", "class_counts", "files"}}}: "files" are the images' ids (paths
            relative to the source folder), in split order; "sha256" digests the ids and
            their labels.
        """
        splits = {}
        for split in SPLITS:
            part = self._parts[split]
            ids = _relative_ids(part.keys, self.source)
            splits[split] = {
                "size": len(part),
                "sha256": _ids_digest(ids, part.targets),
                "class_counts": self.class_counts(split),
                "files": ids,
            }
        return {
            "format": SPLIT_RECORD_FORMAT,
            "dataset": self.name,
            "source": self.source,
            "classes": list(self.classes),
            "splits": splits,
        }

    def split_changes(self, record: dict) -> str | None:
        """How this bundle's splits differ from a `split_record()`, or None if they agree.

        Returns:
            One line: the classes that changed, or per changed split how many images were
            added and removed, with an example of each, and how many of the test images
            were training images in the record.
        """
        if list(record.get("classes", [])) != list(self.classes):
            return f"the classes changed from {record.get('classes')} to {self.classes}"
        old = record.get("splits", {})
        changes = []
        for split in SPLITS:
            part, was = self._parts[split], old.get(split, {})
            ids = _relative_ids(part.keys, self.source)
            if was.get("sha256") == _ids_digest(ids, part.targets):
                continue
            before, now = set(was.get("files", [])), set(ids)
            removed = [i for i in was.get("files", []) if i not in now]
            added = [i for i in ids if i not in before]
            if not removed and not added:
                changes.append(f"{split}: the same {len(ids):,} images with other labels")
                continue
            text = f"{split}: {_count(removed, 'removed')}, {_count(added, 'added')}"
            if split == "test":
                leaked = now & set(old.get("train", {}).get("files", []))
                if leaked:
                    text += f" ({len(leaked):,} of the added ones were training images)"
            changes.append(text)
        return "; ".join(changes) or None

    # -- statistics ------------------------------------------------------------------

    def _mean_std(self):
        if self._stats is None:
            images, _ = self.tensors("train")
            total = torch.zeros(3, dtype=torch.float64)
            squares = torch.zeros(3, dtype=torch.float64)
            for chunk in images.split(1024):
                chunk = chunk.to(torch.float64)
                total += chunk.sum(dim=(0, 2, 3))
                squares += chunk.square().sum(dim=(0, 2, 3))
            count = images.shape[0] * images.shape[2] * images.shape[3]
            mean = total / count
            std = (squares / count - mean.square()).clamp_min(0).sqrt()
            # Guard against a constant channel (std 0) dividing by zero.
            std = std.clamp_min(1.0)
            self._stats = (
                tuple(float(m) for m in mean / 255),
                tuple(float(s) for s in std / 255),
            )
        return self._stats

    @property
    def mean(self) -> tuple[float, ...]:
        return self._mean_std()[0]

    @property
    def std(self) -> tuple[float, ...]:
        return self._mean_std()[1]

    # -- the reference path ------------------------------------------------------------

    def dataset(
        self, split: str, *, augment: bool | None = None, crop: int | None = None, flip: bool = True
    ):
        """The split as a torchvision-style Dataset with per-sample transforms.

        Args:
            split: "train", "val" or "test".
            augment: random horizontal and vertical flips (paper A), and random crops when
                `crop` is set; default True for "train" only.
            crop: None, or c for c x c crops (paper B: 24): random while augmenting,
                centred otherwise.
            flip: whether augmenting flips (False: random crops only, as paper B).
        Returns:
            A `SplitDataset` yielding (float32 (3, S', S') normalised tensor, int label).
        """
        part = self._part(split)
        augment = split == "train" if augment is None else bool(augment)
        crop = self._check_crop(crop)
        # Decode the whole split once (or read the cache), so an unreadable image stops
        # here, naming the file, rather than in the middle of an epoch.
        self.tensors(split)
        steps: list[Callable] = [self._resize]
        if crop is not None:
            steps.append(transforms.RandomCrop(crop) if augment else transforms.CenterCrop(crop))
        if augment and flip:
            steps += [transforms.RandomHorizontalFlip(), transforms.RandomVerticalFlip()]
        steps += [transforms.ToTensor(), transforms.Normalize(self.mean, self.std)]
        return SplitDataset(part, self.classes, transforms.Compose(steps), f"{self.name}/{split}")

    def _check_crop(self, crop):
        if crop is None:
            return None
        if not isinstance(crop, int) or not 1 <= crop <= self.image_size:
            raise HybridError(
                f"crop={crop!r} must be a whole number from 1 to image_size={self.image_size} "
                "(paper B uses 24), or None"
            )
        return crop

    # -- the fast path -----------------------------------------------------------------

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split, decoded once (and cached on disk).

        Args:
            split: "train", "val" or "test".
        Returns:
            (uint8 images (N, 3, S, S), int64 targets (N,)), both on the CPU.
        """
        part = self._part(split)
        if split not in self._tensors:
            path, key = self._cache_file(split)
            loaded = _read_cache(path, key) if path is not None else None
            if loaded is None:
                loaded = self._decode(part, split)
                if path is not None:
                    _write_cache(path, key, *loaded)
            self._tensors[split] = loaded
        return self._tensors[split]

    def _cache_file(self, split: str):
        if self.cache_dir is None:
            return None, None
        part = self._parts[split]
        key = dict(
            self._settings,
            version=_CACHE_VERSION,
            split=split,
            size=len(part),
            content=part.fingerprint(),
        )
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        name = f"{self.name}-{split}-{self.image_size}px-{digest}.pt"
        return self.cache_dir / name, key

    def _decode(self, part: _Part, split: str):
        from hybridlib.progress import bar

        size = self.image_size
        images = torch.empty((len(part), 3, size, size), dtype=torch.uint8)
        for i in bar(
            range(len(part)),
            desc=f"decoding {self.name}/{split}",
            unit="image",
            progress=len(part) >= 1000,
        ):
            array = np.array(self._resize(part.load(i)), dtype=np.uint8)  # (S, S, 3)
            images[i] = torch.from_numpy(array).permute(2, 0, 1)  # (S, S, 3) -> (3, S, S)
        return images, torch.from_numpy(part.targets.astype(np.int64))

    def loader(
        self,
        split: str,
        batch_size: int,
        *,
        device="cpu",
        shuffle: bool | None = None,
        augment: bool | None = None,
        crop: int | None = None,
        seed: int = 0,
        drop_last: bool = False,
        shard: tuple[int, int] = (0, 1),
        channels_last: bool = False,
        flip: bool = True,
    ) -> DeviceLoader:
        """The fast in-memory loader of one split.

        Args:
            split: "train", "val" or "test".
            batch_size: images per batch.
            device: where the images live and batches are made ("cpu", "cuda", ...).
            shuffle: reshuffle every epoch; default True for "train" only.
            augment: random flips (and random crops with `crop`); default True for "train".
            crop: None, or c for c x c crops (paper B: 24): random while augmenting,
                centred otherwise.
            seed: with the epoch, fixes the order, flips and crops.
            drop_last: drop the last incomplete batch.
            shard: (rank, world): this rank's disjoint part of the split.
            channels_last: return batches in channels-last memory format.
            flip: whether augmenting flips (False: random crops only, as paper B).
        Returns:
            A `DeviceLoader`.
        """
        images, targets = self.tensors(split)
        device = torch.device(device)
        if device.type != "cpu":
            # Keep one copy of each split per device, so the loaders made for every
            # evaluation do not copy the images again.
            if (split, device) not in self._on_device:
                self._on_device[split, device] = (images.to(device), targets.to(device))
            images, targets = self._on_device[split, device]
        is_train = split == "train"
        return DeviceLoader(
            images,
            targets,
            batch_size=batch_size,
            mean=self.mean,
            std=self.std,
            device=device,
            shuffle=is_train if shuffle is None else bool(shuffle),
            augment=is_train if augment is None else bool(augment),
            crop=self._check_crop(crop),
            seed=seed,
            drop_last=drop_last,
            shard=shard,
            channels_last=channels_last,
            flip=bool(flip),
        )

    def describe(self) -> str:
        """A short text: source, classes and images per class in each split."""
        s = self.sizes
        lines = [
            f"{self.name}: {self.num_classes} classes, {self.image_size}x{self.image_size} RGB, "
            f"seed {self.seed}" + (f", limit {self.limit}" if self.limit else ""),
            f"source: {self.source}",
            f"splits: train {s['train']:,} / val {s['val']:,} / test {s['test']:,}",
            "",
        ]
        width = max(len("class"), *(len(c) for c in self.classes))
        lines.append(f"{'class':<{width}}  {'train':>6}  {'val':>6}  {'test':>6}")
        counts = [self.class_counts(split) for split in SPLITS]
        for c, name in enumerate(self.classes):
            lines.append(f"{name:<{width}}  " + "  ".join(f"{n[c]:>6}" for n in counts))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"DataBundle(name={self.name!r}, num_classes={self.num_classes}, "
            f"image_size={self.image_size}, sizes={self.sizes})"
        )


def _warn(message: str) -> None:
    """One line on stderr: something cost time but nothing is wrong with the results."""
    print(f"hybridlib: warning: {message}", file=sys.stderr, flush=True)


def _checksum(images: torch.Tensor, targets: torch.Tensor) -> str:
    digest = hashlib.sha256(images.contiguous().numpy().data)  # ~0.15 s for CIFAR-10 train
    digest.update(targets.contiguous().numpy().data)
    return digest.hexdigest()


def _read_cache(path: Path, key: dict):
    """The cached (images, targets), or None when missing, stale, unreadable or corrupt."""
    if not path.is_file():
        return None
    try:
        stored = torch.load(path, weights_only=True)
    except Exception as error:  # an unreadable cache file is rebuilt, never trusted
        _warn(f"cache file {path} cannot be read ({type(error).__name__}); decoding again")
        return None
    if not isinstance(stored, dict) or stored.get("key") != key:
        return None  # made by another version or for other settings
    images, targets = stored.get("images"), stored.get("targets")
    if (
        not isinstance(images, torch.Tensor)
        or not isinstance(targets, torch.Tensor)
        or stored.get("sha256") != _checksum(images, targets)
    ):
        _warn(f"cache file {path} is corrupt (checksum mismatch); decoding again")
        return None
    return images, targets


def _write_cache(path: Path, key: dict, images: torch.Tensor, targets: torch.Tensor) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write to a temporary file in the same folder and rename: readers see either no
        # file or a complete one, even if this process is killed half-way.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
        os.close(fd)
        try:
            stored = {"key": key, "images": images, "targets": targets}
            torch.save({**stored, "sha256": _checksum(images, targets)}, tmp)
            os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache may be shared
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as error:  # a read-only or full disk only costs the next run the decoding
        reason = error.strerror or type(error).__name__
        _warn(f"cannot write the cache file {path} ({reason}); the next run decodes again")


# ---------------------------------------------------------------------------------------
# The on-device loader


def _epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed that depends only on (seed, epoch)."""
    state = np.random.SeedSequence([seed & (2**64 - 1), epoch]).generate_state(1, np.uint64)
    return int(state[0]) & (2**63 - 1)


@dataclass
class DeviceLoader:
    """Batches of a split held in device memory: `for x, y in loader`.

    x: float32 (B, 3, h, w) normalised, y: int64 (B,), both on `device`. `len(loader)`
    is the number of batches per epoch. Each iteration uses epoch `loader.epoch` and then
    counts it up; `set_epoch(e)` sets it, and the shuffle order, flips and crops of epoch
    `e` depend only on `(seed, e)`, so a resumed run sees the same batches. Random numbers
    come from a CPU generator, so CPU and GPU runs see the same batches too.

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

    images: torch.Tensor = field(repr=False)  # uint8 (N, 3, S, S)
    targets: torch.Tensor = field(repr=False)  # int64 (N,)
    batch_size: int
    mean: Sequence[float]
    std: Sequence[float]
    device: str | torch.device = "cpu"
    shuffle: bool = False
    augment: bool = False
    crop: int | None = None
    seed: int = 0
    drop_last: bool = False
    shard: tuple[int, int] = (0, 1)
    channels_last: bool = False
    flip: bool = True  # while augmenting: random flips (False: crops only, paper B)
    epoch: int = field(default=0)

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise HybridError(f"batch_size={self.batch_size!r} must be a whole number >= 1")
        rank, world = self.shard
        if world < 1 or not 0 <= rank < world:
            raise HybridError(f"shard={self.shard!r} must be (rank, world) with 0 <= rank < world")
        self.device = torch.device(self.device)
        # The whole split moves to the device once, as uint8 (a quarter of float32's size).
        self.images = self.images.to(self.device)
        self.targets = self.targets.to(self.device)
        self._mean = torch.tensor(self.mean, dtype=torch.float32, device=self.device).view(3, 1, 1)
        self._std = torch.tensor(self.std, dtype=torch.float32, device=self.device).view(3, 1, 1)

    @property
    def num_samples(self) -> int:
        """Images this rank sees per epoch."""
        return sum(stop - start for start, stop in self._slices())

    @property
    def global_batch_size(self) -> int:
        """Images per step over all ranks: `batch_size * world`."""
        return self.batch_size * self.shard[1]

    def __len__(self) -> int:
        return len(self._slices())

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

    def sample_indices(self, epoch: int | None = None) -> torch.Tensor:
        """Indices into the split of the images this rank yields in `epoch`, in order.

        Args:
            epoch: default: the epoch of the last iteration (`loader.epoch - 1`), or 0.
        """
        epoch = max(self.epoch - 1, 0) if epoch is None else epoch
        return self._plan(epoch)[0]

    def set_epoch(self, epoch: int) -> None:
        """Use epoch `epoch`'s order, flips and crops for the next iteration."""
        self.epoch = int(epoch)

    def _plan(self, epoch: int):
        """This epoch's order, flips and crop offsets, drawn on the CPU from (seed, epoch)."""
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        n, size = len(self.images), self.images.shape[-1]
        # Drawn for the whole split, whatever the shard, so every rank agrees with one
        # process on each image's position, flips and crop.
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        flips = offsets = None
        if self.augment:
            flips = torch.rand(n, 2, generator=generator) < 0.5  # (n, [horizontal, vertical])
            if self.crop is not None:
                offsets = torch.randint(0, size - self.crop + 1, (n, 2), generator=generator)
            if not self.flip:  # drawn all the same, so the crops are those of a flipped run
                flips = None
        if self.shard[1] > 1:  # this rank's positions, batch after batch
            slices = self._slices()
            mine = torch.cat([torch.arange(a, b) for a, b in slices]) if slices else order[:0]
            order, flips, offsets = (
                None if t is None else t[mine] for t in (order, flips, offsets)
            )
        to = lambda t: None if t is None else t.to(self.device)  # noqa: E731
        return to(order), to(flips), to(offsets)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        order, flips, offsets = self._plan(epoch)
        stop = 0
        for first, last in self._slices():
            start, stop = stop, stop + last - first  # this rank's batch within `order`
            index = order[start:stop]
            x = self.images.index_select(0, index)  # (B, 3, S, S) uint8
            if self.crop is not None:
                if offsets is not None:
                    x = _crop_each(x, offsets[start:stop], self.crop)
                else:  # centre crop, placed as torchvision's CenterCrop places it
                    top = int(round((x.shape[-2] - self.crop) / 2.0))
                    left = int(round((x.shape[-1] - self.crop) / 2.0))
                    x = x[:, :, top : top + self.crop, left : left + self.crop]
            if flips is not None:
                f = flips[start:stop]
                x = torch.where(f[:, 0].view(-1, 1, 1, 1), x.flip(3), x)  # horizontal
                x = torch.where(f[:, 1].view(-1, 1, 1, 1), x.flip(2), x)  # vertical
            # The same arithmetic as ToTensor + Normalize, so both paths agree.
            x = x.float().div_(255).sub_(self._mean).div_(self._std)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.targets.index_select(0, index)


def _crop_each(x: torch.Tensor, offsets: torch.Tensor, size: int) -> torch.Tensor:
    """A different size x size window of every image: offsets (B, 2) = (top, left)."""
    b = x.shape[0]
    steps = torch.arange(size, device=x.device)
    rows = (offsets[:, 0:1] + steps).view(b, 1, size, 1)
    cols = (offsets[:, 1:2] + steps).view(b, 1, 1, size)
    batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    channel = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return x[batch, channel, rows, cols]  # (B, C, size, size)


# ---------------------------------------------------------------------------------------
# Entry points


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    seed: int = 0,
    image_size: int = 32,
    num_classes: int | None = None,
    folder: str | os.PathLike | None = None,
    limit: int | None = None,
    cache: bool | str | os.PathLike = True,
) -> DataBundle:
    """A data set with the papers' train / val / test splits.

    Args:
        name: one of `DATASET_NAMES`.
        root: the data root holding each data set in its usual sub-folder (default:
            `$HYBRIDLIB_DATA` or `~/hybridlib/data`).
        download: download a missing data set from its official host (md5-checked).
        seed: seeds the stratified splits and `limit`'s subsample.
        image_size: side of the square images (paper A: 32).
        num_classes: how many classes; None = the paper's choice (Caltech 101: the 10
            most common; Tiny ImageNet: the first 5 ids; others: all).
        folder: for name="folder", the folder of class sub-folders.
        limit: at most this many images per split (a stratified subsample).
        cache: True = cache decoded splits under the data root (see the module
            docstring), False = never, or a folder to cache in.
    Returns:
        A `DataBundle`. Mistakes (unknown name, missing data, ...) raise `HybridError`.
    """
    if name not in DATASET_NAMES:
        raise choices_error("dataset", name, DATASET_NAMES)
    for arg, value in (("image_size", image_size), ("num_classes", num_classes), ("limit", limit)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise HybridError(f"{arg}={value!r} must be a whole number >= 1")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise HybridError(
            f"seed={seed!r} must be a whole number >= 0 (it seeds the splits), e.g. seed=0"
        )
    root_path = data_root(root)
    if num_classes is None:
        num_classes = _DEFAULT_CLASSES.get(name)
    classes, pools, source = _SOURCES[name](root_path, download, num_classes, folder)
    parts = _make_splits(pools, seed, classes)
    parts = {split: _limit(part, limit, seed) for split, part in parts.items()}
    settings = dict(
        dataset=name,
        seed=seed,
        image_size=image_size,
        classes=list(classes),
        limit=limit,
        source=source,
    )
    return DataBundle(
        name,
        classes,
        parts,
        image_size=image_size,
        seed=seed,
        limit=limit,
        source=source,
        cache_dir=None if name == "digits" else _cache_dir(root_path, cache),
        settings=settings,
    )


def cli_data(args) -> int:
    """`python -m hybridlib data NAME [--data-root DIR] [--download]`: classes and splits."""
    bundle = load_dataset(
        args.dataset,
        root=args.data_root,
        download=args.download,
        folder=getattr(args, "folder", None),
        seed=getattr(args, "seed", 0),
        num_classes=getattr(args, "num_classes", None),
    )
    print(bundle.describe())
    return 0
