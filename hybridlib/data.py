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
  sorted order (paper A uses five classes but does not say which: these are the
  course's choice; `num_classes` picks another count) and only the training folders,
  as in paper A: 1,800 / 200 / 500.
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
  of epoch `e` depend only on `(seed, e)`. (Training under torchrun gives every rank
  its slice of each batch: `hybridlib.engine.loading.rank_loader`.)

Decoding: a bundle decodes each split once, when it is first needed. `load_dataset(...)`
called as above decodes again in every new process (CIFAR-10's 60,000 images take a
minute or so); `cache=` takes somewhere to keep the decoded splits between runs (see
`SplitCache`). The command line, the dashboard and the grids pass
`hybridlib.engine.cache.DiskCache`: one checked file per split under
`<data root>/.hybridlib-cache/`, so their later runs start in milliseconds.

Errors a user can fix raise `HybridError`: an unknown name, missing data (the message
says where it looked and how to download), a corrupt download, a class subset larger than
what is there, a class too small for a test split. An unreadable or truncated image file
stops the decoding with its name: it is not skipped, since skipping would silently
change the split sizes. `bundle.check()` decodes every split (a run calls it before its
first epoch) and `bundle.dataset(split)` decodes its split once, so a bad file shows at
the start. `bundle.split_record()` lists each split's images (a run saves it as
`splits.json`) and `bundle.split_changes(record)` says, in one line, what differs.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.datasets import CIFAR10

from hybridlib.datasets import (
    CIFAR10Folder,
    Digits,
    ImageFolder,
    TinyImageNet,
    download_caltech101,
    read_rgb,
)
from hybridlib.errors import HybridError, choices_error
from hybridlib.paths import data_root
from hybridlib.progress import bar

__all__ = [
    "DATASET_NAMES",
    "SPLITS",
    "DataBundle",
    "DeviceLoader",
    "SplitCache",
    "SplitDataset",
    "SplitImages",
    "cli_data",
    "load_dataset",
]

DATASET_NAMES = ("cifar10", "caltech101", "tiny-imagenet", "digits", "folder")
SPLITS = ("train", "val", "test")
TEST_FRACTION = 0.2  # paper A: stratified 20 % test split ...
VAL_FRACTION = 0.1  # ... then 10 % of the rest for validation
SPLIT_RECORD_FORMAT = 1  # the layout of a run's splits.json
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
class SplitImages:
    """The images of one split before decoding: an id, a label and a reader for each."""

    keys: list[str]  # a stable id per image: its file path, or "<source>#<n>"
    targets: np.ndarray  # int64 class indices
    load: Callable[[int], Image.Image]  # position -> RGB PIL image
    files: bool = False  # keys are file paths (a cache may stat them)

    def __len__(self) -> int:
        return len(self.keys)

    def subset(self, index) -> SplitImages:
        index = np.asarray(index, dtype=np.int64)
        keys = [self.keys[i] for i in index]
        return SplitImages(keys, self.targets[index], _Indexed(self.load, index), self.files)


def _file_part(samples: Sequence[tuple[str, int]]) -> SplitImages:
    paths = [os.fspath(p) for p, _ in samples]
    targets = np.array([t for _, t in samples], dtype=np.int64)
    return SplitImages(paths, targets, _FileLoader(paths), files=True)


def _array_part(source: str, targets, array: np.ndarray) -> SplitImages:
    keys = [f"{source}#{i}" for i in range(len(targets))]
    return SplitImages(keys, np.asarray(targets, dtype=np.int64), _ArrayLoader(array))


def _keep_classes(part: SplitImages, keep: Sequence[int]) -> SplitImages:
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
    part = _array_part("sklearn-digits", ds.targets, ds.data)
    k = _check_num_classes("digits", num_classes, len(ds.classes))
    return ds.classes[:k], {"all": _keep_classes(part, range(k))}, "sklearn.datasets.load_digits"


_CIFAR10_FILES = ("batches.meta", *(f"data_batch_{i}" for i in range(1, 6)), "test_batch")


