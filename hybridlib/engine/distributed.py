"""One training run over several processes, GPUs and machines: torchrun + DistributedDataParallel.

    torchrun --master_addr=127.0.0.1 --nproc_per_node=4 -m hybridlib train --model cnn_lstm_skip
    torchrun --nnodes=2 --node_rank=0 --master_addr=HOST --master_port=29500 \\
        --nproc_per_node=8 -m hybridlib train ...        # the same on node 1 with --node_rank=1

Nothing changes in the command: `hybridlib.engine.trainer.run_training` calls `setup()`, which
reads torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and,
when they say there are several processes, joins the process group: NCCL on CUDA, each
rank on `cuda:LOCAL_RANK`; Gloo on the CPU. Then the training code

- splits every global batch across the ranks (`DeviceLoader(shard=(rank, world))`): all
  ranks draw the same permutation, flips and crops from (seed, epoch), exactly as one
  process would, and rank r takes its slice of each global batch;
- wraps the model in `DistributedDataParallel` (`wrap_model`); its gradient all-reduce
  weights each rank by its share of the global batch, which every rank computes itself
  (`ShareWeighted`), so every step equals one process's step on the whole global batch
  (batch norm becomes `SyncBatchNorm` on CUDA);
- sums the training metrics, the evaluation loss and the confusion matrix over the ranks
  (`reduce_epoch`, `reduce_eval`), so evaluation counts every image exactly once;
- lets only rank 0 (`is_main()`) write the run directory, checkpoints and summary and draw
  progress bars; the other ranks get the config and, with --resume, the checkpoint from
  rank 0 over the process group (`on_main`), so only rank 0 needs the run directory.

A rank that dies or stalls does not leave the others waiting forever: Gloo reports a
closed connection at once, every collective gives up after `HYBRIDLIB_DIST_TIMEOUT`
seconds (default 600), NCCL's watchdog aborts a stuck collective
(TORCH_NCCL_ASYNC_ERROR_HANDLING=1), torchrun stops the remaining ranks of a node, and
`peer_errors()` turns the failure into a one-line `HybridError` that says how to resume.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import datetime
import math
import os
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from hybridlib import runtime
from hybridlib.errors import HybridError

__all__ = [
    "ShareWeighted",
    "active",
    "barrier",
    "broadcast_object",
    "describe",
    "environment",
    "gather_object",
    "is_main",
    "on_main",
    "peer_errors",
    "per_rank_batch",
    "rank",
    "rank_seed",
    "reduce_epoch",
    "reduce_eval",
    "setup",
    "shard",
    "shutdown",
    "sum_over_ranks",
    "sync_buffers",
    "threads",
    "timeout_s",
    "world_size",
    "wrap_model",
]

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
TIMEOUT_VAR = "HYBRIDLIB_DIST_TIMEOUT"  # seconds a rank waits for the others
DEFAULT_TIMEOUT_S = 600  # as NCCL's default; long enough for a first decode of the data

# Whether this module started the process group, and whether a peer has failed (then an
# NCCL group is left alone at exit: tearing it down after a failure can block).
_state = {"owner": False, "broken": False}


# ---------------------------------------------------------------------------
# Who am I: torchrun's environment
# ---------------------------------------------------------------------------


def _int_var(name: str, default: int | None = None) -> int:
    text = os.environ.get(name, "")
    if not text:
        if default is None:
            raise HybridError(f"environment variable {name} is not set; start with torchrun")
        return default
    try:
        return int(text)
    except ValueError:
        raise HybridError(f"environment variable {name}={text!r} must be a whole number") from None


def environment() -> dict[str, Any] | None:
    """torchrun's description of this process, or None when it is the only one.

    Returns:
        {"rank", "world_size", "local_rank", "local_world_size", "master"} or None.
    """
    size = _int_var("WORLD_SIZE", 1)
    if size <= 1:
        return None
    missing = [name for name in ENV_VARS if not os.environ.get(name)]
    if missing:
        raise HybridError(
            f"WORLD_SIZE={size} but {', '.join(missing)} not set; start the processes with "
            f"torchrun, which sets all of them, e.g. torchrun --nproc_per_node={size} "
            "-m hybridlib train ..."
        )
    env = {
        "rank": _int_var("RANK"),
        "world_size": size,
        "local_rank": _int_var("LOCAL_RANK"),
        "local_world_size": _int_var("LOCAL_WORLD_SIZE", size),
        "master": f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
    }
    if not 0 <= env["rank"] < size:
        raise HybridError(f"RANK={env['rank']} must be in 0..{size - 1} (WORLD_SIZE={size})")
    return env


def active() -> bool:
    """Whether this process trains together with others (a process group of 2 or more)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 when alone)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """The number of processes training together (1 when alone)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this process writes files and prints progress: rank 0, or the only one."""
    return rank() == 0


