"""Runs that a long job needs: checkpoints and resume, run directories, stop requests,
torchrun, CUDA-graph steps, divergence checks.

    python -m hybridlib train --model cnn_lstm_skip --dataset caltech101
    python -m hybridlib train --out RUN_DIR --resume        # continue an interrupted run
    python -m hybridlib evaluate RUN_DIR
    torchrun --nproc_per_node=4 -m hybridlib train ...       # GPUs: hybridlib.engine.distributed

or from Python / a notebook:

    from hybridlib.config import RunConfig
    from hybridlib.engine.trainer import run_training
    run_dir = run_training(RunConfig(model="cnn", dataset="digits", epochs=2))

The arithmetic is `hybridlib.train`'s (its `train_step` and `evaluate`); this module
adds what surrounds it. A run directory (written by `hybridlib.engine.rundir`) holds
`config.json`, `splits.json` (the images of each split: `--resume` and `evaluate`
refuse data that no longer gives them), `metrics.csv` (the history), `checkpoint.pt`
(model, what rebuilds it, optimiser, scheduler, epoch, history, RNG states; rewritten
atomically at the end of every epoch), and, once training ends, `predictions.csv`,
`confusion.csv`, `per_class.csv` on the test split and `summary.json`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from hybridlib import runtime
from hybridlib.config import TRAIN_OPTIONS, RunConfig
from hybridlib.engine import distributed, fast, rundir, system
from hybridlib.engine.loading import load_bundle, rank_loader
from hybridlib.engine.rundir import load_checkpoint, save_checkpoint
from hybridlib.errors import HybridError
from hybridlib.history import History
from hybridlib.models import build_model
from hybridlib.progress import bar as progress_bar
from hybridlib.train import (
    EpochResult,
    EvalResult,
    evaluate,
    input_crop,
    make_optimizer,
    make_scheduler,
)

__all__ = [
    "DivergedError",
    "cli_evaluate",
    "cli_train",
    "config_from_args",
    "evaluate_run",
    "fit",
    "load_bundle",
    "load_run_model",
    "run_epoch",
    "run_training",
    "suggest_lr",
]


class DivergedError(HybridError):
    """The loss became NaN or infinite (a runtime fault: exit status 1)."""

    exit_code = 1

    def __init__(self, message: str, *, epoch: int, step: int):
        super().__init__(message)
        self.epoch = epoch
        self.step = step


# ---------------------------------------------------------------------------
# One epoch
# ---------------------------------------------------------------------------


def run_epoch(
    model,
    loader,
    optimizer,
    *,
    step_fn,
    epoch: int = 1,
    epochs: int | None = None,
    callback: Callback | None = None,
    stop=None,
    progress: bool = True,
    sync_every: int | None = None,
) -> EpochResult:
    """Train for one pass over `loader`.

    Losses and correct counts are summed on the device and read back every
    `sync_every` steps (every step on the CPU, where reading is free; every 25 on a
    GPU, so it is not stalled). At each read the losses are checked: a NaN or an
    infinity raises `DivergedError` naming the epoch and the exact step.

    Args:
        model: a `Classifier` on the loader's device (its DDP under torchrun).
        loader: yields (x, y) batches on that device (a `DeviceLoader`).
        optimizer: the model's optimiser (a divergence names its learning rate).
        step_fn: the training step `step_fn(x, y) -> (loss, correct)` from
            `hybridlib.engine.fast.make_train_step`, built once per run with its
            mixed-precision context, schedule and label smoothing (eager, or a CUDA
            graph's replay).
        epoch, epochs: for messages and the progress bar.
        callback: called with {"event": "step", ...} at every read-back.
        stop: an object with `is_set()` (e.g. `threading.Event`), checked after every
            step; when set, the epoch ends after the current step.
        progress: show a progress bar.
        sync_every: steps between read-backs (default: 1 on the CPU, 25 elsewhere).
    Returns:
        An `EpochResult` (mean loss, accuracy 0..1, images, steps, seconds, stopped).
    """
    model.train()
    device = next(model.parameters()).device
    steps = len(loader)
    sync_every = sync_every or (1 if device.type == "cpu" else 25)
    tally = _Tally(device, epoch, steps, optimizer)
    label = f"epoch {epoch}/{epochs}" if epochs else f"epoch {epoch}"
    bar = progress_bar(total=steps, desc=label, unit="step", progress=progress)
    step, stopped, start = 0, False, time.perf_counter()
    for step, (x, y) in enumerate(loader, start=1):
        loss, correct = step_fn(x, y)
        tally.add(loss, correct, y.shape[0])
        if step % sync_every == 0 or step == steps or _is_set(stop):
            _report(tally.read(step), bar, callback, epoch, step, steps)
        # a stop requested before or during this step's read-back ends the epoch here
        if _is_set(stop):
            tally.check(step)  # the stop may have come after the read-back decision
            stopped = True
            break
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return tally.result(step, time.perf_counter() - start, stopped)


class _Tally:
    """An epoch's losses and correct counts, summed on the device; checked when read."""

    def __init__(self, device: torch.device, epoch: int, steps: int, optimizer):
        self.loss_sum = torch.zeros((), device=device)  # sum of per-image losses
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.images = 0
        self.pending: list[torch.Tensor] = []  # step losses not yet checked on the host
        self.epoch, self.steps, self.optimizer = epoch, steps, optimizer

    def add(self, loss: torch.Tensor, correct: torch.Tensor, batch: int) -> None:
        self.loss_sum += loss.float() * batch
        self.correct += correct
        self.images += batch
        self.pending.append(loss)

    def check(self, step: int) -> None:
        """Raise `DivergedError` if a loss since the last check (up to `step`) is not finite."""
        if not self.pending:
            return
        values = torch.stack(self.pending).float().cpu()
        self.pending.clear()
        bad = (~torch.isfinite(values)).nonzero()
        if len(bad) == 0:
            return
        index = int(bad[0])
        first = step - len(values) + 1 + index
        lr = float(self.optimizer.param_groups[0]["lr"])
        raise DivergedError(
            f"training diverged: the loss became {values[index].item()} at epoch {self.epoch}, "
            f"step {first} of {self.steps}; the learning rate {lr:g} is probably too high, "
            f"try a lower one, e.g. --lr {suggest_lr(lr):g} (paper A uses 1e-4)",
            epoch=self.epoch,
            step=first,
        )

    def read(self, step: int) -> tuple[float, float]:
        """(mean loss, accuracy) so far, once the losses are checked; waits for the device."""
        self.check(step)
        return self.loss_sum.item() / self.images, self.correct.item() / self.images

    def result(self, steps: int, seconds: float, stopped: bool) -> EpochResult:
        if self.images == 0:
            return EpochResult(math.nan, math.nan, 0, 0, seconds, stopped)
        loss, accuracy = self.loss_sum.item() / self.images, self.correct.item() / self.images
        return EpochResult(loss, accuracy, self.images, steps, seconds, stopped)


def _is_set(stop) -> bool:
    return stop is not None and stop.is_set()


def _report(means, bar, callback, epoch: int, step: int, steps: int) -> None:
    """A read-back on the progress bar and to the callback."""
    loss, accuracy = means
    bar.update(step - bar.n)
    bar.set_postfix(loss=f"{loss:.4f}", acc=f"{accuracy:.3f}", refresh=False)
    event = {"event": "step", "epoch": epoch, "step": step, "steps": steps}
    _emit(callback, {**event, "loss": loss, "acc": accuracy})


def suggest_lr(lr: float) -> float:
    """A learning rate to try after `lr` diverged: a tenth of it, and never above 1e-3,
    where Adam trains every model of the course (paper A's 1e-4 is a tenth of that)."""
    return min(lr / 10, 1e-3)


# ---------------------------------------------------------------------------
# A whole training: fit
# ---------------------------------------------------------------------------


def fit(
    model,
    bundle,
    config: RunConfig,
    *,
    callback: Callback | None = None,
    stop=None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    device: torch.device | None = None,
) -> History:
    """Train `model` on `bundle` for `config.epochs` epochs and return the history.

    Validation runs every `config.val_every` epochs and after the last one. With a
    `run_dir`, a checkpoint and `metrics.csv` are written there at the end of every
    epoch, so an interruption loses at most the current epoch; `resume=True` first
    loads that checkpoint and continues (the loader's `set_epoch` makes epoch e's
    batches depend only on the seed and e, so the continued run repeats what the
    uninterrupted one would have done).

    Under torchrun (after `distributed.setup`), every rank calls `fit`: the model is
    trained through `DistributedDataParallel`, each rank takes its slice of every global
    batch of `config.batch_size` images, metrics are summed over the ranks and only rank
    0 writes to `run_dir`.

    Args:
        model: a `Classifier` (moved to the device here; trained in place).
        bundle: a `DataBundle` from `hybridlib.data.load_dataset`.
        config: a `RunConfig`.
        callback: the one hook for live displays, called with dicts: {"event": "start"},
            {"event": "step", ...}, {"event": "epoch", **history_row}, {"event": "end"}.
        stop: a `threading.Event`-like object; when set, training ends after the
            current step, keeping the model and the history of finished epochs.
        run_dir: where to write checkpoints and metrics (optional).
        resume: continue from `run_dir`'s checkpoint when there is one.
        device: the device (default: resolved from `config.device`).
    Returns:
        The `History` of all finished epochs (including those before a resume).
    """
    device = device or runtime.resolve_device(config.device)
    checkpoint = Path(run_dir) / rundir.CHECKPOINT_FILE if run_dir is not None else None
    with runtime.deterministic(config.deterministic):
        run = _prepare(model, bundle, config, device)
        history, first_epoch = _start(run, config, checkpoint if resume else None)
        return _epochs(run, history, first_epoch, config, callback, stop, checkpoint)


@dataclass
class _Run:
    """What `fit` trains with, made once per run."""

    raw_model: nn.Module  # the classifier: evaluated and saved
    model: nn.Module  # what trains: raw_model's DistributedDataParallel under torchrun
    train_batches: Any  # this rank's training batches (DeviceLoader or ShareWeighted)
    val_loader: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any  # a per-step schedule, or None
    ctx: Any  # the mixed-precision context, built once
    device: torch.device
    step_fn: Any = None  # the training step, made once the checkpoint (if any) is loaded


def _prepare(raw_model, bundle, config: RunConfig, device: torch.device) -> _Run:
    """The model on its device and in its layout, its loaders, optimiser and schedule."""
    channels_last = runtime.use_channels_last(device, config.channels_last)
    raw_model.to(device)
    if channels_last:
        raw_model.to(memory_format=torch.channels_last)
    crop = input_crop(raw_model, bundle.image_size)
    batch = distributed.per_rank_batch(config.batch_size, config.per_rank_batch)
    train_loader = _loader(
        bundle, "train", batch, device=device, augment=config.augment, flip=config.flip,
        crop=crop, seed=config.seed, channels_last=channels_last,
    )  # fmt: skip
    val_loader = _loader(
        bundle, "val", config.eval_batch_size, device=device, crop=crop,
        channels_last=channels_last,
    )  # fmt: skip
    # Under torchrun: DistributedDataParallel, told each rank's share of every batch.
    model, train_batches = distributed.wrap_model(
        raw_model, device, train_loader,
        global_batch=batch * distributed.world_size(), images=bundle.sizes["train"],
    )  # fmt: skip
    optimizer = make_optimizer(raw_model, config)
    scheduler = make_scheduler(optimizer, config, len(train_loader) * config.epochs)
    ctx = runtime.autocast(device, amp=config.amp, cpu_bf16=config.cpu_bf16)
    return _Run(raw_model, model, train_batches, val_loader, optimizer, scheduler, ctx, device)


def _loader(bundle, split: str, batch_size: int, **kwargs):
    """`bundle`'s loader of `split`: this rank's shard of it under torchrun."""
    return rank_loader(bundle, split, batch_size, shard=distributed.shard(), **kwargs)


def _start(run: _Run, config: RunConfig, checkpoint: Path | None) -> tuple[History, int]:
    """Resume from `checkpoint` if there is one, else seed; then make the training step.

    Returns:
        (the history so far, the first epoch to train)
    """
    state = _resume_state(checkpoint) if checkpoint is not None else None
    if state is None:
        # Dropout and anything else random in training start from the run's seed.
        runtime.seed_everything(distributed.rank_seed(config.seed))
        history, first_epoch = History(), 1
    else:
        history, first_epoch = _restore(run, config, state)
    # Made once per run: a graph step captures at its first batch and replays after.
    run.step_fn = fast.make_train_step(
        run.model,
        run.optimizer,
        device=run.device,
        ctx=run.ctx,
        label_smoothing=config.label_smoothing,
        scheduler=run.scheduler,
        # DDP's gradient all-reduce runs outside any CUDA graph: eager steps under torchrun
        mode="eager" if distributed.active() else config.step_mode,
    )
    return history, first_epoch


def _resume_state(checkpoint: Path) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None; under torchrun rank 0 reads it for all.

    Always read to the CPU: `load_state_dict` moves weights and optimiser state to their
    parameters' device, but keeps Adam's `step` counters where they are, on the CPU,
    where non-capturable Adam reads them without a host sync per parameter.
    """
    return distributed.on_main(
        lambda: load_checkpoint(checkpoint, "cpu") if checkpoint.is_file() else None
    )


def _restore(run: _Run, config: RunConfig, state: dict[str, Any]) -> tuple[History, int]:
    """Weights, optimiser, schedule and random state as the checkpoint left them."""
    run.raw_model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    if run.scheduler is None:  # a constant rate: the config's (a resume may lower it)
        for group in run.optimizer.param_groups:
            group["lr"] = config.lr
    elif state.get("scheduler") is not None:
        run.scheduler.load_state_dict(state["scheduler"])
    ranks = state.get("rng_ranks")  # every rank's, from a run under torchrun
    own = ranks is not None and len(ranks) == distributed.world_size()
    system.set_rng_state(ranks[distributed.rank()] if own else state["rng"])
    return History(state["history"]), state["epoch"] + 1


def _epochs(run: _Run, history, first_epoch, config, callback, stop, checkpoint) -> History:
    """The epoch loop: train, validate when due, save, report."""
    start_event = {"event": "start", "epoch": first_epoch, "epochs": config.epochs}
    _emit(callback, {**start_event, "steps": len(run.train_batches), "device": str(run.device)})
    for epoch in range(first_epoch, config.epochs + 1):
        start = time.perf_counter()
        lr = float(run.optimizer.param_groups[0]["lr"])  # a tensor in a graph step with a schedule
        result = _train_epoch(run, epoch, config, callback, stop, checkpoint)
        if result.stopped and result.steps < len(run.train_batches):
            history.stopped_at = (epoch, result.steps)  # a partial epoch: no row, no checkpoint
            break
        history.append(_epoch_row(run, epoch, config, result, lr, start))
        _save(run, history, epoch, config, checkpoint)
        if config.progress:
            tqdm.write(_epoch_line(history.last, config.epochs), file=sys.stderr)
        _emit(callback, {"event": "epoch", **history.last})
        if result.stopped:  # the stop came with the epoch's last step
            history.stopped_at = (epoch, result.steps) if epoch < config.epochs else None
            break
    _emit(callback, {"event": "end", "epochs_done": len(history), "stopped": history.stopped_at})
    return history


def _train_epoch(run: _Run, epoch, config, callback, stop, checkpoint) -> EpochResult:
    """One epoch's training steps; a divergence names the checkpoint to go on from."""
    run.train_batches.set_epoch(epoch)  # epoch e's order and flips: from the seed and e
    try:
        return run_epoch(
            run.model, run.train_batches, run.optimizer, step_fn=run.step_fn, epoch=epoch,
            epochs=config.epochs, callback=callback, stop=stop, progress=config.progress,
        )  # fmt: skip
    except DivergedError as error:
        if checkpoint is None:
            raise
        if checkpoint.is_file():
            lr = suggest_lr(float(run.optimizer.param_groups[0]["lr"]))
            kept = (
                f"the last good checkpoint (epoch {epoch - 1}) is kept in {checkpoint}; "
                f"continue from it with --out {checkpoint.parent} --resume --lr {lr:g}"
            )
        else:
            kept = "no epoch finished, so there is no checkpoint"
        raise DivergedError(f"{error}; {kept}", epoch=error.epoch, step=error.step) from None


def _epoch_row(run: _Run, epoch, config, result: EpochResult, lr, start) -> dict[str, Any]:
    """A finished epoch's history row: training over all ranks, validation when due."""
    result = distributed.reduce_epoch(result)  # over all ranks' images
    distributed.sync_buffers(run.raw_model)  # every rank evaluates rank 0's batch-norm stats
    row = {"epoch": epoch, "train_loss": result.loss, "train_acc": result.accuracy}
    row.update(lr=lr, images_per_s=result.images_per_s)
    if epoch % config.val_every == 0 or epoch == config.epochs:
        val = evaluate(
            run.raw_model, run.val_loader, device=run.device, ctx=run.ctx, desc="validate",
            progress=config.progress,
        )  # fmt: skip
        val = distributed.reduce_eval(val, run.val_loader)
        row.update(val_loss=val.loss, val_acc=val.accuracy)
    row["time_s"] = time.perf_counter() - start
    return row


def _save(run: _Run, history: History, epoch: int, config, checkpoint: Path | None) -> None:
    """Rank 0 writes the checkpoint and metrics.csv (every rank's RNG state goes in)."""
    rng_ranks = distributed.gather_object(system.get_rng_state())  # every rank; None alone
    if checkpoint is None or not distributed.is_main():
        return
    state = {
        "format": rundir.CHECKPOINT_FORMAT,
        "epoch": epoch,
        "model": run.raw_model.state_dict(),
        "model_args": _model_args(config, run.raw_model.num_classes),  # rebuilds the model
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
        "history": history.to_records(),
        "rng": system.get_rng_state(),
        **({"rng_ranks": rng_ranks} if rng_ranks is not None else {}),
        "config": config.to_dict(),
    }
    save_checkpoint(checkpoint, state)
    metrics = history.to_frame().to_csv(index=False)
    rundir.write_text_atomic(checkpoint.parent / rundir.METRICS_FILE, metrics)


def _emit(callback: Callback | None, event: dict[str, Any]) -> None:
    if callback is not None:
        callback(event)


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    line = (
        f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f} "
        f"acc {row['train_acc']:.1%}"
    )
    if not math.isnan(row["val_acc"]):
        line += f"  |  val loss {row['val_loss']:.4f} acc {row['val_acc']:.1%}"
    return line + f"  |  {row['time_s']:.1f} s, {row['images_per_s']:,.0f} img/s"


