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
(model, optimiser, scheduler, epoch, history, RNG states; rewritten atomically at the
end of every epoch), and, once training ends, `predictions.csv`, `confusion.csv`,
`per_class.csv` on the test split and `summary.json`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from hybridlib import runtime
from hybridlib.config import RunConfig
from hybridlib.engine import distributed, fast, rundir
from hybridlib.engine.loading import load_bundle, rank_loader
from hybridlib.engine.rundir import load_checkpoint, save_checkpoint
from hybridlib.errors import HybridError
from hybridlib.history import History
from hybridlib.models import build_model
from hybridlib.train import (
    EpochResult,
    EvalResult,
    _bar,
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


def run_epoch(
    model,
    loader,
    optimizer,
    *,
    device: torch.device,
    epoch: int = 1,
    epochs: int | None = None,
    scheduler=None,
    amp: bool = True,
    cpu_bf16: bool = False,
    label_smoothing: float = 0.0,
    callback: Callback | None = None,
    stop=None,
    progress: bool = True,
    sync_every: int | None = None,
    step_fn=None,
) -> EpochResult:
    """Train for one pass over `loader`.

    Losses and correct counts are summed on the device and read back every
    `sync_every` steps (every step on the CPU, where reading is free; every 25 on a
    GPU, so it is not stalled). At each read the losses are checked: a NaN or an
    infinity raises `DivergedError` naming the epoch and the exact step.

    Args:
        model: a `Classifier` on `device`.
        loader: yields (x, y) batches on `device` (a `DeviceLoader`).
        optimizer, scheduler: the optimiser and an optional per-step schedule.
        epoch, epochs: for messages and the progress bar.
        callback: called with {"event": "step", ...} at every read-back.
        stop: an object with `is_set()` (e.g. `threading.Event`), checked after every
            step; when set, the epoch ends after the current step.
        progress: show a tqdm progress bar.
        step_fn: a training step `step_fn(x, y) -> (loss, correct)` from
            `hybridlib.engine.fast.make_train_step` (e.g. a CUDA-graph step, built once per run);
            default: the eager `train_step` with the arguments above.
    Returns:
        An `EpochResult` (mean loss, accuracy 0..1, images, steps, seconds, stopped).
    """
    if step_fn is None:
        step_fn = fast.make_train_step(
            model,
            optimizer,
            device=device,
            amp=amp,
            cpu_bf16=cpu_bf16,
            label_smoothing=label_smoothing,
            scheduler=scheduler,
        )
    model.train()
    steps = len(loader)
    sync_every = sync_every or (1 if device.type == "cpu" else 25)
    loss_sum = torch.zeros((), device=device)  # sum of per-image losses
    correct = torch.zeros((), dtype=torch.int64, device=device)
    pending: list[torch.Tensor] = []  # step losses not yet checked on the host
    images = 0
    step = 0
    stopped = False
    label = f"epoch {epoch}/{epochs}" if epochs else f"epoch {epoch}"
    bar = _bar(total=steps, desc=label, unit="step", progress=progress)
    start = time.perf_counter()
    for step, (x, y) in enumerate(loader, start=1):
        loss, right = step_fn(x, y)
        batch = y.shape[0]
        loss_sum += loss.float() * batch
        correct += right
        images += batch
        pending.append(loss)
        stopping = stop is not None and stop.is_set()
        if step % sync_every == 0 or step == steps or stopping:
            _checkfinite(pending, step, steps, epoch, optimizer)
            pending.clear()
            mean_loss, accuracy = loss_sum.item() / images, correct.item() / images
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{mean_loss:.4f}", acc=f"{accuracy:.3f}", refresh=False)
            if callback is not None:
                callback(
                    {
                        "event": "step",
                        "epoch": epoch,
                        "step": step,
                        "steps": steps,
                        "loss": mean_loss,
                        "acc": accuracy,
                    }
                )
        # a stop requested before or during this step's read-back ends the epoch here
        if stop is not None and stop.is_set():
            if pending:  # set by another thread after the read-back decision
                _checkfinite(pending, step, steps, epoch, optimizer)
            stopped = True
            break
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    if images == 0:
        return EpochResult(math.nan, math.nan, 0, 0, seconds, stopped)
    return EpochResult(
        loss=loss_sum.item() / images,
        accuracy=correct.item() / images,
        images=images,
        steps=step,
        seconds=seconds,
        stopped=stopped,
    )


def suggest_lr(lr: float) -> float:
    """A learning rate to try after `lr` diverged: a tenth of it, and never above 1e-3,
    where Adam trains every model of the course (paper A's 1e-4 is a tenth of that)."""
    return min(lr / 10, 1e-3)


def _checkfinite(losses, last_step, steps, epoch, optimizer) -> None:
    values = torch.stack(losses).float().cpu()
    bad = (~torch.isfinite(values)).nonzero()
    if len(bad) == 0:
        return
    index = int(bad[0])
    step = last_step - len(losses) + 1 + index
    lr = float(optimizer.param_groups[0]["lr"])
    raise DivergedError(
        f"training diverged: the loss became {values[index].item()} at epoch {epoch}, "
        f"step {step} of {steps}; the learning rate {lr:g} is probably too high, "
        f"try a lower one, e.g. --lr {suggest_lr(lr):g} (paper A uses 1e-4)",
        epoch=epoch,
        step=step,
    )


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
    with runtime.deterministic(config.deterministic):
        return _fit(model, bundle, config, callback, stop, run_dir, resume, device)


def _fit(model, bundle, config, callback, stop, run_dir, resume, device) -> History:
    channels_last = runtime.use_channels_last(device, config.channels_last)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    # Under torchrun: DistributedDataParallel; `model` itself is evaluated and saved.
    train_model = distributed.wrap_model(model, device)
    crop = input_crop(model, bundle.image_size)
    train_loader = rank_loader(
        bundle,
        "train",
        distributed.per_rank_batch(config.batch_size, config.per_rank_batch),
        device=device,
        augment=config.augment,
        flip=config.flip,
        crop=crop,
        seed=config.seed,
        shard=distributed.shard(),
        channels_last=channels_last,
    )
    val_loader = rank_loader(
        bundle,
        "val",
        config.eval_batch_size,
        device=device,
        crop=crop,
        shard=distributed.shard(),
        channels_last=channels_last,
    )
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, len(train_loader) * config.epochs)
    history = History()
    first_epoch = 1
    checkpoint = Path(run_dir) / rundir.CHECKPOINT_FILE if run_dir is not None else None
    state = _resume_state(checkpoint, device) if resume and checkpoint is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is None:  # a constant rate: the config's (a resume may lower it)
            for group in optimizer.param_groups:
                group["lr"] = config.lr
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        history = History(state["history"])
        first_epoch = state["epoch"] + 1
        ranks = state.get("rng_ranks")  # every rank's, from a run under torchrun
        own = ranks is not None and len(ranks) == distributed.world_size()
        runtime.set_rng_state(ranks[distributed.rank()] if own else state["rng"])
    else:
        # Dropout and anything else random in training start from the run's seed.
        runtime.seed_everything(distributed.rank_seed(config.seed))
    # Built once per run: a graph step captures at its first batch and replays after.
    step_fn = fast.make_train_step(
        train_model,
        optimizer,
        device=device,
        amp=config.amp,
        cpu_bf16=config.cpu_bf16,
        label_smoothing=config.label_smoothing,
        scheduler=scheduler,
        # DDP's gradient all-reduce runs outside any CUDA graph: eager steps under torchrun
        mode="eager" if distributed.active() else config.step_mode,
    )

    _emit(
        callback,
        {
            "event": "start",
            "epoch": first_epoch,
            "epochs": config.epochs,
            "steps": len(train_loader),
            "device": str(device),
        },
    )
    for epoch in range(first_epoch, config.epochs + 1):
        start = time.perf_counter()
        train_loader.set_epoch(epoch)
        lr = float(optimizer.param_groups[0]["lr"])  # a tensor in a graph step with a schedule
        try:
            result = run_epoch(
                train_model,
                train_loader,
                optimizer,
                device=device,
                epoch=epoch,
                epochs=config.epochs,
                scheduler=scheduler,
                amp=config.amp,
                cpu_bf16=config.cpu_bf16,
                label_smoothing=config.label_smoothing,
                callback=callback,
                stop=stop,
                progress=config.progress,
                step_fn=step_fn,
            )
        except DivergedError as error:
            if checkpoint is not None:
                kept = (
                    f"the last good checkpoint (epoch {epoch - 1}) is kept in {checkpoint}; "
                    f"continue from it with --out {checkpoint.parent} --resume --lr "
                    f"{suggest_lr(float(optimizer.param_groups[0]['lr'])):g}"
                    if checkpoint.is_file()
                    else "no epoch finished, so there is no checkpoint"
                )
                message = f"{error}; {kept}"
                raise DivergedError(message, epoch=error.epoch, step=error.step) from None
            raise
        if result.stopped and result.steps < len(train_loader):
            history.stopped_at = (epoch, result.steps)
            break
        result = distributed.reduce_epoch(result)  # over all ranks' images
        distributed.sync_buffers(model)  # every rank evaluates rank 0's batch-norm statistics
        row = {
            "epoch": epoch,
            "train_loss": result.loss,
            "train_acc": result.accuracy,
            "lr": lr,
            "images_per_s": result.images_per_s,
        }
        if epoch % config.val_every == 0 or epoch == config.epochs:
            val = evaluate(
                model,
                val_loader,
                device=device,
                amp=config.amp,
                cpu_bf16=config.cpu_bf16,
                desc="validate",
                progress=config.progress,
            )
            val = distributed.reduce_eval(val, val_loader)
            row.update(val_loss=val.loss, val_acc=val.accuracy)
        row["time_s"] = time.perf_counter() - start
        history.append(row)
        rng_ranks = distributed.gather_object(runtime.get_rng_state())  # None alone
        if run_dir is not None and distributed.is_main():
            save_checkpoint(
                checkpoint,
                {
                    "format": rundir.CHECKPOINT_FORMAT,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "history": history.to_records(),
                    "rng": runtime.get_rng_state(),
                    **({"rng_ranks": rng_ranks} if rng_ranks is not None else {}),
                    "config": config.to_dict(),
                },
            )
            rundir.write_text_atomic(
                Path(run_dir) / rundir.METRICS_FILE, history.to_frame().to_csv(index=False)
            )
        if config.progress:
            tqdm.write(_epoch_line(history.last, config.epochs), file=sys.stderr)
        _emit(callback, {"event": "epoch", **history.last})
        if result.stopped:  # the stop came with the epoch's last step
            history.stopped_at = (epoch, result.steps) if epoch < config.epochs else None
            break
    _emit(callback, {"event": "end", "epochs_done": len(history), "stopped": history.stopped_at})
    return history


