"""Dataset classes in torchvision's style for the layouts torchvision does not ship.

    from hybridlib.datasets import TinyImageNet, CIFAR10Folder, Digits
    ds = TinyImageNet("~/hybridlib/data", split="train", classes=5, download=True)
    image, target = ds[0]          # a PIL RGB image and an int
    ds.classes                     # ['goldfish', 'European fire salamander', ...]

Each class follows torchvision's conventions: `root` is the data root that holds
the data set's usual sub-folder, `split`, `transform`, `target_transform`,
`download=False`, and the attributes `classes`, `targets` and `samples`. Most
users never build them directly: `hybridlib.data.load_dataset` does, and adds
the papers' splits, preprocessing and a fast in-memory loader.

Unreadable or truncated image files are not skipped: reading one raises
`HybridError` naming the file, because silently dropping images would change
the split sizes the papers report.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from torchvision.datasets import VisionDataset
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension, make_dataset
from torchvision.datasets.utils import calculate_md5, check_integrity, download_url, extract_archive

from hybridlib.errors import HybridError

__all__ = [
    "CIFAR10Folder",
    "Digits",
    "TinyImageNet",
    "download_caltech101",
    "image_folder",
    "is_image_file",
    "read_rgb",
]


def read_rgb(path: str | os.PathLike) -> Image.Image:
    """Read an image file as a fully decoded RGB PIL image.

    Grayscale (and palette, CMYK, RGBA) images become 3-channel RGB, as paper A
    does for Caltech 101's grayscale images, so every model sees 3 channels; alpha is
    dropped, as torchvision's loader does. 16-bit grayscale (PIL modes "I;16", "I") is
    scaled to 8 bits by its high byte, as Pillow reads 16-bit RGB files (32768 -> 128).

    Args:
        path: the image file.
    Returns:
        The RGB image. A missing, unreadable or truncated file raises `HybridError`.
    """
    try:
        with open(path, "rb") as f:
            image = Image.open(f)
            if image.mode.startswith("I"):  # convert() would clip every value > 255 to white
                image = _high_byte(image)
            return image.convert("RGB")  # convert() decodes the whole file, so truncation shows
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise HybridError(
            f"cannot read image file {os.fspath(path)!r} ({error}); the file is unreadable or "
            "truncated: replace it (a fresh download restores it) or delete it, then run again"
        ) from None


def _high_byte(image: Image.Image) -> Image.Image:
    """A 16-bit (or 32-bit integer) grayscale image as 8-bit "L": 0..65535 -> 0..255."""
    values = np.asarray(image).astype(np.int64)  # decodes the whole file
    return Image.fromarray((np.clip(values, 0, 65535) >> 8).astype(np.uint8), "L")


def is_image_file(path: str | os.PathLike) -> bool:
    """An image file by torchvision's extensions (`IMG_EXTENSIONS`), hidden files left out.

    A stray `.DS_Store`, `Thumbs.db` or macOS `._image_0001.jpg` is not an image.
    """
    name = os.path.basename(os.fspath(path))
    return not name.startswith(".") and has_file_allowed_extension(name, IMG_EXTENSIONS)


def image_folder(
    folder: str | os.PathLike, exclude: Sequence[str] = (), allow_empty: bool = False
) -> tuple[list[str], list[tuple[str, int]]]:
    """The class sub-folders of `folder` and their image files, as torchvision's ImageFolder.

    Class folders are sorted by name (hidden ones and `exclude` left out); files are found
    by torchvision's `make_dataset`, sorted, keeping only `is_image_file` names.

    Args:
        folder: the folder of class sub-folders.
        exclude: folder names that are not classes.
        allow_empty: keep a class folder without images (else a `HybridError`).
    Returns:
        (class names, [(path, class index), ...]).
    """
    folder = os.fspath(folder)
    with os.scandir(folder) as entries:
        classes = sorted(
            e.name
            for e in entries
            if e.is_dir() and not e.name.startswith(".") and e.name not in exclude
        )
    if not classes:
        raise HybridError(
            f"{folder} has no class folders; put the images in one sub-folder per class "
            f"(e.g. {os.path.join(folder, 'cat', '0001.jpg')})"
        )
    to_index = {c: i for i, c in enumerate(classes)}
    samples = make_dataset(folder, to_index, is_valid_file=is_image_file, allow_empty=True)
    counts = np.bincount([t for _, t in samples], minlength=len(classes))
    empty = [c for c in classes if counts[to_index[c]] == 0]
    if empty and not allow_empty:
        raise HybridError(
            f"class folder {os.path.join(folder, empty[0])} has no images"
            + (f" (nor have {len(empty) - 1} more)" if len(empty) > 1 else "")
            + f"; add images ({', '.join(IMG_EXTENSIONS)}) or remove the folder"
        )
    return classes, samples


def _not_found(name: str, looked: Path, download_hint: str) -> HybridError:
    return HybridError(
        f"{name} not found: looked for {looked}. {download_hint} Or point the data root "
        "(root=..., --data-root or $HYBRIDLIB_DATA) at the folder that holds it."
    )


class _Images(VisionDataset):
    """torchvision's item protocol over `image(index)` and `targets`."""

    targets: list[int]

    def image(self, index: int) -> Image.Image:
        raise NotImplementedError

    def __getitem__(self, index: int):
        image, target = self.image(index), self.targets[index]
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def __len__(self) -> int:
        return len(self.targets)