def _model_args(config: RunConfig, num_classes: int) -> dict[str, Any]:
    """What `build_model` needs to make a run's model; saved in every checkpoint."""
    return {
        "name": config.model,
        "num_classes": num_classes,
        "batch_norm": config.batch_norm,
        "dropout": config.dropout,
    }


# ---------------------------------------------------------------------------
# A run in its run directory
# ---------------------------------------------------------------------------


def run_training(
    config: RunConfig,
    *,
    callback: Callback | None = None,
    stop=None,
    resume: bool = False,
    changes: dict[str, Any] | None = None,
) -> Path:
    """Train one model as `config` says, writing everything into a run directory.

    Args:
        config: the run's `RunConfig`; `config.out` names the run directory (default:
            a new folder under `$HYBRIDLIB_RUNS/runs`).
        callback: the live-display hook passed to `fit`.
        stop: a `threading.Event`-like stop request passed to `fit`; a stopped run
            is left resumable and its summary says "stopped".
        resume: continue the run in `config.out` from its last checkpoint, with its
            saved config.json (only device, data root and progress may change).
        changes: on resume, settings to change: `{"epochs": 40}` extends a run,
            `{"lr": 1e-5}` continues a diverged one; other differences are refused.
    Returns:
        The run directory.
    """
    wall_start = time.perf_counter()
    device = distributed.setup(config.device)  # joins torchrun's process group, if any
    if not resume:  # a global batch that does not split over the ranks: stop before writing
        distributed.per_rank_batch(config.batch_size, config.per_rank_batch)
    # Rank 0 alone chooses, locks and writes the run directory; every rank gets its name.
    resume = distributed.broadcast_object(resume)
    run_dir, config = distributed.on_main(rundir.prepare_run_dir, config, resume, changes)
    try:
        return _train_in(run_dir, config, callback, stop, resume, device, wall_start)
    except Exception:
        if not resume:
            rundir.remove_unstarted(run_dir)  # failed before an epoch: no half-made folder
        raise
    finally:
        rundir.unlock_run_dir(run_dir)


