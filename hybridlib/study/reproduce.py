"""Reproduce a paper's table: every model x data set x seed, then the tables and figures.

    python -m hybridlib reproduce --table paper-a                   # Table I, 3 seeds
    python -m hybridlib reproduce --table paper-a --epochs 1 --datasets digits   # a quick check
    python -m hybridlib reproduce --table paper-b --seeds 5
    python -m hybridlib reproduce --table paper-a --shard 0/4 --out /shared/grid  # 1 of 4 machines
    python -m hybridlib reproduce --table paper-a --jobs 4 --step-mode auto  # 4 runs at once

The grid directory (default `$HYBRIDLIB_RUNS/<table>[-<recipe>][-e<epochs>]...`) gets
one run directory per run, named `<dataset>-<model>-s<seed>`, and then:
`<table>_table.csv/.md` (ours beside the paper's, mean +- std and seeds per cell),
`<table>_tests.csv/.md` (Welch's t-test per pair of models the paper compares, with
the difference's 95 % interval, the Holm-adjusted p and the minimum detectable effect),
`runs.csv`, and `figures/` (loss / accuracy curves per data set, as paper A's
Figs 8-11, and a confusion matrix per cell, as its Figs 12-14).

Finished runs are skipped and interrupted ones resumed from their last
checkpoint, so running the same command again continues an interrupted grid.
Runs are ordered seed by seed, so a grid stopped half-way already has one seed
of every cell. `--shard i/n` runs every n-th run starting at i; shards writing
to one shared directory together make the whole grid: each shard rewrites the
tables from every finished run in it when it ends (one at a time, under a lock),
so the last one to finish leaves the whole grid's tables. Shards on machines
without a shared disk write to their own directories, and
`results DIR1 DIR2 ... --table paper-a --out MERGED` merges them.

Under torchrun (`torchrun --nproc_per_node=N -m hybridlib reproduce ...`) all N
processes train each run of the grid together; rank 0 decides what is left to
do and writes the tables.

Settings (the papers'): paper A trains every model with batch 16, lr 1e-4 and 30
epochs, validating every 5, with random horizontal and vertical flips.

Paper B states: CIFAR-10 "clipped to 24x24" (random 24x24 crops of the 32x32
training images here, centre crops for validation and test; no flips, which it
never mentions), batch 128, LRN, and an L2 penalty added to the loss, applied to
the model its text calls the "regularized CNN". Its text names five models,
"regularized CNN, normalized CNN, GRU, LSTM and the CNN-LSTM", against Table 1's
CNN with and without local normalisation, GRU, LSTM and conv-LSTM: the
"normalized CNN" is the one with local (response) normalisation, so the
"regularized CNN" is the CNN without LRN (`yu_cnn_nolrn`), which is the only
model trained with weight decay here. Paper B gives no coefficient; the course
uses 5e-4 (`PAPER_B_WEIGHT_DECAY`), as torch's Adam `weight_decay`: the gradient of
(5e-4 / 2) * ||w||^2 added to the loss, which is the L2 term paper B describes
(the squared norm; its equation (9) is the norm itself), on every weight and bias.

What paper B leaves open, and the course's choice (say so wherever the numbers
are shown):

- optimiser: Adam (betas 0.9, 0.999), unnamed in the paper;
- learning rate: 1e-3, constant (the usual Adam step for batch 128);
- epochs: 30 (paper A's; paper B gives none), validation every 5;
- L2 coefficient: 5e-4, on the regularised CNN only (above);
- the LSTM's (and the row GRU's / LSTM's) hidden size: 128; its output at the last
  step feeds the classifier;
- the order of the 2304 -> 48x48 reshape: memory order (C, H, W), so a row is 48
  consecutive values, not a spatial row of a tiling of the 64 maps
  (`hybridlib.models.fold_to_square`);
- the CNNs' fully connected layers (2304 -> 384 -> 192 -> 10), the pooling
  (3x3, stride 2) and the LRN constants (size 9, alpha 0.001, beta 0.75, k 1):
  those of the TensorFlow CIFAR-10 tutorial its 24x24, 5x5x64 network follows;
- the row models' input: the 24 rows of the 24x24 crop, 72 values each;
- weight initialisation (PyTorch's defaults), normalisation statistics (the
  training split's per-channel mean and sd), the validation split (10 % of the
  training images, stratified), the seeds (0, 1, 2) and the number of runs (paper
  B reports one per model).

An option given on the command line (`--epochs`, `--batch-size`, `--flip` /
`--no-flip`, `--weight-decay`, `--no-augment`) wins over the grid's value, for
every run of the grid.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hybridlib.config import RunConfig
from hybridlib.engine import distributed, fast
from hybridlib.engine.trainer import DivergedError, run_training
from hybridlib.errors import HybridError, choices_error
from hybridlib.paths import runs_root
from hybridlib.study.figures import write_figures
from hybridlib.study.papers import TABLES
from hybridlib.study.report import write_tables
from hybridlib.study.runs import find_run_dirs
from hybridlib.study.tables import paper_table, wide_table

__all__ = ["GRIDS", "Grid", "cli_reproduce", "default_grid_dir", "grid_configs", "run_grid"]


@dataclass(frozen=True)
class Grid:
    """A paper's experiment: its models, data sets and training settings."""

    table: str
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    batch_size: int  # images per step
    epochs: int  # passes over the training split
    lr: float  # Adam learning rate
    val_every: int = 5  # epochs between validations
    flip: bool = True  # random horizontal and vertical flips of training images
    # {model: L2 weight decay (Adam `weight_decay`, per step; see the docstring)}; 0 for
    # models not named
    weight_decay: tuple[tuple[str, float], ...] = ()

    def decay(self, model: str) -> float:
        """The weight decay of `model` in this grid (0.0 unless the paper names it)."""
        return dict(self.weight_decay).get(model, 0.0)