def _emit(callback: Callback | None, event: dict[str, Any]) -> None:
    if callback is not None:
        callback(event)


def _resume_state(checkpoint: Path, device: torch.device) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None; under torchrun rank 0 reads it for all.

    Always read to the CPU: `load_state_dict` moves weights and optimiser state to their
    parameters' device, but keeps Adam's `step` counters where they are, on the CPU,
    where non-capturable Adam reads them without a host sync per parameter.
    """
    if not distributed.active():
        return load_checkpoint(checkpoint, "cpu") if checkpoint.is_file() else None
    return distributed.on_main(
        lambda: load_checkpoint(checkpoint, "cpu") if checkpoint.is_file() else None
    )


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    line = (
        f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f} "
        f"acc {row['train_acc']:.1%}"
    )
    if not math.isnan(row["val_acc"]):
        line += f"  |  val loss {row['val_loss']:.4f} acc {row['val_acc']:.1%}"
    return line + f"  |  {row['time_s']:.1f} s, {row['images_per_s']:,.0f} img/s"


def _build_model(config: RunConfig, num_classes: int):
    return build_model(
        config.model, num_classes, batch_norm=config.batch_norm, dropout=config.dropout
    )


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
    model = _build_model(config, bundle.num_classes)
    if config.progress:
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
    base = {"config": config, "bundle": bundle, "model": model, "device": device}
    try:
        history = fit(
            model,
            bundle,
            config,
            callback=callback,
            stop=stop,
            run_dir=run_dir,
            resume=resume,
            device=device,
        )
    except DivergedError as error:
        rundir.write_summary(run_dir, status="diverged", message=str(error), **base)
        raise
    except KeyboardInterrupt:
        with runtime.shielded(deliver=False):  # a second Ctrl-C must not lose the summary
            rundir.write_summary(run_dir, status="interrupted", **base)
            print(
                f"hybridlib: interrupted; continue with: python -m hybridlib train "
                f"--out {run_dir} --resume",
                file=sys.stderr,
            )
        raise
    if history.stopped_at is not None:
        rundir.write_summary(run_dir, status="stopped", history=history, **base)
        return run_dir
    test = _test_split(model, bundle, config, device)
    rundir.write_test_files(run_dir, test)
    rundir.write_summary(
        run_dir,
        status="complete",
        history=history,
        test=test,
        wall_time_s=earlier_s + time.perf_counter() - wall_start,
        **base,
    )
    distributed.barrier()  # the run directory is complete when any rank returns
    if config.progress:
        print(
            f"hybridlib: test accuracy {test.accuracy:.2%} on {test.num_samples:,} images; "
            f"run directory {run_dir}",
            file=sys.stderr,
        )
    return run_dir


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
    loader = rank_loader(
        bundle,
        "test",
        config.eval_batch_size,
        device=device,
        crop=input_crop(model, bundle.image_size),
        shard=distributed.shard(),
        channels_last=channels_last,
    )
    with runtime.deterministic(config.deterministic):
        result = evaluate(
            model,
            loader,
            device=device,
            num_classes=bundle.num_classes,
            classes=list(bundle.classes),
            amp=config.amp,
            cpu_bf16=config.cpu_bf16,
            predictions=True,
            desc="test",
            progress=config.progress,
        )
    return distributed.reduce_eval(result, loader)  # every image once, over all ranks


def load_run_model(run_dir: str | os.PathLike, device: str | torch.device = "cpu"):
    """The trained model of a run directory and its config.

    Returns:
        (model in eval mode on `device`, RunConfig)
    """
    run_dir = Path(run_dir)
    if not (run_dir / rundir.CONFIG_FILE).is_file():
        raise HybridError(f"{run_dir} is not a run directory: it has no {rundir.CONFIG_FILE}")
    config = RunConfig.from_json(run_dir / rundir.CONFIG_FILE)
    device = runtime.resolve_device(device)
    state = load_checkpoint(run_dir / rundir.CHECKPOINT_FILE, device)
    saved = state.get("config") or {}  # the settings the checkpoint was trained with
    for name in ("model", "batch_norm", "dropout"):
        if name in saved and saved[name] != getattr(config, name):
            raise HybridError(
                f"{run_dir}: checkpoint.pt holds a {name}={saved[name]!r} model but "
                f"config.json says {name}={getattr(config, name)!r}; restore the run's own "
                "config.json (or checkpoint), the two files belong to different runs"
            )
    num_classes = _num_classes_in(state["model"])
    model = _build_model(config, num_classes)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError:
        raise HybridError(
            f"{run_dir}: checkpoint.pt does not fit the {config.model} model its config.json "
            "describes (different layers or sizes); the two files belong to different runs"
        ) from None
    return model.to(device).eval(), config


def _num_classes_in(state_dict) -> int:
    # the last 2-D weight with a matching bias is the classifier's output layer
    # (the auto-encoder's decoder comes after its head, so look at 'head.' first)
    names = [n for n in state_dict if n.startswith("head") and n.endswith("weight")]
    names = names or [n for n in state_dict if n.endswith("weight")]
    for name in reversed(names):
        if state_dict[name].dim() == 2:
            return int(state_dict[name].shape[0])
    raise HybridError("cannot find the classifier layer in the checkpoint")


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


_ARG_FIELDS = {
    "model": "model",
    "dataset": "dataset",
    "batch_size": "batch_size",
    "epochs": "epochs",
    "lr": "lr",
    "weight_decay": "weight_decay",
    "flip": "flip",
    "val_every": "val_every",
    "seed": "seed",
    "device": "device",
    "data_root": "data_root",
    "download": "download",
    "limit": "limit",
    "folder": "folder",
    "num_classes": "num_classes",
    "deterministic": "deterministic",
    "cpu_bf16": "cpu_bf16",
    "per_rank_batch": "per_rank_batch",
    "step_mode": "step_mode",
    "out": "out",
}


def config_from_args(args, **overrides: Any) -> RunConfig:
    """A `RunConfig` from parsed `train` (or `reproduce`) arguments.

    With `--recipe improved`, the recipe's settings replace the paper's defaults;
    an option given on the command line still wins (options left out are None).
    """
    values = {
        name: getattr(args, option)
        for option, name in _ARG_FIELDS.items()
        if getattr(args, option, None) is not None
    }
    values["augment"] = not getattr(args, "no_augment", False)
    values["amp"] = not getattr(args, "no_amp", False)
    values.update(overrides)
    recipe = getattr(args, "recipe", "paper") or "paper"
    return RunConfig.from_recipe(recipe, **values)


def cli_train(args) -> int:
    """`python -m hybridlib train ...`"""
    resume = bool(getattr(args, "resume", False))
    if resume and not args.out:
        raise HybridError("--resume needs --out RUN_DIR: the run directory to continue")
    config = config_from_args(args)
    changes = None
    if resume:  # what the command line asks to change: the options written on it
        given, fields = getattr(args, "given", set()), config.to_dict()
        options = {**_ARG_FIELDS, "recipe": "recipe", "no_augment": "augment", "no_amp": "amp"}
        changes = {field: fields[field] for option, field in options.items() if option in given}
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