def shard() -> tuple[int, int]:
    """(rank, world size), the `shard` argument of `DataBundle.loader`."""
    return rank(), world_size()


def timeout_s() -> float:
    """Seconds a rank waits in a collective before it gives up ($HYBRIDLIB_DIST_TIMEOUT)."""
    text = os.environ.get(TIMEOUT_VAR, "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise HybridError(f"{TIMEOUT_VAR}={text!r} must be a positive number of seconds")
    return value


# ---------------------------------------------------------------------------
# Joining and leaving the process group
# ---------------------------------------------------------------------------


def _rank_device(spec: str, local_rank: int) -> torch.device:
    """The device of this rank: cuda:LOCAL_RANK on CUDA, else the CPU."""
    spec = str(spec)
    if spec in ("auto", "cuda") and torch.cuda.is_available():
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise HybridError(
                f"LOCAL_RANK={local_rank} but this machine has {count} CUDA device(s); "
                f"start at most {count} processes per machine (--nproc_per_node={count})"
            )
        return torch.device("cuda", local_rank)
    if spec == "auto":  # no CUDA: Gloo on the CPU (several processes cannot share MPS)
        return torch.device("cpu")
    device = runtime.resolve_device(spec)
    if device.type == "cuda" and device.index != local_rank:
        raise HybridError(
            f"device {spec!r} under torchrun would put several ranks on one GPU; use "
            "--device cuda (or auto): rank LOCAL_RANK then trains on cuda:LOCAL_RANK"
        )
    if device.type == "mps":
        raise HybridError(
            "device 'mps' cannot be shared by several processes; use --device cpu under "
            "torchrun, or train in one process"
        )
    return device


def setup(device: str | torch.device = "auto") -> torch.device:
    """Join torchrun's process group if there is one; return this rank's device.

    Alone (no WORLD_SIZE > 1), this is `runtime.resolve_device(device)`. Under torchrun
    it picks cuda:LOCAL_RANK (NCCL) or the CPU (Gloo), initialises the process group once
    per process with a `timeout_s()` timeout, and leaves it at exit.

    Args:
        device: "auto", "cpu", "cuda" or "cuda:N" (N must be LOCAL_RANK under torchrun).
    Returns:
        The `torch.device` this rank trains on.
    """
    env = environment()
    if env is None:
        return runtime.resolve_device(device)
    torch_device = _rank_device(str(device), env["local_rank"])
    if dist.is_initialized():
        return torch_device
    # A stuck NCCL collective then raises in the watchdog (and ends the process)
    # instead of blocking forever.
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    backend = "nccl" if torch_device.type == "cuda" else "gloo"
    options: dict[str, Any] = {"timeout": datetime.timedelta(seconds=timeout_s())}
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)
        options["device_id"] = torch_device
    try:
        dist.init_process_group(backend, **options)
    except (RuntimeError, ValueError) as error:
        raise HybridError(
            f"rank {env['rank']} of {env['world_size']} could not join the {backend} process "
            f"group at {env['master']} ({_first_line(error)}); check --master_addr / "
            "--master_port and that every machine runs the same torchrun command"
        ) from None
    _state["owner"] = True
    atexit.register(shutdown)
    return torch_device


def shutdown() -> None:
    """Leave the process group this module joined (a no-op otherwise).

    After a failed collective only a Gloo group is torn down (which also stops its
    waiting threads); NCCL's watchdog has already aborted its communicators.
    """
    if _state["owner"] and dist.is_available() and dist.is_initialized():
        _state["owner"] = False
        if not _state["broken"] or dist.get_backend() == "gloo":
            dist.destroy_process_group()


def describe() -> str:
    """', 2 ranks (gloo)' under torchrun, '' alone: for the run's first line."""
    if not active():
        return ""
    return f", {world_size()} ranks ({dist.get_backend()})"


def threads() -> int | None:
    """CPU threads per rank: $OMP_NUM_THREADS, else the cores shared by this machine's ranks.

    None when alone (`runtime.set_threads` then takes every core).
    """
    if not active():
        return None
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    local = _int_var("LOCAL_WORLD_SIZE", world_size())
    return max(1, runtime.available_cores() // max(1, local))


def rank_seed(seed: int) -> int:
    """The seed of this rank's own randomness (dropout): `seed` on rank 0, distinct elsewhere."""
    if rank() == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank()]).generate_state(1)[0])