# Paper B's L2 coefficient: the paper describes an L2 term added to the loss for its
# "regularized CNN" but gives no value; 5e-4 is the common CIFAR-10 choice and the
# course's improved recipe's (hybridlib.config.RECIPES).
PAPER_B_WEIGHT_DECAY = 5e-4


# The `train` options (`TRAIN_OPTIONS`) that `reproduce` takes and applies to every run
# of a grid; the grid itself sets the others (model, data set, seed, epochs, ...).
GRID_OPTIONS = (
    "device", "data_root", "download", "folder", "num_classes", "recipe", "limit",
    "deterministic", "augment", "flip", "weight_decay", "amp", "cpu_bf16", "step_mode",
    "per_rank_batch",
)  # fmt: skip

GRIDS = {
    # paper A, Table I: batch 16, lr 1e-4, 30 epochs, validation every 5
    "paper-a": Grid(
        "paper-a", TABLES["paper-a"]["models"], TABLES["paper-a"]["datasets"], 16, 30, 1e-4
    ),
    # paper B, Table 1: batch 128 and 24x24 crops (stated; the crops come from the models'
    # 24x24 input, `train.input_crop`), no flips (never mentioned), L2 on the "regularized
    # CNN" = the CNN without LRN; lr and epochs not stated (see the docstring)
    "paper-b": Grid(
        "paper-b",
        TABLES["paper-b"]["models"],
        TABLES["paper-b"]["datasets"],
        128,
        30,
        1e-3,
        flip=False,
        weight_decay=(("yu_cnn_nolrn", PAPER_B_WEIGHT_DECAY),),
    ),
}


def run_name(config: RunConfig) -> str:
    """The run's folder name in its grid: `<dataset>-<model>-s<seed>`."""
    return f"{config.dataset}-{config.model}-s{config.seed}"