def _cifar10(root: Path, download: bool, num_classes, folder):
    batches, jpg = root / "cifar-10-batches-py", root / "cifar10-jpg"
    # The folder that holds data wins: an empty or half-copied pickle folder must not
    # hide a complete image folder.
    present = [f for f in _CIFAR10_FILES if (batches / f).is_file()]
    has_jpg = (jpg / "train").is_dir() and (jpg / "test").is_dir()
    if present and len(present) < len(_CIFAR10_FILES) and not has_jpg and not download:
        missing = [f for f in _CIFAR10_FILES if f not in present]
        raise HybridError(
            f"{batches} is incomplete: {', '.join(missing)} missing; delete it and run "
            "again with download=True (command line: --download)"
        )
    if len(present) == len(_CIFAR10_FILES) or (download and not has_jpg):
        classes, parts = _cifar10_batches(root, batches, download)
        source = os.fspath(batches)
    elif jpg.is_dir():  # the image folder (or a half-made one: CIFAR10Folder says what lacks)
        classes, parts = _cifar10_jpg(root, jpg)
        source = os.fspath(jpg)
    else:
        raise HybridError(
            f"cifar10 not found: looked for {batches} (official pickle batches) and {jpg} "
            "(image folder). Pass download=True (command line: --download) to download it "
            "(170 MB) from https://www.cs.toronto.edu/~kriz/cifar.html, or point the data "
            "root (root=..., --data-root or $HYBRIDLIB_DATA) at the folder that holds it."
        )
    k = _check_num_classes("cifar10", num_classes, len(classes))
    return classes[:k], {s: _keep_classes(p, range(k)) for s, p in parts.items()}, source


def _cifar10_batches(root: Path, batches: Path, download: bool):
    """The official pickle batches, read (and md5-checked) by torchvision's `CIFAR10`."""
    try:
        train = CIFAR10(os.fspath(root), train=True, download=download)
        test = CIFAR10(os.fspath(root), train=False)
    except RuntimeError as error:
        raise HybridError(
            f"cifar10 in {batches} failed torchvision's checksum check ({error}): a partial "
            f"or corrupt download. Delete {batches} and run again with download=True "
            "(command line: --download)"
        ) from None
    source = os.fspath(batches)
    parts = {
        split: _array_part(f"{source}:{split}", ds.targets, ds.data)
        for split, ds in (("train", train), ("test", test))
    }
    return list(train.classes), parts


def _cifar10_jpg(root: Path, jpg: Path):
    """The same images as `cifar10-jpg/{train,test}/<class>/*.jpg`."""
    train, test = CIFAR10Folder(root, "train"), CIFAR10Folder(root, "test")
    if train.classes != test.classes:
        raise HybridError(
            f"{jpg}: train/ and test/ have different class folders "
            f"({train.classes} vs {test.classes}); give both the same classes"
        )
    return train.classes, {"train": _file_part(train.samples), "test": _file_part(test.samples)}


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
    listing = ImageFolder(categories, exclude=("BACKGROUND_Google",), allow_empty=True)
    names, samples = listing.classes, listing.samples
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
    listing = ImageFolder(path)
    k = _check_num_classes("folder", num_classes, len(listing.classes))
    samples = [(p, t) for p, t in listing.samples if t < k]
    return listing.classes[:k], {"all": _file_part(samples)}, os.fspath(path)


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
    part: SplitImages, fraction: float, seed: int, split: str, classes, strict: bool = True
) -> tuple[SplitImages, SplitImages]:
    """Stratified split of `part` into (rest, held out `fraction`).

    strict: a class that would get no held-out image is an error (the test split).
    Otherwise (the validation split of a very small data set) a plain seeded split is
    used where stratification is impossible.
    """
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


def _make_splits(pools: dict[str, SplitImages], seed: int, classes) -> dict[str, SplitImages]:
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


def _limit(part: SplitImages, limit: int | None, seed: int) -> SplitImages:
    """At most `limit` images, a stratified subsample where possible."""
    if limit is None or len(part) <= limit:
        return part
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


def _split_record(bundle: DataBundle) -> dict:
    splits = {}
    for split in SPLITS:
        part = bundle.split_images(split)
        ids = _relative_ids(part.keys, bundle.source)
        splits[split] = {
            "size": len(part),
            "sha256": _ids_digest(ids, part.targets),
            "class_counts": bundle.class_counts(split),
            "files": ids,
        }
    return {
        "format": SPLIT_RECORD_FORMAT,
        "dataset": bundle.name,
        "source": bundle.source,
        "classes": list(bundle.classes),
        "splits": splits,
    }


