"""Dataset classes in torchvision's style for the layouts torchvision does not ship.

    from hybridlib.datasets import TinyImageNet, CIFAR10Folder, Digits, ImageFolder
    ds = TinyImageNet("~/hybridlib/data", split="train", classes=5, download=True)
    image, target = ds[0]          # a PIL RGB image and an int
    ds.classes                     # ['goldfish', 'European fire salamander', ...]
    pets = ImageFolder("~/pets")   # pets/cat/*.jpg, pets/dog/*.jpg: classes ['cat', 'dog']

Each class follows torchvision's conventions: `root` is the data root that holds
the data set's usual sub-folder, `split`, `transform`, `target_transform`,
`download=False`, and the attributes `classes`, `targets` and `samples`.
`ImageFolder` is torchvision's, with its extension points used rather than copied:
`find_classes` leaves out hidden folders, `is_valid_file` hidden and non-image files,
and the loader reads every image as RGB. Most users never build these classes
directly: `hybridlib.data.load_dataset` does, and adds the papers' splits,
preprocessing and a fast in-memory loader.

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
import torchvision.datasets
from PIL import Image, UnidentifiedImageError
from sklearn.datasets import load_digits
from torchvision.datasets import Caltech101, VisionDataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, has_file_allowed_extension
from torchvision.datasets.utils import calculate_md5, check_integrity, download_url, extract_archive

from hybridlib.errors import HybridError, choices_error

__all__ = [
    "CIFAR10Folder",
    "Digits",
    "ImageFolder",
    "TinyImageNet",
    "download_caltech101",
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


class ImageFolder(torchvision.datasets.ImageFolder):
    """torchvision's `ImageFolder` that reads RGB with `read_rgb` and skips what is not an image.

    Class folders are torchvision's `find_classes` less hidden ones (`.ipynb_checkpoints`)
    and `exclude`; files are torchvision's `make_dataset` listing (sorted) of the names
    `is_image_file` accepts, so a stray `.DS_Store` or `notes.txt` is left out.

    Args:
        root: the folder of class sub-folders.
        exclude: folder names that are not classes (Caltech 101's `BACKGROUND_Google`).
        allow_empty: keep a class folder without images (else a `HybridError`).
        transform, target_transform: applied to the PIL image / the int target.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        exclude: Sequence[str] = (),
        allow_empty: bool = False,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
    ) -> None:
        self.exclude = tuple(exclude)  # find_classes below runs inside super().__init__
        super().__init__(
            os.fspath(root),
            transform,
            target_transform,
            loader=read_rgb,
            is_valid_file=is_image_file,
            allow_empty=True,  # empty classes get the message below, naming the fix
        )
        if not allow_empty:
            self._check_not_empty()

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        try:
            found, _ = find_classes(directory)
        except FileNotFoundError:  # no sub-folder at all
            found = []
        classes = [c for c in found if not c.startswith(".") and c not in self.exclude]
        if not classes:
            raise HybridError(
                f"{directory} has no class folders; put the images in one sub-folder per class "
                f"(e.g. {os.path.join(directory, 'cat', '0001.jpg')})"
            )
        return classes, {c: i for i, c in enumerate(classes)}

    def _check_not_empty(self) -> None:
        counts = np.bincount(self.targets, minlength=len(self.classes))
        empty = [c for c, n in zip(self.classes, counts, strict=True) if n == 0]
        if empty:
            raise HybridError(
                f"class folder {os.path.join(self.root, empty[0])} has no images"
                + (f" (nor have {len(empty) - 1} more)" if len(empty) > 1 else "")
                + f"; add images ({', '.join(IMG_EXTENSIONS)}) or remove the folder"
            )


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
            raise choices_error("split", split, self.splits)
        self.split = split
        if download:
            self.download()
        if not self._check_exists():
            hint = f"Pass download=True (command line: --download) to download {self.url}."
            raise _not_found("tiny-imagenet", self.folder / "wnids.txt", hint)
        self.wnids = _select_wnids(sorted((self.folder / "wnids.txt").read_text().split()), classes)
        self.class_descriptions, self.classes = _class_names(self.folder / "words.txt", self.wnids)
        self.class_to_idx = {w: i for i, w in enumerate(self.wnids)}
        if split == "train":
            self.samples = _train_samples(self.folder, self.class_to_idx)
        else:
            self.samples = _val_samples(self.folder, self.class_to_idx)
        self.targets = [t for _, t in self.samples]

    @property
    def folder(self) -> Path:
        return Path(self.root) / self.base_folder

    def _check_exists(self) -> bool:
        return (self.folder / "wnids.txt").is_file() and (self.folder / "train").is_dir()

    def download(self) -> None:
        """Download and extract the official archive unless the data set is already here."""
        if not self._check_exists():
            root = Path(self.root)
            archive = _download_checked(self.url, root, self.filename, self.md5)
            _extract_atomically(archive, root, self.base_folder, required=("wnids.txt", "train"))

    def extra_repr(self) -> str:
        return f"Split: {self.split}\nClasses: {len(self.classes)} ({', '.join(self.wnids[:5])}...)"