def _train_in(run_dir, config, callback, stop, resume, device, wall_start) -> Path:
    """`run_training` once its run directory is chosen and locked."""
    # A resumed run's wall time includes the epochs trained before (metrics.csv's times).
    earlier_s = rundir.earlier_epochs_time(run_dir) if resume else 0.0
    if not distributed.is_main():
        config = config.replace(progress=False)  # one progress display: rank 0's
    runtime.set_threads(device, distributed.threads())
    runtime.seed_everything(config.seed)  # model weights come from the seed
    bundle = load_bundle(config)
    _check_data(run_dir, bundle, resume)
    model = build_model(**_model_args(config, bundle.num_classes))
    if config.progress:
        _say_start(run_dir, config, bundle, device)
    base = {"config": config, "bundle": bundle, "model": model, "device": device}
    history = _fit_with_summary(run_dir, base, callback, stop, resume)
    if history.stopped_at is not None:
        rundir.write_summary(run_dir, status="stopped", history=history, **base)
        return run_dir
    test = _test_split(model, bundle, config, device)
    rundir.write_test_files(run_dir, test)
    wall_time_s = earlier_s + time.perf_counter() - wall_start
    rundir.write_summary(
        run_dir, status="complete", history=history, test=test, wall_time_s=wall_time_s, **base
    )
    distributed.barrier()  # the run directory is complete when any rank returns
    if config.progress:
        print(
            f"hybridlib: test accuracy {test.accuracy:.2%} on {test.num_samples:,} images; "
            f"run directory {run_dir}",
            file=sys.stderr,
        )
    return run_dir


