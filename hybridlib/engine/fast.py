"""Fast training steps: the eager step and a CUDA-graph step with the same signature.

    from hybridlib import runtime
    from hybridlib.engine.fast import make_train_step
    ctx = runtime.autocast(device)      # built once: bf16 on CUDA, full precision on the CPU
    step = make_train_step(model, optimizer, device=device, ctx=ctx, mode="auto")
    for x, y in loader:                 # a DeviceLoader: batches already on the device
        loss, correct = step(x, y)      # tensors on the device; nothing waits for the GPU

`mode` chooses how a step runs:

- "eager": forward, loss, backward and `optimizer.step()` op by op, exactly as
  `hybridlib.train.train_step` (the same numerics on every device).
- "graph": the whole step captured once in a CUDA graph and replayed for every batch.
  At batch 16 (paper A) a GPU step is a few hundred tiny kernels, and launching them
  one by one from Python costs far more than running them; a replay launches them
  all at once. Needs CUDA, Adam or AdamW (made `capturable`, so the optimiser's step
  counter lives on the GPU) and a fixed batch shape: a batch of another shape (the
  epoch's last, partial one) takes an eager step instead. bf16 autocast needs no
  gradient scaler. Where capture is not possible the step falls back to eager and
  prints why (`step.reason`).
- "auto": "graph" on CUDA, "eager" elsewhere.

On the CPU the fast settings are data-side and layout-side, not in the step:
in-memory batches (`DataBundle.loader`), one intra-op thread per available core
(`runtime.set_threads`), no DataLoader workers, and bf16 autocast only as an opt-in
(`runtime.autocast(device, cpu_bf16=True)`), since it changes the numerics.
Channels-last (NHWC) layout, `RunConfig(channels_last=True)`, made every conv model's
training step 1.1-1.35x and its evaluation 1.4-2x faster on a 2-core Xeon (oneDNN's
NHWC kernels); it sums in another order, so the fp32 results differ from NCHW's in the
last bits. `train.make_optimizer` takes the optimisers' multi-tensor "foreach" update,
bit-identical on the CPU to PyTorch's per-parameter loop and 7 % faster per `cnn` step
on a 2-core AMD EPYC.

Several runs at once: `map_in_processes(function, items, jobs=N)` runs independent
runs in N worker processes (they share one GPU, or split the CPU cores between
them); `hybridlib.study.reproduce` uses it for `--jobs N`.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from hybridlib import runtime
from hybridlib.config import STEP_MODES
from hybridlib.errors import HybridError, Terminated, choices_error
from hybridlib.train import training_loss

__all__ = [
    "STEP_MODES",
    "EagerStep",
    "GraphStep",
    "make_train_step",
    "map_in_processes",
]

GRAPH_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW)  # have `capturable=True`


def _say(message: str) -> None:
    print(f"hybridlib: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# The eager step
# ---------------------------------------------------------------------------


class EagerStep:
    """One optimiser step per call, op by op: `step(x, y) -> (loss, correct)`.

    The arithmetic of `hybridlib.train.train_step` (a test checks that the numbers are
    the same). Both results are tensors on the device (the batch's mean loss and its
    count of correct predictions); reading them is left to the caller, every few steps.

    Under torchrun `model` is `DistributedDataParallel`: the forward pass runs through
    it (so its backward pass all-reduces the gradients), the loss and the logits come
    from the classifier inside, unwrapped once here (`raw_model`).
    """

    mode = "eager"

    def __init__(
        self,
        model,
        optimizer,
        *,
        ctx,
        label_smoothing: float = 0.0,
        scheduler=None,
        reason: str | None = None,
    ):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.raw_model = model.module if isinstance(model, DistributedDataParallel) else model
        self.ctx = ctx  # the mixed-precision context (`runtime.autocast`)
        self.label_smoothing = label_smoothing
        self.reason = reason  # why this is not a graph step (None if not asked for one)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output, loss = self.forward(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.detach(), self.correct(output, y)

    def forward(self, x: torch.Tensor, y: torch.Tensor, ctx=None):
        """(output, loss) of the batch, under `ctx` (default: the step's own context)."""
        with ctx if ctx is not None else self.ctx:
            output = self.model(x)
            loss = training_loss(self.raw_model, output, x, y, self.label_smoothing)
        return output, loss

    def correct(self, output, y: torch.Tensor) -> torch.Tensor:
        """How many of the batch's predictions are right, as a tensor on the device."""
        return (self.raw_model.logits(output).argmax(dim=1) == y).sum()


# ---------------------------------------------------------------------------
# The CUDA-graph step
# ---------------------------------------------------------------------------


class GraphStep:
    """The whole training step captured in a CUDA graph: `step(x, y) -> (loss, correct)`.

    The first call captures: it copies the batch into static input buffers, runs a
    few warm-up steps on a side stream (cuDNN / cuBLAS pick their kernels and the
    optimiser creates its state), records one step into a `torch.cuda.CUDAGraph`,
    and then puts the weights and the optimiser state back as they were before the
    warm-up, so the run's trajectory is the eager one. Every call copies the batch
    into the static buffers and replays the graph; it returns copies of the graph's
    loss and correct count (the next replay overwrites the originals).

    A batch of another shape than the captured one (the epoch's last, partial batch)
    gets an eager step on the same weights and optimiser. If capture fails, the
    weights and the optimiser are restored, `reason` says why, and every later call
    is eager.

    Args:
        eager: the `EagerStep` to capture (its model, optimiser, schedule, context).
        device: the CUDA device to capture on.
        warmup: eager warm-up steps before capture (undone afterwards).
    """

    def __init__(self, eager: EagerStep, *, device: torch.device, warmup: int = 3):
        self.eager = eager
        self.model, self.optimizer, self.scheduler = eager.model, eager.optimizer, eager.scheduler
        self.device, self.warmup = torch.device(device), max(1, warmup)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.reason: str | None = None  # set when capture failed: every step is eager
        self._lr: list = []  # each param group's lr as the graph reads it
        self._told_shape = False

    @property
    def mode(self) -> str:
        return "eager" if self.reason else "graph"

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.reason is None and self.graph is None:
            self._capture(x, y)
        if self.graph is None:
            return self._eager(x, y)
        if x.shape != self.static_x.shape or y.shape != self.static_y.shape:
            self._tell_shape(x)
            return self._eager(x, y)
        self.static_x.copy_(x)  # same device: an asynchronous copy, no host sync
        self.static_y.copy_(y)
        self.graph.replay()
        if self.scheduler is not None:  # outside the graph; writes the lr tensor in place
            self.scheduler.step()
            self._keep_lr_tensors()
        return self.static_loss.clone(), self.static_correct.clone()

    def _tell_shape(self, x: torch.Tensor) -> None:
        if not self._told_shape:
            _say(
                f"graph step: a batch of {x.shape[0]} images, not the captured "
                f"{self.static_x.shape[0]}, takes an eager step (the epoch's last batch)"
            )
            self._told_shape = True

    def _eager(self, x, y):
        with warnings.catch_warnings():  # "capturable=True ... running without capture"
            warnings.filterwarnings("ignore", message=".*capturable.*")
            result = self.eager(x, y)
        self._keep_lr_tensors()
        return result

    def _keep_lr_tensors(self) -> None:
        """The graph reads each group's lr tensor; a scheduler that assigns a float instead
        of writing into it (PyTorch's own write in place) gets its value copied in."""
        for group, lr in zip(self.optimizer.param_groups, self._lr, strict=True):
            if torch.is_tensor(lr) and group["lr"] is not lr:
                lr.fill_(float(group["lr"]))
                group["lr"] = lr

    def _step_body(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, loss, backward, optimiser step on the static buffers (no host sync)."""
        # bf16 needs no gradient scaler
        output, loss = self.eager.forward(
            self.static_x, self.static_y, _without_weight_cache(self.eager.ctx)
        )
        loss.backward()
        self.optimizer.step()
        return loss.detach(), self.eager.correct(output, self.static_y)

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        _make_capturable(self.optimizer, self.device, tensor_lr=self.scheduler is not None)
        self._lr = [group["lr"] for group in self.optimizer.param_groups]
        snapshot = _Snapshot(self.model, self.optimizer)
        try:
            with torch.cuda.device(self.device):  # --device cuda:1 captures on cuda:1
                self.graph = self._record(x, y)
            snapshot.restore()
        except HybridError:  # a wrong input shape etc.: the user's to fix
            self.graph = None
            snapshot.restore()
            raise
        except Exception as error:  # noqa: BLE001 - any capture failure means: go eager
            self._give_up(error, snapshot)

    def _record(self, x: torch.Tensor, y: torch.Tensor) -> torch.cuda.CUDAGraph:
        """Warm up on a side stream, then record one step into a new graph."""
        self.static_x = x.clone()  # keeps x's memory format (channels-last on CUDA)
        self.static_y = y.clone()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*capturable.*")
            for i in range(self.warmup):
                self.optimizer.zero_grad(set_to_none=True)
                # A host sync cannot be captured: find one in the first warm-up
                # step, where it raises with its real cause, not during capture.
                with _sync_is_an_error(i == 0):
                    self._step_body()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # Gradients are allocated inside the capture, from the graph's memory
        # pool, and written afresh by every replay.
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph, stream=side):
            self.static_loss, self.static_correct = self._step_body()
        return graph

    def _give_up(self, error: Exception, snapshot: _Snapshot) -> None:
        """After a failed capture: the weights as before, and every step eager from now on."""
        with contextlib.suppress(Exception):
            torch.cuda.synchronize(self.device)
        with contextlib.suppress(Exception):  # a failed capture_end can leave it set
            torch.cuda.set_stream(torch.cuda.default_stream(self.device))
        snapshot.restore()
        self.optimizer.zero_grad(set_to_none=True)
        self.graph = None
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        self.reason = f"CUDA graph capture failed ({type(error).__name__}: {first_line})"
        _say(f"{self.reason}; training with the eager step instead")


@contextlib.contextmanager
def _without_weight_cache(ctx):
    """`ctx` with autocast's weight-cast cache off: it must be off while capturing
    (PyTorch's CUDA graph notes); a cast is then made afresh at every use, same bits."""
    with ctx:
        before = torch.is_autocast_cache_enabled()
        torch.set_autocast_cache_enabled(False)
        try:
            yield
        finally:
            torch.set_autocast_cache_enabled(before)


@contextlib.contextmanager
def _sync_is_an_error(enabled: bool):
    """Inside the block, an operation that waits for the GPU raises (CUDA only)."""
    if not enabled:
        yield
        return
    before = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(before)


class _Snapshot:
    """Copies of the weights, buffers and optimiser state, to undo the warm-up steps.

    `restore()` writes them back in place (the graph holds their addresses); optimiser
    state created after the snapshot is zeroed, which is Adam's fresh state.
    """

    def __init__(self, model, optimizer):
        self.optimizer = optimizer
        self.tensors = [t for t in (*model.parameters(), *model.buffers())]
        # dropout's draws in the warm-up are undone too, so the run draws as eager does
        self.devices = sorted({t.device.index or 0 for t in self.tensors if t.is_cuda})
        self.rng = torch.get_rng_state()
        self.cuda_rng = {d: torch.cuda.get_rng_state(d) for d in self.devices}
        with torch.no_grad():
            self.saved = [t.detach().clone() for t in self.tensors]
            self.state = {
                id(t): t.clone()
                for state in optimizer.state.values()
                for t in state.values()
                if torch.is_tensor(t)
            }

    @torch.no_grad()
    def restore(self) -> None:
        torch.set_rng_state(self.rng)
        for device, state in self.cuda_rng.items():
            torch.cuda.set_rng_state(state, device)
        for tensor, saved in zip(self.tensors, self.saved, strict=True):
            tensor.copy_(saved)
        for state in self.optimizer.state.values():
            for value in state.values():
                if torch.is_tensor(value):
                    if id(value) in self.state:
                        value.copy_(self.state[id(value)])
                    else:
                        value.zero_()


def _make_capturable(optimizer, device: torch.device, *, tensor_lr: bool) -> None:
    """Let Adam / AdamW run inside a CUDA graph: step counters on the GPU, no host reads.

    With `tensor_lr` the learning rate becomes a GPU tensor too, so a scheduler's
    in-place updates reach the captured graph (a float lr is fixed at capture).
    """
    if not isinstance(optimizer, GRAPH_OPTIMIZERS):
        raise HybridError(
            f"graph steps need Adam or AdamW (capturable), got {type(optimizer).__name__}"
        )
    for group in optimizer.param_groups:
        group["capturable"] = True
        if tensor_lr and not torch.is_tensor(group["lr"]):
            group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=device)
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            if torch.is_tensor(state.get("step")) and state["step"].device != p.device:
                state["step"] = state["step"].to(device=p.device, dtype=torch.float32)


def _make_uncapturable(optimizer) -> None:
    """Undo `_make_capturable` for a CPU run (e.g. resuming a GPU run's checkpoint)."""
    for group in optimizer.param_groups:
        if not group.get("capturable"):
            continue
        group["capturable"] = False
        if torch.is_tensor(group["lr"]):
            group["lr"] = float(group["lr"])
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            if torch.is_tensor(state.get("step")):
                state["step"] = state["step"].to(device="cpu", dtype=torch.float32)


# ---------------------------------------------------------------------------
# Choosing a step
# ---------------------------------------------------------------------------


def make_train_step(
    model,
    optimizer,
    *,
    device: torch.device | str,
    ctx=None,
    label_smoothing: float = 0.0,
    scheduler=None,
    mode: str = "eager",
    warmup: int = 3,
    quiet: bool = False,
) -> EagerStep | GraphStep:
    """A training step `step(x, y) -> (loss, correct)` for `model` and `optimizer`.

    Args:
        model: a `Classifier` already on `device` (and in its memory format), or its
            `DistributedDataParallel` under torchrun.
        optimizer: its optimiser; Adam / AdamW for graph steps.
        device: the device the batches come on.
        ctx: the mixed-precision context, built once by the caller (default:
            `runtime.autocast(device)`: bf16 on CUDA, full precision elsewhere).
        label_smoothing: as `RunConfig.label_smoothing`.
        scheduler: a per-step learning-rate scheduler, stepped after every step.
        mode: "eager", "graph" or "auto" (graph on CUDA, eager elsewhere).
        warmup: eager warm-up steps before capture (undone afterwards).
        quiet: do not print why a graph step was not possible.
    Returns:
        An `EagerStep` or a `GraphStep`; `.mode` says which runs, `.reason` why a
        requested graph step is eager.
    """
    if mode not in STEP_MODES:
        raise choices_error("step mode", mode, STEP_MODES)
    device = torch.device(device)
    ctx = ctx if ctx is not None else runtime.autocast(device)
    eager = EagerStep(
        model, optimizer, ctx=ctx, label_smoothing=label_smoothing, scheduler=scheduler
    )
    if mode == "auto":
        mode = "graph" if device.type == "cuda" else "eager"
    if mode == "graph":
        eager.reason = _why_not_graph(model, optimizer, device)
        if eager.reason is None:
            return GraphStep(eager, device=device, warmup=warmup)
        if not quiet:
            _say(f"{eager.reason}; using the eager step")
    _make_uncapturable(optimizer)  # e.g. resuming a graph run's checkpoint eagerly
    return eager


def _why_not_graph(model, optimizer, device: torch.device) -> str | None:
    """Why a graph step cannot run here, or None when it can."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return f"graph steps need a CUDA device, this run is on {device.type}"
    if not isinstance(optimizer, GRAPH_OPTIMIZERS):
        return f"graph steps need Adam or AdamW, the optimiser is {type(optimizer).__name__}"
    if isinstance(model, DistributedDataParallel):
        return "graph steps are not used under torchrun (DDP's gradient all-reduce)"
    return None


# ---------------------------------------------------------------------------
# Several runs at once
# ---------------------------------------------------------------------------


def _worker_init(cores: multiprocessing.Queue, threads: int) -> None:
    """Pin this worker to its own share of the cores (Linux) and size its thread pool."""
    # interrupted as a run in the foreground would be (see _interrupt_workers_on_sigterm),
    # even where this process was started with SIGINT ignored (a background job)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    share = cores.get()
    if share and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, share)  # runtime.available_cores() then sees only these
    os.environ[runtime.THREADS_VAR] = str(threads)  # what runtime.set_threads will use
    torch.set_num_threads(threads)


def map_in_processes(
    function: Callable[[Any], Any], items: Iterable[Any], *, jobs: int
) -> list[Any]:
    """`[function(item) for item in items]`, in `jobs` worker processes at once.

    Each worker gets an equal, disjoint share of this process's CPU cores (pinned on
    Linux) and as many torch threads; on CUDA the workers share the GPU, each with its
    own CUDA context and streams. Workers are started with "spawn" (safe with CUDA).
    A run that seeds itself from its arguments gives what it gives alone: on the CPU,
    alone with the same thread count (sums over more threads round in another order);
    on CUDA, with deterministic kernels (cuDNN's autotuner may otherwise pick other
    kernels when runs share the GPU, as it may between any two runs).

    Args:
        function: a picklable (module-level) function of one item.
        items: picklable arguments.
        jobs: worker processes (1: run here, one after another).
    Returns:
        The results in the order of `items`; the first exception is re-raised.
        SIGTERM to this process interrupts the workers too (`Terminated` here).
    """
    items = list(items)
    if jobs <= 1 or len(items) <= 1:
        return [function(item) for item in items]
    jobs = min(jobs, len(items))
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    per_job = max(1, len(cores) // jobs) if cores else max(1, runtime.available_cores() // jobs)
    context = multiprocessing.get_context("spawn")
    shares = context.Queue()
    for j in range(jobs):
        # with fewer cores than jobs, workers share cores round-robin
        share = cores[j * per_job : (j + 1) * per_job] if len(cores) >= jobs else []
        if cores and not share:
            share = [cores[j % len(cores)]]
        shares.put(share)
    with (
        ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=context,
            initializer=_worker_init,
            initargs=(shares, per_job),
        ) as pool,
        _interrupt_workers_on_sigterm(pool),
    ):
        return list(pool.map(functools.partial(_call_in_worker, function), items))


_worker_interrupted = False  # in a worker: an item was interrupted, so the others are not started


def _call_in_worker(function: Callable[[Any], Any], item: Any) -> Any:
    """`function(item)` in a pool worker; after one interruption the worker starts no more."""
    global _worker_interrupted
    if _worker_interrupted:
        raise KeyboardInterrupt
    try:
        return function(item)
    except KeyboardInterrupt:
        _worker_interrupted = True
        raise


@contextlib.contextmanager
def _interrupt_workers_on_sigterm(pool: ProcessPoolExecutor):
    """While `pool` runs, SIGTERM to this process interrupts its workers as Ctrl-C would.

    Ctrl-C in a terminal reaches every process of the group; `kill PID` reaches this one
    only, and without this its workers would train on, orphaned. Each worker gets SIGINT,
    so a training run writes its "interrupted" summary and keeps its checkpoint (the
    grid resumes it), the runs not yet started end at once without training
    (`_call_in_worker`), and this process raises KeyboardInterrupt; leaving the pool
    waits for the workers to stop.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def interrupt(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once is enough
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGINT)
        raise Terminated  # a KeyboardInterrupt; the command exits 143

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