def _select_wnids(all_wnids: list[str], classes: int | Sequence[str] | None) -> list[str]:
    """The class ids `TinyImageNet(classes=...)` asks for, from the sorted `wnids.txt`."""
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


def _class_names(words_file: Path, wnids: list[str]) -> tuple[list[str], list[str]]:
    """(descriptions, names) of `wnids`: words.txt's text and its first synonym.

    words.txt lists every ImageNet id: "n01443537<TAB>goldfish, Carassius auratus" gives
    the name "goldfish".
    """
    words = {}
    for line in words_file.read_text().splitlines():
        wnid, _, text = line.partition("\t")
        words[wnid] = text.strip()
    descriptions = [words.get(w, w) for w in wnids]
    names = [d.split(",")[0].strip() or w for d, w in zip(descriptions, wnids, strict=True)]
    return descriptions, names


def _train_samples(folder: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """`train/<wnid>/images/*`, sorted, image files only; a class without images is an error."""
    samples = []
    for wnid, target in class_to_idx.items():
        images = folder / "train" / wnid / "images"
        files = [
            f for f in sorted(images.iterdir()) if f.is_file() and is_image_file(f)
        ] if images.is_dir() else []  # fmt: skip
        if not files:
            raise HybridError(
                f"tiny-imagenet is incomplete: no images in {images}; delete "
                f"{folder} and download it again (download=True)"
            )
        samples += [(os.fspath(f), target) for f in files]
    return samples


def _val_samples(folder: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """The official validation images of the chosen classes, from `val_annotations.txt`."""
    annotations = folder / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise _not_found("tiny-imagenet val split", annotations, "Download it again.")
    samples = []
    for line in annotations.read_text().splitlines():
        parts = line.split("\t")  # file, wnid, box
        if len(parts) >= 2 and parts[1] in class_to_idx:
            path = folder / "val" / "images" / parts[0]
            samples.append((os.fspath(path), class_to_idx[parts[1]]))
    samples.sort()
    missing = [path for path, _ in samples if not os.path.isfile(path)]
    if missing:
        raise HybridError(
            f"tiny-imagenet is incomplete: {len(missing):,} images listed in "
            f"{annotations} are missing (e.g. {missing[0]}); delete {folder} "
            "and download it again (download=True)"
        )
    return samples


def _download_checked(url: str, root: Path, filename: str, md5: str) -> Path:
    """`root/filename`, downloaded from `url` unless a copy with the right md5 is there."""
    root.mkdir(parents=True, exist_ok=True)
    archive = root / filename
    if not check_integrity(archive, md5):
        download_url(url, os.fspath(root), filename)  # md5 checked just below
        actual = calculate_md5(archive)
        if actual != md5:
            # A partial or corrupt file: remove it so the next attempt starts afresh.
            archive.unlink(missing_ok=True)
            raise HybridError(
                f"checksum mismatch for {archive}: expected md5 {md5}, got {actual}. "
                "The download is partial or corrupt and was deleted; run again with "
                "download=True (command line: --download)"
            )
    return archive


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
            raise choices_error("split", split, self.splits)
        self.split = split
        folder = Path(self.root) / self.base_folder / split
        if not folder.is_dir():
            raise _not_found("cifar10 (image folder)", folder, "")
        listing = ImageFolder(folder)  # the class folders and their image files
        self.classes, self.class_to_idx = listing.classes, listing.class_to_idx
        self.samples, self.targets = listing.samples, listing.targets

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
        super().__init__(None, transform, target_transform)
        bunch = load_digits()
        # 0..16 gray levels -> 0..255 bytes.
        self.data = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
        self.targets = [int(t) for t in bunch.target]
        self.classes = [str(int(c)) for c in bunch.target_names]

    def image(self, index: int) -> Image.Image:
        """The `index`-th digit as an 8x8 RGB PIL image."""
        return Image.fromarray(self.data[index]).convert("RGB")
