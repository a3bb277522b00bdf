"""Training and evaluation, written out: `train_one_epoch`, `evaluate`, `fit`.

    from hybridlib.config import RunConfig
    from hybridlib.data import load_dataset
    from hybridlib.models import build_model
    from hybridlib.train import fit

    bundle = load_dataset("digits")
    model = build_model("cnn", bundle.num_classes)
    history = fit(model, bundle, RunConfig(epochs=2))
    history.to_frame()

This is the loop to read: forward, loss, backward, step, for every batch; then an
evaluation. What a long run needs besides (checkpoints and `--resume`, a stop
button, several processes under torchrun, CUDA-graph steps, run directories) is
`hybridlib.engine.trainer`, which runs the same arithmetic: a test checks that its
eager path gives these functions' numbers bit for bit.

Paper A's settings are the defaults (see `hybridlib.config`): batch 16, lr 1e-4,
30 epochs, validation every 5 epochs (and after the last), flips. The test split
is evaluated once, with the final weights, as paper A reports.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from hybridlib import runtime
from hybridlib.config import RunConfig
from hybridlib.errors import HybridError
from hybridlib.history import History
from hybridlib.metrics import ConfusionMatrix, confusion_frame, per_class
from hybridlib.progress import bar as progress_bar

__all__ = [
    "EpochResult",
    "EvalResult",
    "History",
    "evaluate",
    "fit",
    "input_crop",
    "make_optimizer",
    "make_scheduler",
    "train_one_epoch",
    "train_step",
    "training_loss",
]

Callback = Callable[[dict[str, Any]], None]


@dataclass
class EpochResult:
    """What `train_one_epoch` returns. Loss and accuracy are means over the images seen."""

    loss: float
    accuracy: float
    images: int
    steps: int
    seconds: float
    stopped: bool = False

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else math.nan


@dataclass
class EvalResult:
    """What `evaluate` returns.

    Attributes:
        loss, accuracy: means over the split (accuracy 0..1).
        num_samples: images evaluated.
        confusion: (K, K) int64 counts on the CPU, rows true, columns predicted.
        predictions: per image (index, target, prediction, confidence, correct, names),
            when asked for.
    """

    loss: float
    accuracy: float
    num_samples: int
    confusion: torch.Tensor
    seconds: float
    predictions: pd.DataFrame | None = None
    classes: list[str] | None = field(default=None, repr=False)

    def per_class(self) -> pd.DataFrame:
        return per_class(self.confusion, self.classes)

    def confusion_frame(self) -> pd.DataFrame:
        return confusion_frame(self.confusion, self.classes)


def make_optimizer(
    model: torch.nn.Module, config: RunConfig, *, fused: bool = False
) -> torch.optim.Optimizer:
    """The optimiser named by `config.optimizer` (paper A: Adam, lr 1e-4).

    fused: one fused kernel for the whole update (`bench`'s fastest CPU path); faster
    still, but it rounds differently from the loop, so training runs do not use it.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    # foreach: one multi-tensor update for all parameters instead of a Python loop over
    # them; bit-identical to the loop (tests/test_train.py), 7 % faster per CPU step for
    # `cnn` here, and what PyTorch already picks for CUDA tensors
    options = dict(lr=config.lr, weight_decay=config.weight_decay)
    options["fused" if fused else "foreach"] = True
    if config.optimizer == "adam":
        return torch.optim.Adam(params, **options)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, **options)
    return torch.optim.SGD(params, momentum=config.momentum, **options)


def make_scheduler(optimizer, config: RunConfig, total_steps: int):
    """The per-step learning-rate schedule, or None for a constant rate (the papers')."""
    if config.scheduler == "none":
        return None
    total = max(1, total_steps)
    # cosine from lr down to 0 over the whole run, stepped after every optimiser step
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    )


def training_loss(model, output, inputs, targets, label_smoothing: float = 0.0) -> torch.Tensor:
    """The model's own loss, with optional label smoothing of its cross-entropy term.

    Label-smoothed cross entropy equals CE + eps * (U - CE), U being the cross entropy
    against the uniform distribution; the correction is weighted by the share of CE in
    the model's loss (1 - recon_weight for the auto-encoder, 1 otherwise).
    """
    loss = model.loss(output, inputs, targets)
    if label_smoothing > 0:
        log_probs = F.log_softmax(model.logits(output).float(), dim=1)
        ce = F.nll_loss(log_probs, targets)
        uniform = -log_probs.mean(dim=1).mean()
        ce_weight = 1.0 - getattr(model, "recon_weight", 0.0)
        loss = loss + ce_weight * label_smoothing * (uniform - ce)
    return loss


