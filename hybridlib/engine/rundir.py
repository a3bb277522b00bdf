"""Run directories: the files one training run leaves behind, each written atomically.

A run directory holds `config.json`, `splits.json` (the images of each split, so a
resumed or re-evaluated run can check that the data still gives the same splits),
`metrics.csv` (the history), `checkpoint.pt` (rewritten at the end of every epoch),
and, once the run ends, `summary.json` and,
for a finished run, `predictions.csv`, `confusion.csv` and `per_class.csv` on the
test split. Every file is written to a temporary name and renamed, so a process
killed mid-write leaves the previous version, never half of a file; a write that
fails (a full disk) removes its temporary file and says how much space it needed.

One process at a time trains in a run directory: `prepare_run_dir` takes an
exclusive lock on `<run dir>/.lock` (an OS file lock, so it goes away with the
process that held it, however that process ended) and a second process asking
for the same directory is refused with the first one's PID.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import shutil
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

if os.name == "nt":  # the file lock: each platform's own module
    import msvcrt
else:
    import fcntl

import pandas as pd
import torch

from hybridlib import runtime
from hybridlib.config import RUNTIME_FIELDS, RunConfig
from hybridlib.engine import distributed
from hybridlib.errors import HybridError
from hybridlib.history import History
from hybridlib.paths import runs_root
from hybridlib.train import EvalResult

__all__ = [
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "SPLITS_FILE",
    "SUMMARY_FILE",
    "check_splits",
    "load_checkpoint",
    "prepare_run_dir",
    "save_checkpoint",
    "write_splits",
    "write_summary",
    "write_test_files",
]

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
CHECKPOINT_FILE = "checkpoint.pt"
PREDICTIONS_FILE = "predictions.csv"
CONFUSION_FILE = "confusion.csv"
PER_CLASS_FILE = "per_class.csv"
SUMMARY_FILE = "summary.json"
LOCK_FILE = ".lock"
SPLITS_FILE = "splits.json"
CHECKPOINT_FORMAT = 1

# What `--resume` may change about a run; everything else is the run's identity.
RESUME_CHANGEABLE = ("epochs", "lr")


# ---------------------------------------------------------------------------
# Checkpoints and other files, written atomically
# ---------------------------------------------------------------------------


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write `state` to `path` atomically: to a temporary file, then rename.

    A process killed while writing leaves the previous checkpoint intact (the
    rename is atomic on POSIX and Windows). The checkpoint is serialised in memory
    first, so a full disk is found before the previous one is touched.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes_atomic(Path(path), buffer.getvalue(), fsync=True)


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> dict:
    """Read a checkpoint written by `fit` (tensors mapped to `device`)."""
    path = Path(path)
    if not path.is_file():
        raise HybridError(f"no checkpoint at {path}; train first, or check the run directory")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # a truncated or foreign file
        raise HybridError(
            f"checkpoint {path} cannot be read ({type(error).__name__}: {error}); "
            "delete it to start the run over"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise HybridError(f"{path} is not a hybridlib checkpoint (format {CHECKPOINT_FORMAT})")
    return state


class DiskFullError(HybridError):
    """A file of the run could not be written for lack of space (a runtime fault)."""

    exit_code = 1


def write_bytes_atomic(path: Path, data: bytes, *, fsync: bool = False) -> None:
    """Write `data` to `path` through a temporary file; on failure leave no partial file."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(path.parent).free
            raise DiskFullError(
                f"no space left in {path.parent} to write {path.name}: it needs "
                f"{_mb(len(data))}, {_mb(free)} are free; free some space and resume the "
                "run (--resume), which continues from the last checkpoint written"
            ) from None
        raise HybridError(f"cannot write {path}: {error.strerror or error}") from None


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


# ---------------------------------------------------------------------------
# One writer per run directory
# ---------------------------------------------------------------------------

_held: dict[Path, Any] = {}  # run directory -> the open, locked lock file