def _say_start(run_dir: Path, config: RunConfig, bundle, device: torch.device) -> None:
    sizes = bundle.sizes
    print(
        f"hybridlib: {config.model} on {config.dataset} "
        f"({sizes['train']:,} / {sizes['val']:,} / {sizes['test']:,} images), "
        f"{config.epochs} epoch{'s' if config.epochs != 1 else ''}, "
        f"device {runtime.describe_device(device)}{distributed.describe()}\n"
        f"hybridlib: run directory {run_dir}",
        file=sys.stderr,
        flush=True,
    )


def _fit_with_summary(run_dir: Path, base: dict[str, Any], callback, stop, resume) -> History:
    """`fit` into `run_dir`; a run that diverges or is interrupted leaves a summary saying so."""
    try:
        return fit(
            base["model"], base["bundle"], base["config"], callback=callback, stop=stop,
            run_dir=run_dir, resume=resume, device=base["device"],
        )  # fmt: skip
    except DivergedError as error:
        rundir.write_summary(run_dir, status="diverged", message=str(error), **base)
        raise
    except KeyboardInterrupt:
        with system.shielded(deliver=False):  # a second Ctrl-C must not lose the summary
            rundir.write_summary(run_dir, status="interrupted", **base)
            print(
                f"hybridlib: interrupted; continue with: python -m hybridlib train "
                f"--out {run_dir} --resume",
                file=sys.stderr,
            )
        raise