def input_crop(model, image_size: int) -> int | None:
    """The crop the loaders must apply so the data fits the model (paper B: 24 of 32)."""
    channels, height, width = model.input_size
    if height == width == image_size:
        return None
    if height == width and height < image_size:
        return height
    name = getattr(model, "name", type(model).__name__)
    raise HybridError(
        f"model {name!r} takes {channels}x{height}x{width} images but the data set gives "
        f"{image_size}x{image_size}; use image_size={height} (or a model for "
        f"{image_size}x{image_size} input)"
    )


def train_step(
    model,
    optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    device: torch.device | None = None,
    ctx=None,
    label_smoothing: float = 0.0,
    scheduler=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on a batch.

    Args:
        model, optimizer: a `Classifier` on the batch's device and its optimiser.
        x, y: the batch, (B, 3, H, W) images and (B,) class indices.
        device: where the batch is (default: `x.device`); it picks the default `ctx`.
        ctx: the mixed-precision context, built once by the caller (default:
            `runtime.autocast(device)`: bf16 on CUDA, full precision on the CPU).
        label_smoothing: as `RunConfig.label_smoothing`.
        scheduler: a per-step learning-rate schedule, stepped after the optimiser.
    Returns:
        (loss, correct): the batch's mean loss and its number of correct predictions,
        both as tensors on the device, so the step never waits for the GPU.
    """
    ctx = ctx if ctx is not None else runtime.autocast(device or x.device)
    with ctx:
        output = model(x)
        loss = training_loss(model, output, x, y, label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    correct = (model.logits(output).argmax(dim=1) == y).sum()
    return loss.detach(), correct


def train_one_epoch(
    model, loader, optimizer, *, ctx=None, scheduler=None, label_smoothing=0.0
) -> EpochResult:
    """One pass over `loader`: forward, loss, backward, optimiser step, for every batch.

    The losses and correct counts are summed on the device and read once at the end,
    so a GPU never waits for the host inside the epoch.

    Args:
        model: a `Classifier` on the loader's device.
        loader: yields (x, y) batches on that device (`DataBundle.loader`).
        optimizer, scheduler: the optimiser and an optional per-step schedule.
        ctx: the mixed-precision context (`runtime.autocast`), built once by the caller
            (default: none, full precision).
        label_smoothing: as `RunConfig.label_smoothing`.
    Returns:
        An `EpochResult` (mean loss, accuracy 0..1, images, steps, seconds).
    """
    ctx = ctx if ctx is not None else nullcontext()
    model.train()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device)  # sum of per-image losses
    correct = torch.zeros((), dtype=torch.int64, device=device)
    images = steps = 0
    start = time.perf_counter()
    for x, y in loader:
        loss, batch_correct = train_step(
            model, optimizer, x, y, ctx=ctx, scheduler=scheduler, label_smoothing=label_smoothing
        )
        loss_sum += loss.float() * y.shape[0]
        correct += batch_correct
        images, steps = images + y.shape[0], steps + 1
    if images == 0:
        return EpochResult(math.nan, math.nan, 0, 0, time.perf_counter() - start)
    loss_value, accuracy = loss_sum.item() / images, correct.item() / images  # waits for the GPU
    return EpochResult(loss_value, accuracy, images, steps, time.perf_counter() - start)


def fit(
    model, bundle, config: RunConfig, *, callback: Callback | None = None, device=None
) -> History:
    """Train `model` on `bundle` for `config.epochs` epochs and return the history.

    Validation runs every `config.val_every` epochs and after the last one. For
    checkpoints, `--resume`, a stop button or torchrun, use `hybridlib.engine.trainer.fit`.

    Args:
        model: a `Classifier` (moved to the device here; trained in place).
        bundle: a `DataBundle` from `hybridlib.data.load_dataset`.
        config: a `RunConfig`.
        callback: called with {"event": "epoch", **row} after every epoch.
        device: the device (default: resolved from `config.device`).
    Returns:
        The `History`, one row per epoch.
    """
    device = device or runtime.resolve_device(config.device)
    channels_last = runtime.use_channels_last(device, config.channels_last)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    crop = input_crop(model, bundle.image_size)
    train_loader = bundle.loader(
        "train", config.batch_size, device=device, augment=config.augment, flip=config.flip,
        crop=crop, seed=config.seed, channels_last=channels_last,
    )  # fmt: skip
    val_loader = bundle.loader(
        "val", config.eval_batch_size, device=device, crop=crop, channels_last=channels_last
    )
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, len(train_loader) * config.epochs)
    ctx = runtime.autocast(device, amp=config.amp, cpu_bf16=config.cpu_bf16)
    runtime.seed_everything(config.seed)  # dropout and anything else random in training
    history = History()
    with runtime.deterministic(config.deterministic):
        for epoch in range(1, config.epochs + 1):
            start = time.perf_counter()
            train_loader.set_epoch(epoch)  # epoch e's order and flips: from the seed and e
            lr = float(optimizer.param_groups[0]["lr"])
            result = train_one_epoch(
                model, train_loader, optimizer, ctx=ctx, scheduler=scheduler,
                label_smoothing=config.label_smoothing,
            )  # fmt: skip
            row = {"epoch": epoch, "train_loss": result.loss, "train_acc": result.accuracy}
            row.update(lr=lr, images_per_s=result.images_per_s)
            if epoch % config.val_every == 0 or epoch == config.epochs:
                val = evaluate(model, val_loader, device=device, ctx=ctx)
                row.update(val_loss=val.loss, val_acc=val.accuracy)
            row["time_s"] = time.perf_counter() - start
            history.append(row)
            if callback is not None:
                callback({"event": "epoch", **history.last})
    return history


@torch.no_grad()
def evaluate(
    model,
    loader,
    *,
    device: torch.device,
    ctx=None,
    num_classes: int | None = None,
    classes: list[str] | None = None,
    predictions: bool = False,
    progress: bool = False,
    desc: str = "evaluate",
) -> EvalResult:
    """Loss, accuracy and confusion matrix of `model` on every batch of `loader`.

    The confusion matrix is accumulated on the device; nothing is read back until
    the end.

    Args:
        model: a `Classifier` on `device`.
        loader: yields (x, y) batches on `device`, in a fixed order.
        ctx: the mixed-precision context (default: `runtime.autocast(device)`).
        num_classes: K (default: `model.num_classes`).
        classes: class names for the predictions table and the per-class report.
        predictions: also return one row per image (target, prediction, confidence).
        progress, desc: a progress bar, and its label.
    Returns:
        An `EvalResult`.
    """
    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(num_classes or model.num_classes, device)
    loss_sum = torch.zeros((), device=device)
    rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    n = 0
    ctx = ctx if ctx is not None else runtime.autocast(device)
    start = time.perf_counter()
    for x, y in progress_bar(loader, desc=desc, unit="batch", progress=progress):
        with ctx:
            output = model(x)
            loss = model.loss(output, x, y)
        logits = model.logits(output).float()
        predicted = logits.argmax(dim=1)
        matrix.update(predicted, y)
        loss_sum += loss.float() * y.shape[0]
        n += y.shape[0]
        if predictions:
            rows.append((y, predicted, logits.softmax(dim=1).amax(dim=1)))  # confidence
    model.train(was_training)
    confusion = matrix.compute()
    seconds = time.perf_counter() - start
    loss_value = loss_sum.item() / n if n else math.nan
    accuracy = float(confusion.diag().sum()) / n if n else math.nan
    table = _predictions_frame(rows, classes) if predictions else None
    return EvalResult(loss_value, accuracy, n, confusion, seconds, table, classes)


def _predictions_frame(rows, classes: list[str] | None) -> pd.DataFrame:
    if rows:
        targets, predicted, confidence = (torch.cat(part).cpu() for part in zip(*rows, strict=True))
    else:
        targets = predicted = torch.zeros(0, dtype=torch.int64)
        confidence = torch.zeros(0)
    frame = pd.DataFrame(
        {
            "index": range(len(targets)),  # position in the (unshuffled) split
            "target": targets.numpy(),
            "prediction": predicted.numpy(),
            "confidence": confidence.numpy(),
        }
    )
    frame["correct"] = frame["target"] == frame["prediction"]
    if classes is not None:
        frame["target_name"] = [classes[i] for i in frame["target"]]
        frame["prediction_name"] = [classes[i] for i in frame["prediction"]]
    return frame