class _ImageFiles(_Images):
    """A data set of `(path, target)` samples read from image files as RGB."""

    samples: list[tuple[str, int]]

    def image(self, index: int) -> Image.Image:
        return read_rgb(self.samples[index][0])


class TinyImageNet(_ImageFiles):
    """Tiny ImageNet (200 classes of 64x64 images) in its original layout.

    Layout under `root`::

        tiny-imagenet-200/wnids.txt, words.txt
        tiny-imagenet-200/train/<wnid>/images/*.JPEG
        tiny-imagenet-200/val/images/*.JPEG + val/val_annotations.txt

    Args:
        root: the data root holding `tiny-imagenet-200/`.
        split: "train" (the training folders) or "val" (the official validation images).
        classes: how many class ids to use, the first ones in sorted order (default 5,
            paper A's setting), a list of wnids, or None for all.
        transform, target_transform: applied to the PIL image / the int target.
        download: download the official archive (248 MB, md5-checked) if missing. The
            archive is extracted into a temporary folder and renamed into place only when
            complete, so an interrupted download never leaves a tree that looks valid.
    """

    base_folder = "tiny-imagenet-200"
    url = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
    filename = "tiny-imagenet-200.zip"
    md5 = "90528d7ca1a48142e341f4ef8d21d0de"
    splits = ("train", "val")

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        classes: int | Sequence[str] | None = 5,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        download: bool = False,
    ) -> None:
        super().__init__(os.fspath(Path(root).expanduser()), transform, target_transform)
        if split not in self.splits:
            from hybridlib.errors import choices_error

            raise choices_error("split", split, self.splits)
        self.split = split
        if download:
            self.download()
        if not self._check_exists():
            raise _not_found(
                "tiny-imagenet",
                self.folder / "wnids.txt",
                f"Pass download=True (command line: --download) to download {self.url}.",
            )
        all_wnids = sorted((self.folder / "wnids.txt").read_text().split())
        self.wnids = self._select(all_wnids, classes)
        words = {}
        for line in (self.folder / "words.txt").read_text().splitlines():
            wnid, _, text = line.partition("\t")
            words[wnid] = text.strip()
        # Human-readable names: the first synonym in words.txt ("goldfish, Carassius auratus").
        self.class_descriptions = [words.get(w, w) for w in self.wnids]
        self.classes = [
            d.split(",")[0].strip() or w
            for d, w in zip(self.class_descriptions, self.wnids, strict=True)
        ]
        self.class_to_idx = {w: i for i, w in enumerate(self.wnids)}
        self.samples = self._make_samples()
        self.targets = [t for _, t in self.samples]

    @property
    def folder(self) -> Path:
        return Path(self.root) / self.base_folder

    def _check_exists(self) -> bool:
        return (self.folder / "wnids.txt").is_file() and (self.folder / "train").is_dir()

    @staticmethod
    def _select(all_wnids: list[str], classes) -> list[str]:
        if classes is None:
            return all_wnids
        if isinstance(classes, int):
            if not 1 <= classes <= len(all_wnids):
                raise HybridError(
                    f"num_classes={classes} but tiny-imagenet here has {len(all_wnids)} class "
                    f"ids in wnids.txt; choose num_classes between 1 and {len(all_wnids)}"
                )
            return all_wnids[:classes]
        unknown = [w for w in classes if w not in all_wnids]
        if unknown:
            raise HybridError(f"unknown tiny-imagenet class ids {unknown}; see wnids.txt")
        return list(classes)

    def _make_samples(self) -> list[tuple[str, int]]:
        samples = []
        if self.split == "train":
            for wnid in self.wnids:
                folder = self.folder / "train" / wnid / "images"
                files = [
                    f for f in sorted(folder.iterdir()) if f.is_file() and is_image_file(f)
                ] if folder.is_dir() else []  # fmt: skip
                if not files:
                    raise HybridError(
                        f"tiny-imagenet is incomplete: no images in {folder}; delete "
                        f"{self.folder} and download it again (download=True)"
                    )
                samples += [(os.fspath(f), self.class_to_idx[wnid]) for f in files]
        else:
            annotations = self.folder / "val" / "val_annotations.txt"
            if not annotations.is_file():
                raise _not_found("tiny-imagenet val split", annotations, "Download it again.")
            for line in annotations.read_text().splitlines():
                parts = line.split("\t")
                if len(parts) >= 2 and parts[1] in self.class_to_idx:
                    path = self.folder / "val" / "images" / parts[0]
                    samples.append((os.fspath(path), self.class_to_idx[parts[1]]))
            samples.sort()
            missing = [path for path, _ in samples if not os.path.isfile(path)]
            if missing:
                raise HybridError(
                    f"tiny-imagenet is incomplete: {len(missing):,} images listed in "
                    f"{annotations} are missing (e.g. {missing[0]}); delete {self.folder} "
                    "and download it again (download=True)"
                )
        return samples

    def download(self) -> None:
        """Download and extract the official archive unless the data set is already here."""
        if self._check_exists():
            return
        root = Path(self.root)
        root.mkdir(parents=True, exist_ok=True)
        archive = root / self.filename
        if not check_integrity(archive, self.md5):
            download_url(self.url, os.fspath(root), self.filename)  # md5 checked just below
            actual = calculate_md5(archive)
            if actual != self.md5:
                # A partial or corrupt file: remove it so the next attempt starts afresh.
                archive.unlink(missing_ok=True)
                raise HybridError(
                    f"checksum mismatch for {archive}: expected md5 {self.md5}, got {actual}. "
                    "The download is partial or corrupt and was deleted; run again with "
                    "download=True (command line: --download)"
                )
        _extract_atomically(archive, root, self.base_folder, required=("wnids.txt", "train"))

    def extra_repr(self) -> str:
        return f"Split: {self.split}\nClasses: {len(self.classes)} ({', '.join(self.wnids[:5])}...)"