def _split_changes(bundle: DataBundle, record: dict) -> str | None:
    if list(record.get("classes", [])) != list(bundle.classes):
        return f"the classes changed from {record.get('classes')} to {bundle.classes}"
    old = record.get("splits", {})
    changes = []
    for split in SPLITS:
        part, was = bundle.split_images(split), old.get(split, {})
        ids = _relative_ids(part.keys, bundle.source)
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


# ---------------------------------------------------------------------------------------
# The bundle


class SplitCache(Protocol):
    """What `load_dataset(cache=...)` takes: somewhere to keep decoded splits between runs.

    `read` returns the split's (uint8 images (N, 3, S, S), int64 targets (N,)) as `write`
    stored them, or None when it has nothing valid for this bundle's split (then the split
    is decoded and written). `hybridlib.engine.cache.DiskCache` is the command line's.
    """

    def read(self, bundle: DataBundle, split: str) -> tuple[torch.Tensor, torch.Tensor] | None: ...

    def write(
        self, bundle: DataBundle, split: str, images: torch.Tensor, targets: torch.Tensor
    ) -> None: ...


class SplitDataset(Dataset):
    """One split as a torchvision-style Dataset: decode and transform one image at a time.

    Items are `(x, y)`: x a float32 tensor (3, S, S) after the transform, y an int.
    Attributes: `classes`, `targets`, `transform`.
    """

    def __init__(self, part: SplitImages, classes: list[str], transform: Callable, name=""):
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
    computed on the training split), `seed`, `limit`, `source`, `cache`.
    """

    def __init__(self, name, classes, parts, *, image_size, seed, limit, source, cache=None):
        self.name, self.classes, self.image_size = name, list(classes), image_size
        self.seed, self.limit, self.source, self.cache = seed, limit, source, cache
        self._parts: dict[str, SplitImages] = parts
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

    def split_images(self, split: str) -> SplitImages:
        """The images of `split` before decoding: `keys`, `targets`, `load(i)`."""
        if split not in self._parts:
            raise choices_error("split", split, SPLITS)
        return self._parts[split]

    def class_counts(self, split: str) -> list[int]:
        """Images per class in `split`, in class order."""
        return np.bincount(self.split_images(split).targets, minlength=self.num_classes).tolist()

    def split_record(self) -> dict:
        """The images of each split, as a run records them (its `splits.json`).

        Returns:
            {"format", "dataset", "source", "classes", "splits": {split: {"size",
            "sha256", "class_counts", "files"}}}: "files" are the images' ids (paths
            relative to the source folder), in split order; "sha256" digests the ids and
            their labels.
        """
        return _split_record(self)

    def split_changes(self, record: dict) -> str | None:
        """How this bundle's splits differ from a `split_record()`, or None if they agree.

        Returns:
            One line: the classes that changed, or per changed split how many images were
            added and removed, with an example of each, and how many of the test images
            were training images in the record.
        """
        return _split_changes(self, record)

    def check(self) -> None:
        """Decode every image of every split now (or read it from the cache).

        A run calls this before its first epoch, so an unreadable image file stops it
        at the start, naming the file, instead of after the last epoch.
        """
        for split in SPLITS:
            self.tensors(split)

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split, decoded once (or read from `cache`; written to it if missing).

        Returns:
            (uint8 images (N, 3, S, S), int64 targets (N,)), both on the CPU.
        """
        part = self.split_images(split)
        if split not in self._tensors:
            loaded = self.cache.read(self, split) if self.cache is not None else None
            if loaded is None:
                loaded = self._decode(part, split)
                if self.cache is not None:
                    self.cache.write(self, split, *loaded)
            self._tensors[split] = loaded
        return self._tensors[split]

    @property
    def mean(self) -> tuple[float, ...]:
        return self._mean_std()[0]

    @property
    def std(self) -> tuple[float, ...]:
        return self._mean_std()[1]

    def _decode(self, part: SplitImages, split: str):
        size = self.image_size
        images = torch.empty((len(part), 3, size, size), dtype=torch.uint8)
        progress = len(part) >= 1000
        for i in bar(
            range(len(part)), desc=f"decoding {self.name}/{split}", unit="image", progress=progress
        ):
            array = np.array(self._resize(part.load(i)), dtype=np.uint8)  # (S, S, 3)
            images[i] = torch.from_numpy(array).permute(2, 0, 1)  # (S, S, 3) -> (3, S, S)
        return images, torch.from_numpy(part.targets.astype(np.int64))

    def _mean_std(self):
        if self._stats is None:
            self._stats = _channel_stats(self.tensors("train")[0])
        return self._stats

    def dataset(
        self, split: str, *, augment: bool | None = None, crop: int | None = None, flip: bool = True
    ) -> SplitDataset:
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
        part = self.split_images(split)
        augment = split == "train" if augment is None else bool(augment)
        crop = _check_crop(crop, self.image_size)
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
            channels_last: return batches in channels-last memory format.
            flip: whether augmenting flips (False: random crops only, as paper B).
        Returns:
            A `DeviceLoader`.
        """
        images, targets = self._tensors_on(split, torch.device(device))
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
            crop=_check_crop(crop, self.image_size),
            seed=seed,
            drop_last=drop_last,
            channels_last=channels_last,
            flip=bool(flip),
        )

    def _tensors_on(self, split: str, device: torch.device):
        images, targets = self.tensors(split)
        if device.type == "cpu":
            return images, targets
        # One copy of each split per device, so the loaders made for every evaluation do
        # not copy the images again.
        if (split, device) not in self._on_device:
            self._on_device[split, device] = (images.to(device), targets.to(device))
        return self._on_device[split, device]

    def describe(self) -> str:
        """A short text: source, classes and images per class in each split."""
        return _describe(self)

    def __repr__(self) -> str:
        return (
            f"DataBundle(name={self.name!r}, num_classes={self.num_classes}, "
            f"image_size={self.image_size}, sizes={self.sizes})"
        )


def _check_crop(crop, image_size: int):
    if crop is None:
        return None
    if not isinstance(crop, int) or not 1 <= crop <= image_size:
        raise HybridError(
            f"crop={crop!r} must be a whole number from 1 to image_size={image_size} "
            "(paper B uses 24), or None"
        )
    return crop


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) of uint8 images (N, 3, S, S), on the 0..1 scale."""
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
    return tuple(float(m) for m in mean / 255), tuple(float(s) for s in std / 255)