def _check_data(run_dir: Path, bundle, resume: bool) -> None:
    """Before the first epoch: the splits are the recorded ones and every image decodes.

    A resumed run whose data no longer gives its splits is refused (it would test on
    images it trained on); a new run records its splits once they all decode.
    """
    checkpoint = run_dir / rundir.CHECKPOINT_FILE
    continuing = resume and distributed.on_main(checkpoint.is_file)
    if continuing:
        fix = (
            "restore the data as it was (or pass the --data-root that holds it), or start a "
            "new run in another --out without --resume"
        )
        distributed.on_main(rundir.check_splits, run_dir, bundle, fix)
    bundle.check()  # every rank: decodes (or reads from the cache) all three splits
    if not continuing:
        distributed.on_main(rundir.write_splits, run_dir, bundle)


def _test_split(model, bundle, config: RunConfig, device: torch.device) -> EvalResult:
    channels_last = runtime.use_channels_last(device, config.channels_last)
    crop = input_crop(model, bundle.image_size)
    loader = _loader(
        bundle, "test", config.eval_batch_size, device=device, crop=crop,
        channels_last=channels_last,
    )  # fmt: skip
    ctx = runtime.autocast(device, amp=config.amp, cpu_bf16=config.cpu_bf16)
    with runtime.deterministic(config.deterministic):
        result = evaluate(
            model, loader, device=device, ctx=ctx, num_classes=bundle.num_classes,
            classes=list(bundle.classes), predictions=True, desc="test",
            progress=config.progress,
        )  # fmt: skip
    return distributed.reduce_eval(result, loader)  # every image once, over all ranks


