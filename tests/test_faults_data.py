"""Data faults a user meets, tried as the user meets them: nothing is silently wrong.

Each test changes the data (or the disk) under a command or a `load_dataset` call and
checks the exit status or the exception, that the message is one line naming the fix,
that no traceback is printed, and that nothing is lost or quietly different.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import layouts
from PIL import Image
from tqdm.auto import tqdm

from hybridlib import progress
from hybridlib.config import RunConfig
from hybridlib.data import load_dataset
from hybridlib.datasets import TinyImageNet
from hybridlib.engine import trainer
from hybridlib.engine.cache import DiskCache
from hybridlib.errors import HybridError
from hybridlib.tools import cli

ROOT = Path(__file__).resolve().parents[1]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """`python -m hybridlib ARGV` in this process: (exit status, stdout, stderr)."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def corrupt(path: Path) -> None:
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")


def cifar_config(root: Path, out: Path, **changes) -> RunConfig:
    values = dict(
        model="cnn",
        dataset="cifar10",
        data_root=str(root),
        epochs=2,
        batch_size=16,
        lr=1e-3,
        device="cpu",
        progress=False,
        out=str(out),
    )
    return RunConfig(**{**values, **changes})


def interrupted_run(config: RunConfig) -> Path:
    """A run stopped by Ctrl-C during epoch 2: epoch 1's checkpoint is on disk."""

    def interrupt(event):
        if event["event"] == "step" and event["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trainer.run_training(config, callback=interrupt)
    run_dir = Path(config.out)
    assert trainer.load_checkpoint(run_dir / "checkpoint.pt")["epoch"] == 1
    return run_dir


# ---------------------------------------------------------------------------------------
# 1. Every image is checked before the first epoch; resume / evaluate refuse changed data


@pytest.fixture()
def cifar_jpg(tmp_path) -> Path:
    root = tmp_path / "data"
    layouts.write_cifar10_jpg(root, train_per_class=10, test_per_class=3)
    return root


def test_unreadable_test_image_stops_the_run_before_the_first_epoch(cifar_jpg, tmp_path, capsys):
    bad = cifar_jpg / "cifar10-jpg" / "test" / "cat" / "0001.jpg"
    corrupt(bad)
    out = tmp_path / "run"
    code, _, err = run_cli(
        capsys, "train", "--dataset", "cifar10", "--data-root", cifar_jpg, "--epochs", 2,
        "--device", "cpu", "--out", out,
    )  # fmt: skip
    assert_one_line_error(code, err, str(bad), "replace it")
    # Found at the start: no epoch was trained, nothing claims to be finished.
    assert not (out / "checkpoint.pt").exists()
    assert not (out / "metrics.csv").exists()
    assert "epoch 1" not in err


def test_reference_dataset_path_checks_every_image(cifar_jpg):
    bad = cifar_jpg / "cifar10-jpg" / "test" / "dog" / "0002.jpg"
    corrupt(bad)
    bundle = load_dataset("cifar10", cifar_jpg)
    with pytest.raises(HybridError, match="cannot read image file") as caught:
        bundle.dataset("test")  # not only when the bad image's turn comes
    assert str(bad) in str(caught.value) and "\n" not in str(caught.value)


def test_a_run_records_its_splits(cifar_jpg, tmp_path):
    run_dir = trainer.run_training(cifar_config(cifar_jpg, tmp_path / "run", epochs=1))
    record = json.loads((run_dir / "splits.json").read_text())
    bundle = load_dataset("cifar10", cifar_jpg)
    assert record["classes"] == bundle.classes
    for split in ("train", "val", "test"):
        entry = record["splits"][split]
        assert entry["size"] == bundle.sizes[split] == len(entry["files"])
        assert entry["class_counts"] == bundle.class_counts(split)
    # ids are relative to the data set's folder: a moved data root still matches
    assert record["splits"]["test"]["files"][0] == "test/airplane/0000.jpg"
    assert bundle.split_changes(record) is None


def test_resume_after_deleting_a_test_image_is_refused(cifar_jpg, tmp_path, capsys):
    run_dir = interrupted_run(cifar_config(cifar_jpg, tmp_path / "run"))
    checkpoint = (run_dir / "checkpoint.pt").read_bytes()
    (cifar_jpg / "cifar10-jpg" / "test" / "cat" / "0001.jpg").unlink()
    code, _, err = run_cli(capsys, "train", "--out", run_dir, "--resume", "--device", "cpu")
    assert_one_line_error(
        code, err, "test: 1 image removed (e.g. test/cat/0001.jpg), 0 images added",
        "restore the data", "new run",
    )  # fmt: skip
    # Nothing was trained or overwritten: the run is exactly as it was.
    assert (run_dir / "checkpoint.pt").read_bytes() == checkpoint
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"


def test_resume_after_data_changed_under_pooled_splits_names_the_leak(tmp_path):
    root = tmp_path / "data"
    layouts.write_caltech101(root)
    config = RunConfig(
        model="cnn", dataset="caltech101", num_classes=3, data_root=str(root), epochs=2,
        lr=1e-3, device="cpu", progress=False, out=str(tmp_path / "run"),
    )  # fmt: skip
    run_dir = interrupted_run(config)
    record = json.loads((run_dir / "splits.json").read_text())
    removed = record["splits"]["test"]["files"][0]
    (root / "caltech101" / "101_ObjectCategories" / removed).unlink()
    with pytest.raises(HybridError) as caught:
        trainer.run_training(config, resume=True)
    message = str(caught.value)
    assert "\n" not in message
    assert re.search(rf"test: \d+ images? removed \(e\.g\. {re.escape(removed)}\)", message)
    assert "of the added ones were training images" in message  # the redrawn split leaks
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"


def test_resume_with_unchanged_data_continues(cifar_jpg, tmp_path):
    run_dir = interrupted_run(cifar_config(cifar_jpg, tmp_path / "run"))
    moved = tmp_path / "moved"
    cifar_jpg.rename(moved)  # the same files under another data root
    config = cifar_config(moved, run_dir)
    trainer.run_training(config, resume=True)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "complete"


def test_evaluate_after_the_data_changed_is_refused(cifar_jpg, tmp_path, capsys):
    run_dir = trainer.run_training(cifar_config(cifar_jpg, tmp_path / "run", epochs=1))
    predictions = (run_dir / "predictions.csv").read_bytes()
    extra = cifar_jpg / "cifar10-jpg" / "test" / "cat" / "0099.jpg"
    layouts._save_jpeg(extra, np.random.default_rng(0), (32, 32))
    code, _, err = run_cli(capsys, "evaluate", run_dir, "--device", "cpu")
    assert_one_line_error(
        code, err, "test: 0 images removed, 1 image added (e.g. test/cat/0099.jpg)"
    )
    assert (run_dir / "predictions.csv").read_bytes() == predictions  # not rewritten


def test_runs_without_a_split_record_resume_and_evaluate_as_before(cifar_jpg, tmp_path, capsys):
    run_dir = interrupted_run(cifar_config(cifar_jpg, tmp_path / "run"))
    (run_dir / "splits.json").unlink()  # as a run made before runs recorded their splits
    (cifar_jpg / "cifar10-jpg" / "test" / "cat" / "0001.jpg").unlink()
    trainer.run_training(cifar_config(cifar_jpg, run_dir), resume=True)
    assert not (run_dir / "splits.json").exists()
    code, out, err = run_cli(capsys, "evaluate", run_dir, "--device", "cpu")
    assert code == 0, err
    assert "test accuracy" in out


def test_the_command_line_prints_one_line_and_no_traceback(cifar_jpg, tmp_path):
    run_dir = trainer.run_training(cifar_config(cifar_jpg, tmp_path / "run", epochs=1))
    (cifar_jpg / "cifar10-jpg" / "train" / "cat" / "0001.jpg").unlink()
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-m", "hybridlib", "evaluate", str(run_dir), "--device", "cpu"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "the data no longer gives the splits this run used" in done.stderr
    assert "train: " in done.stderr and "restore the data" in done.stderr


# ---------------------------------------------------------------------------------------
# 6. Layout slips: stray files, other names, a missing folder; never a file that is not there


def all_keys_exist(bundle) -> None:
    for split in ("train", "val", "test"):
        for key in bundle._parts[split].keys:
            assert os.path.isfile(key), key


def test_caltech101_with_stray_files_other_names_and_no_background(tmp_path, capsys):
    root = tmp_path / "data"
    layouts.write_caltech101(root)
    base = root / "caltech101" / "101_ObjectCategories"
    shutil.rmtree(base / "BACKGROUND_Google")
    (base / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (base / "airplanes" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (base / "airplanes" / "._image_0001.jpg").write_bytes(b"\0\5\26\7 AppleDouble")
    (base / "airplanes" / "notes.txt").write_text("where these came from\n")
    (base / "Faces" / "image_0003.jpg").rename(base / "Faces" / "my face.jpeg")
    (base / "Faces" / "image_0004.jpg").unlink()  # a gap in the numbering
    code, out, err = run_cli(capsys, "data", "caltech101", "--data-root", root, "--num-classes", 3)
    assert code == 0, err
    assert "Traceback" not in err
    bundle = load_dataset("caltech101", root, num_classes=3)
    all_keys_exist(bundle)
    assert bundle.classes == ["Faces", "airplanes", "car_side"]
    assert sum(bundle.sizes.values()) == 11 + 20 + 11  # Faces lost one image
    keys = [k for split in ("train", "val", "test") for k in bundle._parts[split].keys]
    assert str(base / "Faces" / "my face.jpeg") in keys
    bundle.check()  # every listed file decodes
    # The printed sizes are those of the files that are there.
    sizes = bundle.sizes
    assert f"splits: train {sizes['train']} / val {sizes['val']} / test {sizes['test']}" in out


def test_caltech101_without_categories_is_one_line(tmp_path, capsys):
    base = tmp_path / "caltech101" / "101_ObjectCategories"
    base.mkdir(parents=True)
    (base / ".DS_Store").write_bytes(b"\0")
    code, _, err = run_cli(capsys, "data", "caltech101", "--data-root", tmp_path)
    assert_one_line_error(code, err, str(base), "has no class folders", "sub-folder per class")


def test_tiny_imagenet_with_stray_files(tmp_path):
    base = layouts.write_tiny_imagenet(tmp_path, per_class=10)
    images = base / "train" / "n01443537" / "images"
    (images / ".DS_Store").write_bytes(b"\0")
    (images / "._n01443537_0.JPEG").write_bytes(b"\0\5\26\7")
    (images / "n01443537_0.JPEG").rename(images / "renamed.jpg")
    bundle = load_dataset("tiny-imagenet", tmp_path)
    all_keys_exist(bundle)
    assert sum(bundle.sizes.values()) == 50
    bundle.check()


def test_tiny_imagenet_val_with_missing_images_is_one_line(tmp_path):
    base = layouts.write_tiny_imagenet(tmp_path)
    (base / "val" / "images" / "val_3.JPEG").unlink()
    with pytest.raises(HybridError, match="1 images listed in") as caught:
        TinyImageNet(tmp_path, "val")
    assert "val_3.JPEG" in str(caught.value) and "download it again" in str(caught.value)


def test_cifar10_image_folder_without_class_folders_is_one_line(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for i in range(3):
            layouts._save_jpeg(tmp_path / "cifar10-jpg" / split / f"{i:04d}.jpg", rng, (32, 32))
    code, _, err = run_cli(capsys, "data", "cifar10", "--data-root", tmp_path)
    line = assert_one_line_error(code, err, str(tmp_path / "cifar10-jpg" / "train"))
    assert "has no class folders" in line and "sub-folder per class" in line


def test_cifar10_image_folder_with_an_empty_class_is_one_line(tmp_path, capsys):
    layouts.write_cifar10_jpg(tmp_path, train_per_class=10, test_per_class=3)
    shutil.rmtree(tmp_path / "cifar10-jpg" / "test" / "cat")
    (tmp_path / "cifar10-jpg" / "test" / "cat").mkdir()
    (tmp_path / "cifar10-jpg" / "test" / "cat" / ".DS_Store").write_bytes(b"\0")
    code, _, err = run_cli(capsys, "data", "cifar10", "--data-root", tmp_path)
    empty = tmp_path / "cifar10-jpg" / "test" / "cat"
    assert_one_line_error(code, err, f"class folder {empty} has no images", "add images")


def test_folder_dataset_skips_hidden_folders_and_files(tmp_path):
    layouts.write_image_folder(tmp_path / "pets", {"cat": 10, "dog": 10})
    (tmp_path / "pets" / ".ipynb_checkpoints").mkdir()
    (tmp_path / "pets" / "cat" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "pets" / "cat" / "Thumbs.db").write_bytes(b"\0")
    bundle = load_dataset("folder", folder=tmp_path / "pets")
    assert bundle.classes == ["cat", "dog"]
    assert sum(bundle.sizes.values()) == 20
    all_keys_exist(bundle)


# ---------------------------------------------------------------------------------------
# 3. Every image mode decodes to the right 8-bit RGB pixels


def _uniform(mode: str, value, size=(32, 32)) -> Image.Image:
    return Image.new(mode, size, value)


def planes(*values: int) -> np.ndarray:
    """A uniform 32x32 uint16 image: (32, 32) for one value, (32, 32, C) for C values."""
    array = np.stack([np.full((32, 32), v, dtype=np.uint16) for v in values], axis=-1)
    return array[..., 0] if len(values) == 1 else array


def _write_modes(folder: Path) -> dict[str, tuple[int, int, int]]:
    """One 32x32 image of each mode -> its file name and expected RGB pixel."""
    palette = Image.new("P", (32, 32), 1)
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    images = {
        "grey.png": (_uniform("L", 100), (100, 100, 100)),
        "rgba.png": (_uniform("RGBA", (10, 20, 30, 0)), (10, 20, 30)),  # alpha dropped
        "palette.png": (palette, (200, 100, 50)),
        "cmyk.jpg": (_uniform("CMYK", (255, 0, 0, 0)), (0, 255, 255)),  # cyan
        "grey-alpha.png": (_uniform("LA", (77, 128)), (77, 77, 77)),
        "rgb.png": (_uniform("RGB", (1, 128, 254)), (1, 128, 254)),
        "int32.tif": (Image.fromarray(np.full((32, 32), 32768, np.int32), "I"), (128,) * 3),
    }
    expected = {}
    for name, (image, rgb) in images.items():
        image.save(folder / name, **({"quality": 100} if name.endswith(".jpg") else {}))
        expected[name] = rgb
    for name, values, rgb in (
        ("grey16-mid.png", planes(32768), (128, 128, 128)),
        ("grey16-white.png", planes(65535), (255, 255, 255)),
        ("grey16-dark.png", planes(2570), (10, 10, 10)),
        ("grey16-alpha.png", planes(32768, 65535), (128, 128, 128)),
        ("rgb16.png", planes(32768, 65535, 2570), (128, 255, 10)),
        ("rgba16.png", planes(256, 512, 768, 0), (1, 2, 3)),
    ):
        layouts.png_16bit(folder / name, values.astype(np.uint16))
        expected[name] = rgb
    return expected


def test_every_image_mode_gives_the_right_rgb_pixels(tmp_path):
    expected = {}
    for cls in ("a", "b"):
        expected.update({f"{cls}/{k}": v for k, v in _write_modes(_mkdir(tmp_path / cls)).items()})
    assert Image.open(tmp_path / "a" / "grey16-mid.png").mode in ("I;16", "I")  # Pillow < 10.1: I
    bundle = load_dataset("folder", folder=tmp_path)
    seen = 0
    for split in ("train", "val", "test"):
        images, _ = bundle.tensors(split)
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32)
        for key, image in zip(bundle._parts[split].keys, images, strict=True):
            name = Path(key).relative_to(tmp_path).as_posix()
            want = torch.tensor(expected[name], dtype=torch.uint8).view(3, 1, 1).expand(3, 32, 32)
            assert torch.equal(image, want), (name, image[:, 0, 0].tolist(), expected[name])
            seen += 1
    assert seen == len(expected) == 26


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


# ---------------------------------------------------------------------------------------
# 10. Shadowed folders, corrupt or unwritable caches, bad seeds, progress in logs


def test_empty_pickle_folder_does_not_hide_the_image_folder(cifar_jpg, capsys):
    (cifar_jpg / "cifar-10-batches-py").mkdir()
    code, out, err = run_cli(capsys, "data", "cifar10", "--data-root", cifar_jpg)
    assert code == 0, err
    assert f"source: {cifar_jpg / 'cifar10-jpg'}" in out


def test_half_copied_pickle_folder_is_one_line(tmp_path, capsys):
    layouts.write_cifar10_batches(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    code, _, err = run_cli(capsys, "data", "cifar10", "--data-root", tmp_path)
    batches = tmp_path / "cifar-10-batches-py"
    assert_one_line_error(code, err, f"{batches} is incomplete: data_batch_3 missing", "--download")


def test_half_copied_pickle_folder_beside_an_image_folder_uses_the_images(cifar_jpg):
    layouts.write_cifar10_batches(cifar_jpg)
    (cifar_jpg / "cifar-10-batches-py" / "test_batch").unlink()
    bundle = load_dataset("cifar10", cifar_jpg)
    assert bundle.source == str(cifar_jpg / "cifar10-jpg")


def _cache_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_bit_flipped_cache_is_detected_and_rebuilt(cifar_jpg, tmp_path, capsys):
    cache = tmp_path / "cache"
    fresh, _ = load_dataset("cifar10", cifar_jpg, cache=DiskCache(cache)).tensors("train")
    (path,) = [p for p in _cache_files(cache) if "-train-" in p.name]
    payload = bytearray(path.read_bytes())
    at = payload.index(fresh[5].numpy().tobytes())  # a pixel of the stored images
    payload[at] ^= 0x10
    path.write_bytes(bytes(payload))
    capsys.readouterr()
    images, _ = load_dataset("cifar10", cifar_jpg, cache=DiskCache(cache)).tensors("train")
    err = capsys.readouterr().err
    assert torch.equal(images, fresh)  # decoded again, not the flipped byte
    assert err.count("\n") == 1 and "hybridlib: warning: cache file" in err
    assert "checksum mismatch" in err and str(path) in err
    again, _ = load_dataset("cifar10", cifar_jpg, cache=DiskCache(cache)).tensors("train")
    assert torch.equal(again, fresh) and capsys.readouterr().err == ""  # rewritten


def test_full_disk_while_caching_costs_only_time(cifar_jpg, tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"PK\3\4 half a file")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    images, targets = load_dataset("cifar10", cifar_jpg, cache=DiskCache(cache)).tensors("test")
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "hybridlib: warning: cannot write the cache file" in err
    assert "No space left on device" in err and "decodes again" in err
    assert _cache_files(cache) == []  # no partial file left behind
    monkeypatch.setattr(torch, "save", real_save)
    reference, _ = load_dataset("cifar10", cifar_jpg).tensors("test")
    assert torch.equal(images, reference) and len(targets) == 30


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_bad_seed_says_what_a_seed_is(seed):
    with pytest.raises(HybridError) as caught:
        load_dataset("digits", seed=seed)
    assert str(caught.value) == (
        f"seed={seed!r} must be a whole number >= 0 (it seeds the splits), e.g. seed=0"
    )


def test_bad_seed_on_the_command_line(capsys):
    code, _, err = run_cli(capsys, "data", "digits", "--seed", -1)
    assert_one_line_error(code, err, "seed=-1 must be a whole number >= 0")


def test_progress_in_a_log_is_one_line_per_stage(tmp_path):
    """Decoding and training with stderr in a file: no carriage returns, one line a stage."""
    root = tmp_path / "data"
    layouts.write_cifar10_jpg(root, train_per_class=120, test_per_class=3)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("TQDM_DISABLE", None)
    command = [
        sys.executable, "-m", "hybridlib", "train", "--model", "cnn", "--dataset", "cifar10",
        "--data-root", str(root), "--epochs", "2", "--device", "cpu", "--batch-size", "64",
        "--out", str(tmp_path / "run"),
    ]  # fmt: skip
    with open(tmp_path / "log.txt", "w") as log:
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=log, env=env, timeout=600)
    text = (tmp_path / "log.txt").read_text()
    assert done.returncode == 0, text
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) < 20, text
    assert re.search(r"^decoding cifar10/train: 1,080 images \.\.\. done in \d+\.\d s$", text, re.M)
    assert re.search(r"^epoch 1/2: 17 steps \.\.\. done in \d+\.\d s$", text, re.M), text
    assert re.search(r"^epoch 2/2  train loss", text, re.M)  # the epoch line is kept


def test_progress_bars_stay_where_someone_watches(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(progress, "interactive", lambda: True)  # a terminal or a notebook
    assert isinstance(progress.bar(range(3), desc="x", unit="image"), tqdm)
    monkeypatch.setattr(progress, "interactive", lambda: False)
    assert isinstance(progress.bar(range(3), desc="x", unit="image"), progress.StageLine)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert not isinstance(progress.bar(range(3), desc="x", unit="image"), progress.StageLine)