def per_rank_batch(batch_size: int, per_rank: bool = False) -> int:
    """Images per rank per step.

    Args:
        batch_size: `--batch-size`: the global batch (all ranks together), or with
            `per_rank` the batch of every rank.
        per_rank: `--per-rank-batch`.
    Returns:
        batch_size / ranks, or batch_size with `per_rank`; a global batch that does not
        split evenly raises `HybridError` naming both fixes.
    """
    world = world_size()
    if per_rank or world == 1:
        return batch_size
    if batch_size % world:
        lower = max(world, batch_size // world * world)
        raise HybridError(
            f"--batch-size {batch_size} is the global batch (all {world} ranks together) and "
            f"does not split evenly over {world} ranks; use a multiple of {world} such as "
            f"--batch-size {lower} or {lower + world}, or pass --per-rank-batch to give every "
            f"rank {batch_size} images (a global batch of {batch_size * world})"
        )
    return batch_size // world


# ---------------------------------------------------------------------------
# The model: DistributedDataParallel with share-weighted gradient averaging
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class _Share:
    """This step's weight of this rank's gradient: its images x ranks / global images."""

    world: int
    scale: float = 1.0


def _weighted_mean(share: _Share, bucket):  # -> Future[Tensor]; DDP checks the annotation
    # Each rank's loss is the mean over its own images; weighting rank r by n_r * W / n
    # before DDP's usual divide-by-W makes the sum the mean over the global batch, also
    # when the last batch of an epoch splits unevenly (equal shares: a factor of exactly 1).
    tensor = bucket.buffer()
    tensor.mul_(share.scale)
    tensor.div_(share.world)
    work = dist.all_reduce(tensor, async_op=True)
    return work.get_future().then(lambda future: future.value()[0])


class ShareWeighted:
    """A rank's training batches; each first sets that rank's weight in DDP's gradient mean.

    Every rank knows the global batch of each step without asking the others: the
    ranks take consecutive global batches of `global_batch` images from the split's
    order, the last one what is left of the split. Its own part is the batch it
    yields, so the weight n_r * W / n is computed on the host, with no collective and
    no copy to the GPU.

    Args:
        loader: this rank's training batches (its slice of every global batch).
        share: the gradient hook's state, written before every batch.
        global_batch: images per step over all ranks.
        images: images in the training split.
    """

    def __init__(self, loader, share: _Share, *, global_batch: int, images: int):
        self.loader, self.share = loader, share
        self.global_batch, self.images = global_batch, images

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __iter__(self):
        world = self.share.world
        for step, (x, y) in enumerate(self.loader):
            total = min(self.global_batch, self.images - step * self.global_batch)
            # in float32, as the gradients it scales: exactly 1 for equal shares
            self.share.scale = float(np.float32(y.shape[0] * world) / np.float32(total))
            yield x, y


def _has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def wrap_model(model: nn.Module, device: torch.device, loader, *, global_batch: int, images: int):
    """The model to train and its training batches: DDP under torchrun, as they are alone.

    Under torchrun the model becomes `DistributedDataParallel`, whose gradient
    all-reduce weights each rank by its share of the global batch (`ShareWeighted`
    sets the share, batch by batch), so every step is one process's step on the whole
    global batch. On CUDA, batch norm layers become `SyncBatchNorm` first (in place,
    keeping the parameters), so their batch statistics are those of the global batch,
    as in one process. On the CPU (Gloo) `SyncBatchNorm` is not available: each rank
    normalises with its own images' statistics, and rank 0's running statistics are
    copied to the others before every forward pass (DDP's `broadcast_buffers`).
    Evaluate and save the classifier itself (`model.module` under torchrun).

    Args:
        model: a `Classifier`, already on `device`.
        device: this rank's device (from `setup`).
        loader: this rank's training batches.
        global_batch, images: images per step over all ranks, and in the training split.
    Returns:
        (the model to train, the batches to train on).
    """
    if not active():
        return model, loader
    if device.type == "cuda" and _has_batch_norm(model):
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [device.index] if device.type == "cuda" else None
    ddp = DistributedDataParallel(model, device_ids=device_ids)  # buffers: rank 0's, each step
    share = _Share(world=world_size())
    ddp.register_comm_hook(share, _weighted_mean)
    return ddp, ShareWeighted(loader, share, global_batch=global_batch, images=images)


def sync_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (batch norm running statistics) to every rank."""
    if not active():
        return
    with torch.no_grad():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


# ---------------------------------------------------------------------------
# Reductions and messages between ranks
# ---------------------------------------------------------------------------


def _comm_device() -> torch.device:
    """Where tensors for collectives live: this rank's GPU for NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def sum_over_ranks(values, op=None) -> list[float]:
    """Sum (or `op`, e.g. `dist.ReduceOp.MAX`) numbers over all ranks, in float64."""
    if not active():
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM)
    return tensor.tolist()