# ---------------------------------------------------------------------------
# A finished run: its model and its test split
# ---------------------------------------------------------------------------


def load_run_model(run_dir: str | os.PathLike, device: str | torch.device = "cpu"):
    """The trained model of a run directory and its config.

    The model is rebuilt from the checkpoint's `model_args` (name, classes, batch norm,
    dropout); a checkpoint from before they were saved takes its number of classes
    from the run's own records (summary.json, splits.json, config.json).

    Returns:
        (model in eval mode on `device`, RunConfig)
    """
    run_dir = Path(run_dir)
    if not (run_dir / rundir.CONFIG_FILE).is_file():
        raise HybridError(f"{run_dir} is not a run directory: it has no {rundir.CONFIG_FILE}")
    config = RunConfig.from_json(run_dir / rundir.CONFIG_FILE)
    device = runtime.resolve_device(device)
    state = load_checkpoint(run_dir / rundir.CHECKPOINT_FILE, device)
    _check_same_run(run_dir, state, config)
    args = state.get("model_args") or _model_args(config, _recorded_classes(run_dir, config))
    model = build_model(**args)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError:
        raise HybridError(
            f"{run_dir}: checkpoint.pt does not fit the {config.model} model its config.json "
            "describes (different layers or sizes); the two files belong to different runs"
        ) from None
    return model.to(device).eval(), config