def grid_configs(
    table: str,
    *,
    seeds: int | Sequence[int] = 3,
    epochs: int | None = None,
    datasets: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    batch_size: int | None = None,
    recipe: str = "paper",
    out: str | Path | None = None,
    **settings: Any,
) -> list[RunConfig]:
    """The `RunConfig` of every run of a grid, seed by seed.

    Args:
        table: "paper-a" or "paper-b".
        seeds: a count (seeds 0..n-1) or the seeds themselves.
        epochs, datasets, models, batch_size: override the paper's.
        recipe: "paper" or "improved".
        out: the grid directory; each run gets `out/<dataset>-<model>-s<seed>`.
        settings: other `RunConfig` fields for every run (device, limit, data_root, ...);
            they win over the grid's, e.g. `flip=True` or `weight_decay=0.0`.
    With recipe "paper" each run gets the grid's flips and the weight decay the paper
    names for its model (paper B: none, and 5e-4 on `yu_cnn_nolrn` only); the
    improved recipe keeps its own weight decay.
    Returns:
        The configs in run order (validated: a bad name raises `HybridError` here,
        before anything is trained).
    """
    if table not in GRIDS:
        raise choices_error("table", table, GRIDS)
    grid = GRIDS[table]
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    paper = _paper_settings(grid, recipe, epochs=epochs, batch_size=batch_size)
    configs = []
    for seed in seed_list:
        for dataset in datasets or grid.datasets:
            for model in models or grid.models:
                decay = {"weight_decay": grid.decay(model)} if recipe == "paper" else {}
                fields = {**paper, **decay, **settings}
                config = RunConfig.from_recipe(
                    recipe, **{**fields, "model": model, "dataset": dataset, "seed": seed}
                )
                if out is not None:
                    config = config.replace(out=str(Path(out) / run_name(config)))
                configs.append(config)
    return configs


def _paper_settings(grid: Grid, recipe: str, *, epochs, batch_size) -> dict[str, Any]:
    """The grid's settings for every run: its batch size, epochs, validation and flips,
    and with the paper's recipe its learning rate (the improved recipe keeps its own)."""
    paper = {
        "batch_size": batch_size or grid.batch_size,
        "epochs": epochs or grid.epochs,
        "val_every": grid.val_every,
        "flip": grid.flip,
    }
    if recipe == "paper":
        paper["lr"] = grid.lr
    return paper


def _status(config: RunConfig) -> str:
    """'new', 'complete', 'diverged' or 'resume' for the run directory of `config`."""
    run_dir = Path(config.out)
    saved_path = run_dir / "config.json"
    if not saved_path.is_file():
        return "new"
    saved = RunConfig.from_json(saved_path)
    if saved.science() != config.science():
        changed = [k for k, v in config.science().items() if saved.science().get(k) != v]
        details = ", ".join(
            f"{k} {saved.science().get(k)!r} -> {config.science()[k]!r}" for k in changed
        )
        raise HybridError(
            f"{run_dir} holds a run with other settings ({details}); "
            "choose another --out for this grid, or delete that run"
        )
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        status = json.loads(summary_path.read_text()).get("status")
        if status in ("complete", "diverged"):
            return status
    return "resume"


def run_grid(
    configs: Sequence[RunConfig], *, shard: tuple[int, int] = (0, 1), jobs: int = 1
) -> dict[str, list]:
    """Train the runs of `configs` in this shard, skipping finished ones.

    Args:
        configs: the grid's runs (`grid_configs`).
        shard: (i, n): train every n-th run starting at i.
        jobs: runs trained at once, each in its own process (`hybridlib.engine.fast.
            map_in_processes`): on CUDA they share the GPU, on the CPU they split the
            cores. Every run seeds itself from its config, so its results are those of
            the run trained alone: on the CPU, alone with the same number of threads
            (a sum over more threads is rounded in another order); on CUDA, with
            `deterministic` (else cuDNN's autotuner may pick other kernels).
    Returns:
        {"trained": [...], "skipped": [...], "diverged": [...]} lists of run directories
        (diverged: (run directory, message)).
    """
    index, count = shard
    mine = list(configs)[index::count]
    # refuse a mixed-up grid before training; under torchrun rank 0 decides for all
    statuses = distributed.on_main(lambda: [_status(config) for config in mine])
    done, todo = _sort_runs(mine, statuses, say=distributed.is_main())
    if jobs > 1 and len(todo) > 1 and not distributed.active():
        # one progress line per run instead of N interleaved progress bars
        todo = [(label, config.replace(progress=False), resume) for label, config, resume in todo]
        results = fast.map_in_processes(_train_one, spread_over_gpus(todo), jobs=jobs)
    else:
        results = [_train_one(item) for item in todo]
    for run_dir, message in results:
        if message is None:
            done["trained"].append(run_dir)
        else:
            done["diverged"].append((run_dir, message))
    return done


