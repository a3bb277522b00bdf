"""The disk cache of decoded splits (hybridlib.engine.cache) and the bundle runs load with it.

The faults a user meets with it (a bit-flipped file, a full disk) are in
tests/test_faults_data.py.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from fixtures import layouts

from hybridlib import data
from hybridlib.config import RunConfig
from hybridlib.data import load_dataset
from hybridlib.engine import cache, loading, trainer
from hybridlib.engine.cache import CACHE_DIRNAME, DiskCache, default_cache_dir, disk_cache
from hybridlib.engine.loading import load_bundle


def no_decoding(*args):
    raise AssertionError("decoded although cached")


def pets(root, **kwargs):
    """The folder data set `root/pets`, with the command line's disk cache."""
    return load_dataset("folder", root, folder="pets", cache=disk_cache("folder", root), **kwargs)


def test_cache_is_written_once_and_reused(tmp_path, monkeypatch):
    layouts.write_image_folder(tmp_path / "pets", {"cat": 10, "dog": 10})
    root = tmp_path / "data"
    root.mkdir()
    shutil.move(tmp_path / "pets", root / "pets")
    first = pets(root)
    assert first.cache.folder == root / CACHE_DIRNAME
    images, targets = first.tensors("train")
    files = sorted(p.name for p in first.cache.folder.iterdir())
    assert len(files) == 1 and files[0].startswith("folder-train-32px-")
    assert not any(name.endswith(".tmp") for name in os.listdir(first.cache.folder))

    monkeypatch.setattr(data.DataBundle, "_decode", no_decoding)
    again, again_targets = pets(root).tensors("train")
    assert torch.equal(again, images) and torch.equal(again_targets, targets)
    # Another seed, limit or image size is another file.
    for kwargs in ({"seed": 1}, {"limit": 5}, {"image_size": 16}):
        with pytest.raises(AssertionError, match="decoded although cached"):
            pets(root, **kwargs).tensors("train")
    monkeypatch.undo()
    # A corrupt cache file is rebuilt, not trusted.
    cached = first.cache.folder / files[0]
    cached.write_bytes(b"garbage")
    rebuilt, _ = pets(root).tensors("train")
    assert torch.equal(rebuilt, images) and cached.stat().st_size > 100
    # Changing an image file changes the key.
    changed = pets(root)
    path = changed._parts["train"].keys[0]
    layouts.write_image_folder(tmp_path / "other", {"x": 1})
    shutil.copy(tmp_path / "other" / "x" / "0.png", path)
    assert not torch.equal(changed.tensors("train")[0][0], images[0])
    assert len(list(first.cache.folder.glob("folder-train-32px-*.pt"))) == 2


def test_a_file_changed_while_decoding_is_decoded_again(tmp_path, monkeypatch):
    """The file's key is the one taken before decoding, so a change meanwhile shows."""
    layouts.write_image_folder(tmp_path / "pets", {"cat": 10, "dog": 10})
    bundle = pets(tmp_path)
    path = bundle._parts["train"].keys[0]
    decode = data.DataBundle._decode

    def decode_then_touch(self, part, split):
        decoded = decode(self, part, split)
        os.utime(path, ns=(1, 1))  # the file changes after it was read
        return decoded

    monkeypatch.setattr(data.DataBundle, "_decode", decode_then_touch)
    bundle.tensors("train")
    monkeypatch.setattr(data.DataBundle, "_decode", no_decoding)
    with pytest.raises(AssertionError, match="decoded although cached"):
        pets(tmp_path).tensors("train")


def test_where_the_cache_goes(tmp_path, monkeypatch):
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    assert disk_cache("digits", tmp_path) is None  # decoded in well under a second
    layouts.write_image_folder(tmp_path / "ro" / "pets", {"cat": 5, "dog": 5})
    assert default_cache_dir(tmp_path / "ro") == tmp_path / "ro" / CACHE_DIRNAME
    assert default_cache_dir(tmp_path / "new" / "root") == tmp_path / "new" / "root" / CACHE_DIRNAME
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    os.chmod(tmp_path / "ro", 0o555)
    try:  # a read-only data root, such as a shared copy: the user's cache folder
        bundle = pets(tmp_path / "ro")
        assert bundle.cache.folder == tmp_path / "xdg" / "hybridlib"
    finally:
        os.chmod(tmp_path / "ro", 0o755)
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "env-cache"))
    assert pets(tmp_path / "ro").cache.folder == tmp_path / "env-cache"
    assert repr(DiskCache("~/x")) == f"DiskCache({os.path.expanduser('~/x')!r})"


def test_runs_load_their_data_through_the_disk_cache(tmp_path, monkeypatch):
    """Train, evaluate, reproduce, the dashboard and the bench: `load_bundle`, cached."""
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    root = tmp_path / "data"
    layouts.write_image_folder(root / "pets", {"cat": 10, "dog": 10})
    config = RunConfig(dataset="folder", folder="pets", data_root=str(root), limit=12)
    assert trainer.load_bundle is loading.load_bundle  # the name other modules import
    first = load_bundle(config)
    first.check()
    files = sorted(p.name for p in (root / CACHE_DIRNAME).iterdir())
    assert [name.split("-")[1] for name in files] == ["test", "train", "val"]
    monkeypatch.setattr(data.DataBundle, "_decode", no_decoding)
    second = load_bundle(config)
    second.check()
    for split in data.SPLITS:
        assert torch.equal(second.tensors(split)[0], first.tensors(split)[0])
    assert second.sizes == load_dataset("folder", root, folder="pets", limit=12).sizes
    assert load_bundle(RunConfig(dataset="digits", limit=12)).cache is None