def _check_same_run(run_dir: Path, state: dict[str, Any], config: RunConfig) -> None:
    """Refuse a checkpoint trained with another model than config.json describes."""
    saved = state.get("config") or {}  # the settings the checkpoint was trained with
    for name in ("model", "batch_norm", "dropout"):
        if name in saved and saved[name] != getattr(config, name):
            raise HybridError(
                f"{run_dir}: checkpoint.pt holds a {name}={saved[name]!r} model but "
                f"config.json says {name}={getattr(config, name)!r}; restore the run's own "
                "config.json (or checkpoint), the two files belong to different runs"
            )


def _recorded_classes(run_dir: Path, config: RunConfig) -> int:
    """The number of classes a run's records name (for checkpoints without model_args)."""
    for name in (rundir.SUMMARY_FILE, rundir.SPLITS_FILE):  # both list the classes
        try:
            return len(json.loads((run_dir / name).read_text())["classes"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    if config.num_classes is not None:
        return config.num_classes
    raise HybridError(
        f"{run_dir}: cannot tell how many classes its model has: checkpoint.pt predates "
        f"saved model arguments and neither {rundir.SUMMARY_FILE} nor {rundir.SPLITS_FILE} "
        "is there to name the classes; restore one of them from the run"
    )


def evaluate_run(
    run_dir: str | os.PathLike,
    *,
    data_root: str | None = None,
    device: str = "auto",
    write: bool = True,
) -> EvalResult:
    """Evaluate a run's checkpoint on its test split (and rewrite its test files).

    Args:
        run_dir: a directory written by `run_training`.
        data_root: where the data is (default: the run's).
        device: where to evaluate.
        write: rewrite predictions.csv, confusion.csv and per_class.csv.
    """
    run_dir = Path(run_dir)
    torch_device = runtime.resolve_device(device)
    model, config = load_run_model(run_dir, torch_device)
    config = config.replace(data_root=data_root or config.data_root, device=device)
    bundle = load_bundle(config)
    fix = (
        "restore the data as it was (or pass the --data-root that holds it); a changed "
        "test split would mix in images the model trained on"
    )
    rundir.check_splits(run_dir, bundle, fix)
    result = _test_split(model, bundle, config, torch_device)
    if write:
        rundir.write_test_files(run_dir, result)
    return result


def config_from_args(args, **overrides: Any) -> RunConfig:
    """A `RunConfig` from parsed `train` (or `reproduce`) arguments.

    With `--recipe improved`, the recipe's settings replace the paper's defaults;
    an option given on the command line still wins (options left out are None).
    """
    values = {
        name: getattr(args, name)
        for name in TRAIN_OPTIONS
        if getattr(args, name, None) is not None  # None: the recipe's
    }
    values.update(overrides)
    return RunConfig.from_recipe(values.pop("recipe", "paper"), **values)


def cli_train(args) -> int:
    """`python -m hybridlib train ...`"""
    resume = bool(getattr(args, "resume", False))
    if resume and not args.out:
        raise HybridError("--resume needs --out RUN_DIR: the run directory to continue")
    config = config_from_args(args)
    changes = None
    if resume:  # what the command line asks to change: the options written on it
        given, fields = getattr(args, "given", set()), config.to_dict()
        changes = {name: fields[name] for name in TRAIN_OPTIONS if name in given}
    with distributed.peer_errors(run_dir=config.out):
        run_dir = run_training(config, resume=resume, changes=changes)
    if not distributed.is_main():  # rank 0 reports for all
        return 0
    summary = json.loads((run_dir / rundir.SUMMARY_FILE).read_text())
    print(
        f"{summary['model']} on {summary['dataset']}: test accuracy {summary['test_acc']:.2%} "
        f"({summary['test_size']:,} images), {summary['train_time_s']:.1f} s training; "
        f"run directory {run_dir}"
    )
    return 0


def cli_evaluate(args) -> int:
    """`python -m hybridlib evaluate RUN_DIR`"""
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise HybridError(f"run directory {str(run_dir)!r} does not exist")
    result = evaluate_run(run_dir, data_root=args.data_root, device=args.device)
    table = result.per_class()
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        print(table.to_string())
    print(
        f"test accuracy {result.accuracy:.2%} ({result.num_samples:,} images), "
        f"loss {result.loss:.4f}; wrote {rundir.PREDICTIONS_FILE}, {rundir.CONFUSION_FILE}, "
        f"{rundir.PER_CLASS_FILE} in {run_dir}"
    )
    return 0


Callback = Callable[[dict[str, Any]], None]