def _extract_atomically(archive: Path, root: Path, folder: str, required: Sequence[str]) -> None:
    """Extract `archive` so that `root/folder` appears only once it is complete.

    The archive is unpacked into a hidden temporary folder next to the target and
    the finished folder is renamed into place (a rename is atomic on one file
    system). If extraction fails, the temporary folder is removed and nothing that
    looks like the data set is left behind.
    """
    partial = Path(tempfile.mkdtemp(prefix=f".{folder}.partial-", dir=root))
    try:
        try:
            extract_archive(os.fspath(archive), os.fspath(partial))
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise HybridError(
                f"cannot extract {archive} ({error}); delete it and run again with download=True"
            ) from None
        extracted = partial / folder
        missing = [name for name in required if not (extracted / name).exists()]
        if missing:
            raise HybridError(
                f"{archive} does not hold {folder}/{', '.join(missing)}; delete it and run "
                "again with download=True"
            )
        target = root / folder
        if target.exists():  # an earlier, incomplete tree: replace it
            shutil.rmtree(target)
        os.replace(extracted, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def download_caltech101(root: str | os.PathLike) -> None:
    """Download Caltech 101 into `root/caltech101/101_ObjectCategories` (if missing).

    torchvision's `Caltech101(download=True)` fetches and md5-checks the archive;
    it runs in a temporary folder here and the finished category tree is renamed
    into place, so an interrupted download never leaves a tree that looks valid.

    Args:
        root: the data root.
    """
    from torchvision.datasets import Caltech101

    root = Path(root).expanduser()
    target = root / "caltech101" / "101_ObjectCategories"
    if target.is_dir():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=".caltech101.partial-", dir=target.parent))
    try:
        try:
            Caltech101(os.fspath(partial), download=True)
        except RuntimeError as error:
            raise HybridError(
                f"the Caltech 101 download failed its checksum or could not be extracted "
                f"({error}); run again with download=True"
            ) from None
        os.replace(partial / "caltech101" / "101_ObjectCategories", target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


class CIFAR10Folder(_ImageFiles):
    """CIFAR-10 as an image folder: `cifar10-jpg/{train,test}/<class>/*.jpg`.

    The same 32x32 images as torchvision's `CIFAR10` (re-encoded as JPEG, which
    changes pixel values slightly), with the same class names and order.

    Args:
        root: the data root holding `cifar10-jpg/`.
        split: "train" or "test".
        transform, target_transform: applied to the PIL image / the int target.
    """

    base_folder = "cifar10-jpg"
    splits = ("train", "test")

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable | None = None,
        target_transform: Callable | None = None,
    ) -> None:
        super().__init__(os.fspath(Path(root).expanduser()), transform, target_transform)
        if split not in self.splits:
            from hybridlib.errors import choices_error

            raise choices_error("split", split, self.splits)
        self.split = split
        folder = Path(self.root) / self.base_folder / split
        if not folder.is_dir():
            raise _not_found("cifar10 (image folder)", folder, "")
        self.classes, self.samples = image_folder(folder)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.targets = [t for _, t in self.samples]

    def extra_repr(self) -> str:
        return f"Split: {self.split}"


class Digits(_Images):
    """scikit-learn's handwritten digits (1,797 images of 8x8 gray levels 0..16).

    Embedded in scikit-learn, so it works with no network and no data root. The
    gray levels are rescaled to 0..255 and each image is returned as an 8x8 RGB
    PIL image (the three channels equal); `load_dataset` resizes it to 32x32 like
    every other data set.

    Args:
        transform, target_transform: applied to the PIL image / the int target.
    """

    def __init__(
        self, transform: Callable | None = None, target_transform: Callable | None = None
    ) -> None:
        from sklearn.datasets import load_digits

        super().__init__(None, transform, target_transform)
        bunch = load_digits()
        # 0..16 gray levels -> 0..255 bytes.
        self.data = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
        self.targets = [int(t) for t in bunch.target]
        self.classes = [str(int(c)) for c in bunch.target_names]

    def image(self, index: int) -> Image.Image:
        """The `index`-th digit as an 8x8 RGB PIL image."""
        return Image.fromarray(self.data[index]).convert("RGB")