def reduce_epoch(result):
    """An `EpochResult` over all ranks: images summed, loss and accuracy over all of them."""
    if not active():
        return result
    n = result.images
    loss_sum, correct, images = sum_over_ranks(
        [result.loss * n if n else 0.0, result.accuracy * n if n else 0.0, n]
    )
    (seconds,) = sum_over_ranks([result.seconds], dist.ReduceOp.MAX)
    return dataclasses.replace(
        result,
        loss=loss_sum / images if images else math.nan,
        accuracy=round(correct) / images if images else math.nan,
        images=int(images),
        seconds=seconds,
    )


def reduce_eval(result, loader):
    """An `EvalResult` over all ranks, as if one process had evaluated the whole split.

    The confusion matrices and the loss sums are added up; the predictions tables are
    gathered on rank 0 and put back into split order (other ranks get None).

    Args:
        result: this rank's `EvalResult` from `evaluate` on `loader`.
        loader: the (unshuffled) `DeviceLoader` it evaluated: which images were this rank's.
    """
    if not active():
        return result
    n = result.num_samples
    loss_sum, count = sum_over_ranks([result.loss * n if n else 0.0, n])
    confusion = result.confusion.to(_comm_device())
    dist.all_reduce(confusion)
    confusion = confusion.cpu()
    predictions = result.predictions
    if predictions is not None:
        predictions = predictions.copy()
        predictions["index"] = loader.sample_indices().cpu().numpy()
        parts = gather_object(predictions)
        if parts is not None:
            merged = pd.concat(parts).sort_values("index", kind="stable")
            predictions = merged.reset_index(drop=True)
        else:
            predictions = None
    count = int(count)
    return dataclasses.replace(
        result,
        loss=loss_sum / count if count else math.nan,
        accuracy=float(confusion.diag().sum()) / count if count else math.nan,
        num_samples=count,
        confusion=confusion,
        predictions=predictions,
    )


def barrier() -> None:
    """Wait until every rank gets here (a no-op alone)."""
    if active():
        dist.barrier()


def broadcast_object(value: Any = None, src: int = 0) -> Any:
    """Rank `src`'s `value` on every rank (any picklable object)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src, device=_comm_device())
    return box[0]


def gather_object(value: Any) -> list[Any] | None:
    """Every rank's `value`, in rank order, on rank 0 (None elsewhere and when alone)."""
    if not active():
        return None
    box = [None] * world_size() if is_main() else None
    dist.gather_object(value, box, dst=0, group=None)
    return box


def on_main(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run `function` on rank 0 only and hand its result to every rank.

    Where rank 0 fails, every rank fails: rank 0 with its own error, the others with a
    `HybridError` carrying its message, so no rank waits for a result that never comes.
    """
    if not active():
        return function(*args, **kwargs)
    failure: BaseException | None = None
    payload: tuple[str, Any] | None = None
    if is_main():
        try:
            payload = ("ok", function(*args, **kwargs))
        except BaseException as error:  # noqa: BLE001 - re-raised below
            failure = error
            payload = ("error", str(error) if isinstance(error, HybridError) else repr(error))
    kind, value = broadcast_object(payload)
    if failure is not None:
        raise failure
    if kind == "error":
        raise HybridError(value)
    return value


# ---------------------------------------------------------------------------
# A dead or stalled peer: a clear message instead of a hang
# ---------------------------------------------------------------------------

_COMM_WORDS = re.compile(
    r"gloo|nccl|connection|timed out|timeout|socket|broken pipe|peer|process group", re.I
)


def _first_line(error: BaseException) -> str:
    """The gist of a backend's message: its first sentence, without the source location."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)  # "[.../pair.cc:561] Connection closed ..."
    text = text.split(". ")[0].rstrip(".")
    return text if len(text) <= 200 else text[:197] + "..."


def is_peer_error(error: BaseException) -> bool:
    """Whether `error` is a failed collective: a peer died, stalled or lost its connection."""
    if isinstance(error, dist.DistError):
        return True
    return isinstance(error, RuntimeError) and bool(_COMM_WORDS.search(str(error)))


@contextlib.contextmanager
def peer_errors(what: str = "training", run_dir: str | None = None):
    """Turn a failed collective inside the block into a one-line `HybridError`.

    Outside torchrun, and for other errors, the block's exceptions pass unchanged.

    Args:
        what: what stopped, for the message ("training", "the grid").
        run_dir: the run directory to resume, when known.
    """
    try:
        yield
    except RuntimeError as error:  # not a HybridError: that is a ValueError
        if not active() or not is_peer_error(error):
            raise
        _state["broken"] = True
        raise HybridError(
            f"rank {rank()} of {world_size()} stopped {what}: another rank died or stalled "
            f"({_first_line(error)}); a rank gives up after waiting {timeout_s():g} s "
            f"(${TIMEOUT_VAR}). Find the first error in the other ranks' output, then "
            f"continue with the same torchrun command plus --out {run_dir or 'RUN_DIR'} --resume"
        ) from None