def _describe(bundle: DataBundle) -> str:
    s = bundle.sizes
    lines = [
        f"{bundle.name}: {bundle.num_classes} classes, "
        f"{bundle.image_size}x{bundle.image_size} RGB, seed {bundle.seed}"
        + (f", limit {bundle.limit}" if bundle.limit else ""),
        f"source: {bundle.source}",
        f"splits: train {s['train']:,} / val {s['val']:,} / test {s['test']:,}",
        "",
    ]
    width = max(len("class"), *(len(c) for c in bundle.classes))
    lines.append(f"{'class':<{width}}  {'train':>6}  {'val':>6}  {'test':>6}")
    counts = [bundle.class_counts(split) for split in SPLITS]
    for c, name in enumerate(bundle.classes):
        lines.append(f"{name:<{width}}  " + "  ".join(f"{n[c]:>6}" for n in counts))
    return "\n".join(lines)


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
    channels_last: bool = False
    flip: bool = True  # while augmenting: random flips (False: crops only, paper B)
    epoch: int = field(default=0)

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise HybridError(f"batch_size={self.batch_size!r} must be a whole number >= 1")
        self.device = torch.device(self.device)
        # The whole split moves to the device once, as uint8 (a quarter of float32's size).
        self.images = self.images.to(self.device)
        self.targets = self.targets.to(self.device)
        self._mean = torch.tensor(self.mean, dtype=torch.float32, device=self.device).view(3, 1, 1)
        self._std = torch.tensor(self.std, dtype=torch.float32, device=self.device).view(3, 1, 1)

    @property
    def num_samples(self) -> int:
        """Images yielded per epoch."""
        return sum(stop - start for start, stop in self._batches())

    def __len__(self) -> int:
        return len(self._batches())

    def _batches(self) -> list[tuple[int, int]]:
        """(start, stop) positions of each batch in the epoch's order."""
        n, size = len(self.images), self.batch_size
        last = n - n % size if self.drop_last else n  # a short last batch is dropped
        return [(start, min(start + size, n)) for start in range(0, last, size)]

    def set_epoch(self, epoch: int) -> None:
        """Use epoch `epoch`'s order, flips and crops for the next iteration."""
        self.epoch = int(epoch)

    def sample_indices(self, epoch: int | None = None) -> torch.Tensor:
        """Indices into the split of the images in `epoch`'s order.

        Args:
            epoch: default: the epoch of the last iteration (`loader.epoch - 1`), or 0.
        """
        epoch = max(self.epoch - 1, 0) if epoch is None else epoch
        return self._plan(epoch)[0]

    def _plan(self, epoch: int):
        """This epoch's order, flips and crop offsets, drawn on the CPU from (seed, epoch)."""
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        n, size = len(self.images), self.images.shape[-1]
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        flips = offsets = None
        if self.augment:
            flips = torch.rand(n, 2, generator=generator) < 0.5  # (n, [horizontal, vertical])
            if self.crop is not None:
                offsets = torch.randint(0, size - self.crop + 1, (n, 2), generator=generator)
            if not self.flip:  # drawn all the same, so the crops are those of a flipped run
                flips = None
        return tuple(None if t is None else t.to(self.device) for t in (order, flips, offsets))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        order, flips, offsets = self._plan(epoch)
        for start, stop in self._batches():
            index = order[start:stop]
            x = self.images.index_select(0, index)  # (B, 3, S, S) uint8
            if self.crop is not None:
                x = _crop(x, self.crop, None if offsets is None else offsets[start:stop])
            if flips is not None:
                x = _flip(x, flips[start:stop])
            # The same arithmetic as ToTensor + Normalize, so both paths agree.
            x = x.float().div_(255).sub_(self._mean).div_(self._std)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.targets.index_select(0, index)