def lock_run_dir(run_dir: Path) -> None:
    """Hold `run_dir`'s lock until `unlock_run_dir` or the end of the process.

    Raises:
        HybridError naming the process that holds it, when another one does.
    """
    run_dir = Path(run_dir)
    if run_dir in _held:
        return
    handle = open(run_dir / LOCK_FILE, "a+")
    if not _try_lock(handle):
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise HybridError(
            f"{run_dir} is in use by {holder}: one process trains in a run directory at a "
            "time; wait for it to end (or stop it), or choose another --out"
        )
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    _held[run_dir] = handle


def unlock_run_dir(run_dir: Path) -> None:
    handle = _held.pop(Path(run_dir), None)
    if handle is not None:
        handle.close()  # closing the file releases the lock


def _try_lock(handle) -> bool:
    try:
        if os.name == "nt":
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


# ---------------------------------------------------------------------------
# The run directory and the files written when a run ends
# ---------------------------------------------------------------------------


def new_run_dir(config: RunConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{stamp}-{config.model}-{config.dataset}-s{config.seed}"
    base = runs_root(create=True) / "runs" / name
    run_dir, n = base, 1
    while run_dir.exists():
        n += 1
        run_dir = base.with_name(f"{base.name}-{n}")
    return run_dir


def prepare_run_dir(
    config: RunConfig, resume: bool, changes: dict[str, Any] | None = None
) -> tuple[Path, RunConfig]:
    """Choose (or check) the run directory, lock it and write config.json there.

    Args:
        config: the run's settings (on resume: only its runtime fields are used).
        resume: continue the run in `config.out` with its saved config.json.
        changes: on resume, the settings the user asked for explicitly; `epochs` (to
            extend a run) and `lr` (after a divergence) may differ from the saved ones,
            any other difference is refused.
    Returns:
        (the run directory, the config the run continues or starts with)
    """
    if resume:
        run_dir, config = _resumed_dir(config, changes or {})
    else:
        run_dir, config = _new_dir(config)
    stale = run_dir / (CHECKPOINT_FILE + ".tmp")  # left by a process killed mid-save
    if stale.exists():
        stale.unlink()
    write_text_atomic(run_dir / CONFIG_FILE, config.to_json())
    return run_dir, config


def _resumed_dir(config: RunConfig, changes: dict[str, Any]) -> tuple[Path, RunConfig]:
    """The run directory to continue, locked, and its saved config with the allowed changes."""
    if not config.out:
        raise HybridError("--resume needs --out RUN_DIR: the run directory to continue")
    run_dir = Path(config.out).expanduser().resolve()
    if not (run_dir / CONFIG_FILE).is_file():
        raise HybridError(
            f"nothing to resume in {run_dir}: it has no {CONFIG_FILE}; "
            "start a new run without --resume"
        )
    saved = RunConfig.from_json(run_dir / CONFIG_FILE)  # refuses a foreign file first
    lock_run_dir(run_dir)
    # The saved settings define the run; where and how visibly it runs may change.
    runtime_changes = {name: getattr(config, name) for name in RUNTIME_FIELDS}
    if runtime_changes["data_root"] is None:
        runtime_changes["data_root"] = saved.data_root
    allowed = _resume_changes(run_dir, saved, changes)
    return run_dir, saved.replace(**{**runtime_changes, **allowed, "out": str(run_dir)})


def _new_dir(config: RunConfig) -> tuple[Path, RunConfig]:
    """A new run directory (`--out`, or a fresh name), made and locked, holding no run yet."""
    run_dir = Path(config.out).expanduser().resolve() if config.out else new_run_dir(config)
    _make_dir(run_dir)
    lock_run_dir(run_dir)
    if (run_dir / CHECKPOINT_FILE).exists() or (run_dir / SUMMARY_FILE).exists():
        unlock_run_dir(run_dir)
        raise HybridError(
            f"{run_dir} already holds a run; pass --resume to continue it, or choose another --out"
        )
    return run_dir, config.replace(out=str(run_dir))


def remove_unstarted(run_dir: Path) -> None:
    """After a new run failed before it wrote anything but config.json (missing data,
    a bad setting): remove config.json, the lock and the folder, if then empty."""
    if not distributed.is_main():
        return
    if any((run_dir / name).exists() for name in (CHECKPOINT_FILE, SUMMARY_FILE)):
        return
    unlock_run_dir(run_dir)
    for name in (CONFIG_FILE, SPLITS_FILE, METRICS_FILE, LOCK_FILE):
        (run_dir / name).unlink(missing_ok=True)
    try:
        run_dir.rmdir()
    except OSError:  # something else is in it: leave it alone
        pass


def earlier_epochs_time(run_dir: Path) -> float:
    """Seconds of the epochs a run finished before this process resumed it."""
    metrics = run_dir / METRICS_FILE
    if not metrics.is_file():
        return 0.0
    return float(pd.read_csv(metrics)["time_s"].sum())


def _make_dir(run_dir: Path) -> None:
    # An --out that is a file or cannot be written raises OSError with the path:
    # the command line turns it into one line naming --out (cli.path_message).
    run_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(run_dir, os.W_OK):
        raise PermissionError(errno.EACCES, "permission denied", str(run_dir))


def _resume_changes(run_dir: Path, saved: RunConfig, changes: dict[str, Any]) -> dict[str, Any]:
    """The changes a resume may make, checked; any other difference is refused."""
    differ = {
        name: (getattr(saved, name), value)
        for name, value in changes.items()
        if name not in RUNTIME_FIELDS and getattr(saved, name) != value
    }
    fixed = {k: v for k, v in differ.items() if k not in RESUME_CHANGEABLE}
    if fixed:
        listed = ", ".join(f"{_option(k)} ({a} -> {b})" for k, (a, b) in fixed.items())
        raise HybridError(
            f"cannot resume {run_dir} with a different {listed}: a resumed run keeps its "
            f"settings, only --epochs (to extend it) and --lr may change; train these "
            "settings as a new run with another --out"
        )
    if differ and saved.scheduler != "none":
        listed = ", ".join(_option(k) for k in differ)
        raise HybridError(
            f"cannot change {listed} when resuming {run_dir}: its {saved.scheduler} "
            f"learning-rate schedule was laid out for {saved.epochs} epochs at lr "
            f"{saved.lr:g}; train a new run with another --out instead"
        )
    if "epochs" in differ:
        done = _epochs_done(run_dir)
        if differ["epochs"][1] < done:
            raise HybridError(
                f"--epochs {differ['epochs'][1]} is fewer than the {done} epochs {run_dir} "
                f"has trained already; give --epochs {done} or more"
            )
    return {name: new for name, (_, new) in differ.items()}


def _epochs_done(run_dir: Path) -> int:
    metrics = run_dir / METRICS_FILE
    return len(pd.read_csv(metrics)) if metrics.is_file() else 0


def _option(field: str) -> str:
    return "--" + field.replace("_", "-")


def write_splits(run_dir: Path, bundle) -> None:
    """Record the images of each split of `bundle` in `run_dir/splits.json`."""
    if distributed.is_main():  # one line of JSON: a CIFAR-10 record lists 60,000 names
        text = json.dumps(bundle.split_record(), separators=(",", ":"))
        write_text_atomic(Path(run_dir) / SPLITS_FILE, text + "\n")


def check_splits(run_dir: Path, bundle, fix: str) -> None:
    """Refuse, naming what changed, when `bundle` no longer gives the recorded splits.

    A run made before runs recorded their splits has no `splits.json`: nothing to check.

    Args:
        run_dir: the run directory.
        bundle: the data as loaded now.
        fix: the end of the message: what the user can do.
    """
    path = Path(run_dir) / SPLITS_FILE
    if not path.is_file():
        return
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise HybridError(
            f"{path} cannot be read ({error}); it records the run's splits: restore it, or "
            "delete it to skip the check"
        ) from None
    changes = bundle.split_changes(record)
    if changes:
        raise HybridError(
            f"the data no longer gives the splits this run used (recorded in {path}): "
            f"{changes}; {fix}"
        )


def write_test_files(run_dir: Path, test: EvalResult) -> None:
    if not distributed.is_main():
        return
    write_text_atomic(run_dir / PREDICTIONS_FILE, test.predictions.to_csv(index=False))
    write_text_atomic(run_dir / CONFUSION_FILE, test.confusion_frame().to_csv())
    write_text_atomic(run_dir / PER_CLASS_FILE, test.per_class().to_csv())


def write_summary(
    run_dir: Path,
    *,
    status: str,
    config: RunConfig,
    bundle,
    model,
    device: torch.device,
    history: History | None = None,
    test: EvalResult | None = None,
    message: str | None = None,
    wall_time_s: float | None = None,
) -> None:
    """Write `summary.json`: how the run ended, its numbers, and what made them.

    Args:
        status: "complete", "stopped", "interrupted" or "diverged".
        history: the finished epochs (default: those in metrics.csv, after an exception).
        test: the test split's result, for a complete run.
        message: why the run ended early (a divergence's message).
        wall_time_s: seconds from start to end, resumed epochs included.
    """
    if not distributed.is_main():  # rank 0 writes for all
        return
    if history is None:  # after an exception: the epochs saved so far
        metrics = run_dir / METRICS_FILE
        history = History.from_frame(pd.read_csv(metrics)) if metrics.is_file() else History()
    env = runtime.environment(device)
    summary = {
        "status": status,
        "message": message,
        **_settings(config, history),
        **_scores(history, test),
        "sizes": bundle.sizes,
        "classes": list(bundle.classes),
        "num_params": sum(p.numel() for p in model.parameters()),
        **_timings(history, bundle.sizes["train"], wall_time_s),
        "device": env["device"],
        "hardware": env,
        "torch": env["torch"],
        "git_commit": env["git_commit"],
        "command": config.command(),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(run_dir / SUMMARY_FILE, finite(summary))


def _settings(config: RunConfig, history: History) -> dict[str, Any]:
    world = distributed.world_size()
    return {
        "model": config.model,
        "dataset": config.dataset,
        "seed": config.seed,
        "recipe": config.recipe,
        "epochs": config.epochs,
        "epochs_done": len(history),
        "stopped_at": list(history.stopped_at) if history.stopped_at else None,
        "batch_size": config.batch_size,
        "ranks": world,
        "global_batch_size": config.batch_size * (world if config.per_rank_batch else 1),
        "lr": config.lr,
    }


def _scores(history: History, test: EvalResult | None) -> dict[str, Any]:
    last = history.last or {}
    validated = history.last_validated() or {}
    return {
        "train_loss": last.get("train_loss"),
        "train_acc": last.get("train_acc"),
        "val_loss": validated.get("val_loss"),
        "val_acc": validated.get("val_acc"),
        "test_loss": test.loss if test else None,
        "test_acc": test.accuracy if test else None,
        "test_size": test.num_samples if test else None,
    }


def _timings(history: History, train_images: int, wall_time_s: float | None) -> dict[str, Any]:
    frame = history.to_frame()
    train_time = float(frame["time_s"].sum()) if len(frame) else 0.0
    # images per second over all epochs: total images / total training seconds
    seconds = (train_images / frame["images_per_s"]).sum() if len(frame) else 0.0
    return {
        "train_time_s": train_time,
        "wall_time_s": wall_time_s,
        "images_per_s": len(frame) * train_images / seconds if seconds else None,
    }


def finite(value):
    """NaN / inf become null so summary.json stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