def spread_over_gpus(todo: list[tuple[str, RunConfig, bool]]) -> list:
    """Concurrent runs on a host with several GPUs: run i of those asking for "cuda" (or
    "auto") trains on GPU i mod N, so that N GPUs share the work instead of all on
    cuda:0; a run given an explicit `cuda:K` keeps it. Resuming on another GPU is fine:
    the device is not part of a run's identity."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count < 2:
        return todo
    spread = []
    for i, (label, config, resume) in enumerate(todo):
        if config.device in ("cuda", "auto"):
            config = config.replace(device=f"cuda:{i % count}")
        spread.append((label, config, resume))
    return spread


def _sort_runs(
    configs: list[RunConfig], statuses: list[str], *, say: bool
) -> tuple[dict[str, list], list[tuple[str, RunConfig, bool]]]:
    """Split a shard's runs by their `_status`: finished ones are recorded in `done`
    (and said, when `say`), the others go to the list of (label, config, resume) to train.

    Returns:
        (done, todo): done = {"trained": [], "skipped": [...], "diverged": [...]}.
    """
    done: dict[str, list] = {"trained": [], "skipped": [], "diverged": []}
    todo = []
    for i, (config, status) in enumerate(zip(configs, statuses, strict=True), start=1):
        label = f"[{i}/{len(configs)}] {config.model} on {config.dataset}, seed {config.seed}"
        if status == "complete":
            done["skipped"].append(config.out)
            if say:
                print(f"{label}: done already", file=sys.stderr)
            continue
        if status == "diverged":
            done["diverged"].append((config.out, "diverged in an earlier attempt"))
            if say:
                print(
                    f"{label}: diverged in an earlier attempt; delete {config.out} to retry",
                    file=sys.stderr,
                )
            continue
        todo.append((label, config, status == "resume"))
    return done, todo


def _train_one(item: tuple[str, RunConfig, bool]) -> tuple[str, str | None]:
    """Train one run of a grid: (run directory, None), or (run directory, why it diverged)."""
    label, config, resume = item
    if distributed.is_main():
        print(f"{label}{': resuming' if resume else ''}", file=sys.stderr, flush=True)
    try:
        run_training(config, resume=resume)
    except DivergedError as error:
        print(f"{label}: {error}", file=sys.stderr)
        return config.out, str(error)
    if not config.progress:
        print(f"{label}: finished", file=sys.stderr, flush=True)
    return config.out, None


def default_grid_dir(table: str, *, recipe="paper", epochs=None, batch_size=None, limit=None):
    """$HYBRIDLIB_RUNS/<table>, plus a suffix for every setting that differs from the paper."""
    grid = GRIDS[table]
    name = table
    if recipe != "paper":
        name += f"-{recipe}"
    if epochs and epochs != grid.epochs:
        name += f"-e{epochs}"
    if batch_size and batch_size != grid.batch_size:
        name += f"-b{batch_size}"
    if limit:
        name += f"-limit{limit}"
    return runs_root(create=True) / name


def _command(args) -> str:
    parts = ["python -m hybridlib reproduce", f"--table {args.table}", f"--seeds {args.seeds}"]
    if args.epochs:
        parts.append(f"--epochs {args.epochs}")
    if args.datasets:
        parts.append("--datasets " + " ".join(args.datasets))
    if args.models:
        parts.append("--models " + " ".join(args.models))
    if args.batch_size:
        parts.append(f"--batch-size {args.batch_size}")
    if args.recipe != "paper":
        parts.append(f"--recipe {args.recipe}")
    if args.limit:
        parts.append(f"--limit {args.limit}")
    if getattr(args, "folder", None):
        parts.append(f"--folder {args.folder}")
    if getattr(args, "num_classes", None):
        parts.append(f"--num-classes {args.num_classes}")
    if args.shard != (0, 1):
        parts.append(f"--shard {args.shard[0]}/{args.shard[1]}")
    if getattr(args, "flip", None) is not None:
        parts.append("--flip" if args.flip else "--no-flip")
    if getattr(args, "weight_decay", None) is not None:
        parts.append(f"--weight-decay {args.weight_decay!r}")
    for flag in ("deterministic", "cpu_bf16", "per_rank_batch"):
        if getattr(args, flag, False):
            parts.append("--" + flag.replace("_", "-"))
    for flag in ("augment", "amp"):  # on by default
        if not getattr(args, flag, True):
            parts.append("--no-" + flag)
    if args.device != "auto":
        parts.append(f"--device {args.device}")
    if getattr(args, "step_mode", "eager") != "eager":
        parts.append(f"--step-mode {args.step_mode}")
    if getattr(args, "jobs", 1) > 1:
        parts.append(f"--jobs {args.jobs}")
    return " ".join(parts)


def cli_reproduce(args) -> int:
    """`python -m hybridlib reproduce --table paper-a|paper-b ...`: train the grid's runs
    (this shard's), then write its tables and figures into the grid directory.

    Returns:
        The exit status: 0, or 1 when a run diverged.
    """
    grid_dir = _grid_dir(args)
    configs = grid_configs(
        args.table,
        seeds=args.seeds,
        epochs=args.epochs,
        datasets=args.datasets,
        models=args.models,
        batch_size=args.batch_size,
        recipe=args.recipe,
        out=grid_dir,
        **_run_settings(args),
    )
    distributed.setup(args.device)  # under torchrun: every run is trained by all ranks
    # a grid folder holding runs with other settings: stop now
    distributed.on_main(lambda: [_status(config) for config in configs])
    if distributed.is_main():
        _announce(args, configs, grid_dir)
    with distributed.peer_errors("the grid"):
        done = run_grid(configs, shard=args.shard, jobs=args.jobs)
    if not distributed.is_main():  # rank 0 writes the tables
        return 0
    if not find_run_dirs(grid_dir):
        raise HybridError(f"no finished runs in {grid_dir} to make a table from")
    paths = write_tables(grid_dir, grid_dir, args.table, command=_command(args))
    figures = write_figures(grid_dir, args.table, command=_command(args))
    print(TABLES[args.table]["title"])
    print(wide_table(paper_table(grid_dir, args.table)).to_string())
    print(
        f"\ntrained {len(done['trained'])}, already done {len(done['skipped'])}, "
        f"diverged {len(done['diverged'])}; tables: {paths['table_md']}, {paths['tests_md']}; "
        f"{len(figures)} figures in {grid_dir / 'figures'}"
    )
    for run_dir, message in done["diverged"]:
        print(f"diverged: {run_dir}: {message}", file=sys.stderr)
    return 1 if done["diverged"] else 0


def _grid_dir(args) -> Path:
    """`--out`, or the default grid directory for these settings, made absolute."""
    out = args.out or default_grid_dir(
        args.table,
        recipe=args.recipe,
        epochs=args.epochs,
        batch_size=args.batch_size,
        limit=args.limit,
    )
    return Path(out).expanduser().resolve()


def _run_settings(args) -> dict[str, Any]:
    """The `RunConfig` fields the command line sets for every run of the grid."""
    # None: the grid's value (flips and weight decay per model), or the dataclass's
    settings = {
        name: getattr(args, name)
        for name in GRID_OPTIONS
        if name != "recipe" and getattr(args, name, None) is not None
    }
    return settings


def _announce(args, configs: list[RunConfig], grid_dir: Path) -> None:
    """Say (on rank 0) how many runs go where, and that torchrun ignores --jobs."""
    if args.jobs > 1 and distributed.active():
        print(
            "hybridlib reproduce: note: under torchrun all processes train each run "
            "together; --jobs is ignored",
            file=sys.stderr,
        )
    shard_note = f", shard {args.shard[0]}/{args.shard[1]}" if args.shard != (0, 1) else ""
    print(f"hybridlib reproduce: {len(configs)} runs{shard_note} into {grid_dir}", file=sys.stderr)