def _crop(x: torch.Tensor, size: int, offsets: torch.Tensor | None) -> torch.Tensor:
    """size x size windows: at offsets (B, 2) = (top, left), or the centre one for None."""
    if offsets is not None:
        return _crop_each(x, offsets, size)
    # Placed as torchvision's CenterCrop places it.
    top = int(round((x.shape[-2] - size) / 2.0))
    left = int(round((x.shape[-1] - size) / 2.0))
    return x[:, :, top : top + size, left : left + size]


def _crop_each(x: torch.Tensor, offsets: torch.Tensor, size: int) -> torch.Tensor:
    """A different size x size window of every image: offsets (B, 2) = (top, left)."""
    b = x.shape[0]
    steps = torch.arange(size, device=x.device)
    rows = (offsets[:, 0:1] + steps).view(b, 1, size, 1)
    cols = (offsets[:, 1:2] + steps).view(b, 1, 1, size)
    batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    channel = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return x[batch, channel, rows, cols]  # (B, C, size, size)


def _flip(x: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Flip each image where flips (B, 2) = (horizontal, vertical) says so."""
    x = torch.where(flips[:, 0].view(-1, 1, 1, 1), x.flip(3), x)  # horizontal
    return torch.where(flips[:, 1].view(-1, 1, 1, 1), x.flip(2), x)  # vertical


# ---------------------------------------------------------------------------------------
# Entry points


def _check_arguments(name, seed, image_size, num_classes, limit, cache) -> None:
    if name not in DATASET_NAMES:
        raise choices_error("dataset", name, DATASET_NAMES)
    for arg, value in (("image_size", image_size), ("num_classes", num_classes), ("limit", limit)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise HybridError(f"{arg}={value!r} must be a whole number >= 1")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise HybridError(
            f"seed={seed!r} must be a whole number >= 0 (it seeds the splits), e.g. seed=0"
        )
    if cache is not None and not (hasattr(cache, "read") and hasattr(cache, "write")):
        raise HybridError(
            f"cache={cache!r} must be None (decode every time) or an object with read() and "
            "write() (see hybridlib.data.SplitCache), e.g. hybridlib.engine.cache.DiskCache"
        )


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
    cache: SplitCache | None = None,
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
        cache: where decoded splits are kept between runs (a `SplitCache`); None decodes
            them in every new process. The command line passes
            `hybridlib.engine.cache.DiskCache` (`hybridlib.engine.loading.load_bundle`).
    Returns:
        A `DataBundle`. Mistakes (unknown name, missing data, ...) raise `HybridError`.
    """
    _check_arguments(name, seed, image_size, num_classes, limit, cache)
    if num_classes is None:
        num_classes = _DEFAULT_CLASSES.get(name)
    classes, pools, source = _SOURCES[name](data_root(root), download, num_classes, folder)
    parts = _make_splits(pools, seed, classes)
    parts = {split: _limit(part, limit, seed) for split, part in parts.items()}
    return DataBundle(
        name,
        classes,
        parts,
        image_size=image_size,
        seed=seed,
        limit=limit,
        source=source,
        cache=cache,
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
