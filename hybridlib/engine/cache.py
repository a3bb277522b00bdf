"""The disk cache of decoded splits: a second run of a data set starts in milliseconds.

    from hybridlib.data import load_dataset
    from hybridlib.engine.cache import disk_cache
    bundle = load_dataset("cifar10", root, cache=disk_cache("cifar10", root))

`hybridlib.engine.loading.load_bundle` does this for the command line (train, evaluate,
reproduce), the dashboard and the bench; a plain `load_dataset(...)` decodes every time.

The decoded uint8 tensor of each split is saved as one file in
`<data root>/.hybridlib-cache/` (or `$HYBRIDLIB_CACHE`, or `~/.cache/hybridlib` when the
data root is read-only), named after the data set, split and image size plus a hash of
every setting that changes its content (seed, image size, classes, limit, source, file
names, sizes and times). Files are written to a temporary name and renamed, so an
interrupted run never leaves a half-written cache, and each holds a SHA-256 of its
pixels: a file that fails it is decoded again, with a one-line warning. A cache that
cannot be written (read-only, full disk) costs only the decoding time, with a warning.
Delete the folder to reclaim space. `digits` decodes in well under a second and is not
cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from hybridlib.data import DataBundle, SplitImages
from hybridlib.paths import data_root

__all__ = ["CACHE_DIRNAME", "CACHE_ENV", "DiskCache", "default_cache_dir", "disk_cache"]

CACHE_DIRNAME = ".hybridlib-cache"
CACHE_ENV = "HYBRIDLIB_CACHE"
_CACHE_VERSION = 2  # bump when the decoding changes, so old cache files are ignored
_NOT_CACHED = ("digits",)  # decoded in well under a second


class DiskCache:
    """Decoded splits kept as files in `folder` (the `cache=` of `load_dataset`).

    Args:
        folder: where the files go (created when the first one is written).
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder).expanduser()
        # (bundle id, split) -> the (path, key) a missed read computed, for the write that
        # follows: the key describes the files as they were before decoding, so a file
        # changed meanwhile makes the next run decode again rather than trust stale pixels.
        self._missed: dict[tuple[int, str], tuple[Path, dict]] = {}

    def file(self, bundle: DataBundle, split: str) -> tuple[Path, dict]:
        """(path, key) of `split`'s cache file: the key lists what its content depends on."""
        part = bundle.split_images(split)
        key = dict(
            dataset=bundle.name,
            seed=bundle.seed,
            image_size=bundle.image_size,
            classes=list(bundle.classes),
            limit=bundle.limit,
            source=bundle.source,
            version=_CACHE_VERSION,
            split=split,
            size=len(part),
            content=_content_digest(part),
        )
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return self.folder / f"{bundle.name}-{split}-{bundle.image_size}px-{digest}.pt", key

    def read(self, bundle: DataBundle, split: str):
        """The cached (images, targets), or None when missing, stale, unreadable or corrupt."""
        path, key = self.file(bundle, split)
        loaded = _read_cache(path, key)
        if loaded is None:
            self._missed[id(bundle), split] = (path, key)
        return loaded

    def write(self, bundle: DataBundle, split: str, images, targets) -> None:
        """Save a decoded split; a disk that refuses costs a warning, never the run."""
        path, key = self._missed.pop((id(bundle), split), None) or self.file(bundle, split)
        _write_cache(path, key, images, targets)

    def __repr__(self) -> str:
        return f"DiskCache({os.fspath(self.folder)!r})"


def default_cache_dir(root: str | os.PathLike | None = None) -> Path:
    """`$HYBRIDLIB_CACHE`, else `<data root>/.hybridlib-cache`, else (a read-only data
    root, such as a shared copy) `~/.cache/hybridlib`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    root = data_root(root)
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # the cache folder will be created below this one
    if _writable(existing):
        return root / CACHE_DIRNAME
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hybridlib"


def disk_cache(name: str, root: str | os.PathLike | None = None) -> DiskCache | None:
    """The cache the command line uses for data set `name` under data root `root`.

    Returns:
        A `DiskCache` in `default_cache_dir(root)`, or None for `digits` (not cached).
    """
    return None if name in _NOT_CACHED else DiskCache(default_cache_dir(root))


def _writable(folder: Path) -> bool:
    # The mode bits as well as os.access: a folder marked read-only (r-x) stays untouched
    # even for root, for whom os.access always answers yes.
    try:
        return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & stat.S_IWUSR)
    except OSError:
        return False


def _content_digest(part: SplitImages) -> str:
    """A digest of the split's labels and ids, and of each file's size and time."""
    digest = hashlib.sha1()
    digest.update(np.ascontiguousarray(part.targets, dtype=np.int64).tobytes())
    for key in part.keys:
        digest.update(key.encode())
        if part.files:
            info = os.stat(key)
            digest.update(f"{info.st_size}:{info.st_mtime_ns}".encode())
    return digest.hexdigest()


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
