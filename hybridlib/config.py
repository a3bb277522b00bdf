"""The run configuration: one dataclass whose defaults are paper A's settings.

    from hybridlib.config import RunConfig
    config = RunConfig(model="cnn_lstm_skip", dataset="caltech101")
    config.to_json("config.json")
    same = RunConfig.from_json("config.json")

Every run saves its `RunConfig` as `config.json` beside its checkpoint, so a run
directory says exactly how it was made. Paper A trains with batch 16, learning
rate 1e-4, 30 epochs and validation every 5 epochs, with horizontal and vertical
flips as the only augmentation; it does not name the optimiser ("Adam-style"),
so the course uses Adam and says so.

`recipe="improved"` is the course's own better training recipe (batch
normalisation, a cosine learning-rate schedule, label smoothing, weight decay);
its fields default to paper-neutral values so the paper's recipe stays the
default. Invalid values raise `HybridError` naming the field and the fix.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from hybridlib.data import DATASET_NAMES
from hybridlib.errors import HybridError, choices_error
from hybridlib.models import MODEL_NAMES

__all__ = ["OPTIMIZERS", "RECIPES", "SCHEDULERS", "STEP_MODES", "TRAIN_OPTIONS", "RunConfig"]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine")
# How a training step runs (hybridlib.engine.fast): op by op, or replayed from a CUDA graph.
STEP_MODES = ("eager", "graph", "auto")

# What each named recipe changes relative to the dataclass defaults (the paper's).
RECIPES: dict[str, dict[str, Any]] = {
    "paper": {},
    "improved": {
        "lr": 1e-3,  # batch norm tolerates a 10x larger step than paper A's 1e-4
        "optimizer": "adamw",
        "weight_decay": 5e-4,
        "batch_norm": True,
        "label_smoothing": 0.1,
        "scheduler": "cosine",
    },
}

# Fields that say where and how visibly a run executes, not what it computes;
# they may differ between a run and its resumption and between grid runs.
RUNTIME_FIELDS = ("device", "data_root", "out", "progress", "download", "step_mode")

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass
class RunConfig:
    """Everything that defines one training run. Defaults: paper A's settings."""

    # What to train on what.
    model: str = "cnn"  # a name from hybridlib.models.MODEL_NAMES
    dataset: str = "digits"  # a name from hybridlib.data.DATASET_NAMES
    num_classes: int | None = None  # classes to keep; None: the data set's default (Tiny: 5)
    image_size: int = 32  # pixels per side after resizing (paper A: 32)
    folder: str | None = None  # image folder for dataset="folder"
    limit: int | None = None  # images per split at most (quick runs); None: all
    split_seed: int = 0  # seed of the train/val/test split: fixed, so every run tests alike

    # Optimisation (paper A).
    batch_size: int = 16  # images per optimiser step (paper A: 16; paper B: 128)
    per_rank_batch: bool = False  # under torchrun: batch_size per rank, not over all ranks
    epochs: int = 30  # passes over the training split (paper A: 30)
    lr: float = 1e-4  # learning rate, per step (paper A: 1e-4; 1e-2 and 1e-3 were worse)
    val_every: int = 5  # epochs between validation passes (paper A: 5); the last always runs
    optimizer: str = "adam"  # adam | adamw | sgd (paper A: "Adam-style", unnamed)
    weight_decay: float = 0.0  # L2 penalty coefficient, 1/step scale of the optimiser; 0: none
    momentum: float = 0.9  # SGD momentum only (dimensionless)
    seed: int = 0  # seeds weights, shuffling, flips and dropout

    # Augmentation (paper A: horizontal and vertical flips only; paper B: 24x24 crops only).
    augment: bool = True  # augment training images: flips (if `flip`), crops (paper B models)
    flip: bool = True  # random horizontal and vertical flips while augmenting; paper B: False

    # The improved recipe's knobs; the defaults are the paper's (off).
    recipe: str = "paper"  # paper | improved: see RECIPES
    batch_norm: bool = False  # batch normalisation after each convolution
    dropout: float = 0.0  # dropout probability before the classifier (0..1)
    label_smoothing: float = 0.0  # cross-entropy label smoothing (0..1); 0: plain CE
    scheduler: str = "none"  # learning-rate schedule: none | cosine (per step, to 0)

    # Execution: where and how, not what.
    device: str = "auto"  # auto (CUDA, then MPS, then CPU), cpu, mps, cuda, cuda:N
    amp: bool = True  # bf16 autocast on CUDA (no effect elsewhere)
    cpu_bf16: bool = False  # bf16 autocast on the CPU too (opt-in: changes numerics)
    channels_last: bool | None = None  # NHWC memory layout; None: on for CUDA and CPU
    step_mode: str = "eager"  # eager | graph: whole step in a CUDA graph | auto: graph on CUDA
    deterministic: bool = False  # deterministic kernels: bit-exact resume on CPU (slower)
    eval_batch_size: int = 256  # images per evaluation step; does not change the results
    data_root: str | None = None  # None: $HYBRIDLIB_DATA or ~/hybridlib/data
    download: bool = False  # download a missing data set from its official host
    out: str | None = None  # run directory; None: a new folder under $HYBRIDLIB_RUNS/runs
    progress: bool = True  # tqdm progress bars and one line per epoch

    def __post_init__(self) -> None:
        self.validate()

    # ---------------------------------------------------------------- checks
    def validate(self) -> RunConfig:
        """Raise `HybridError` for the first invalid field; return self otherwise."""
        if self.model not in MODEL_NAMES:
            raise choices_error("model", self.model, MODEL_NAMES)
        if self.dataset not in DATASET_NAMES:
            raise choices_error("dataset", self.dataset, DATASET_NAMES)
        if self.dataset == "folder" and not self.folder:
            raise HybridError(
                "dataset 'folder' needs folder=PATH (--folder PATH on the command line): "
                "a folder with one sub-folder of images per class"
            )
        for name in ("batch_size", "epochs", "val_every", "eval_batch_size", "image_size"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("limit", "num_classes"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=1 if name == "limit" else 2)
        for name in ("seed", "split_seed"):
            _check_int(name, getattr(self, name), minimum=0)
            if getattr(self, name) >= 2**32:
                raise HybridError(f"{name} must be below 2**32, got {getattr(self, name)}")
        if self.image_size < 8:
            raise HybridError(f"image_size must be at least 8 pixels, got {self.image_size}")
        _check_float(
            "lr",
            self.lr,
            low=0.0,
            low_open=True,
            fix="use a positive learning rate such as 1e-4 (paper A)",
        )
        _check_float("weight_decay", self.weight_decay, low=0.0)
        _check_float("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        _check_float("dropout", self.dropout, low=0.0, high=1.0, high_open=True)
        _check_float("label_smoothing", self.label_smoothing, low=0.0, high=1.0, high_open=True)
        if self.optimizer not in OPTIMIZERS:
            raise choices_error("optimizer", self.optimizer, OPTIMIZERS)
        if self.scheduler not in SCHEDULERS:
            raise choices_error("scheduler", self.scheduler, SCHEDULERS)
        if self.recipe not in RECIPES:
            raise choices_error("recipe", self.recipe, RECIPES)
        if self.step_mode not in STEP_MODES:
            raise choices_error("step_mode", self.step_mode, STEP_MODES)
        if not isinstance(self.device, str) or not _DEVICE_PATTERN.match(self.device):
            raise HybridError(
                f"unknown device {self.device!r}; choose one of: auto, cpu, mps, cuda, cuda:N"
            )
        return self

    # ------------------------------------------------------------ recipes
    @classmethod
    def from_recipe(cls, recipe: str = "paper", **values: Any) -> RunConfig:
        """A config for a named recipe: the recipe's settings, then `values` on top.

        Args:
            recipe: a name from `RECIPES` ("paper" or "improved").
            values: any `RunConfig` fields; they win over the recipe's.
        """
        if recipe not in RECIPES:
            raise choices_error("recipe", recipe, RECIPES)
        return cls(**{**RECIPES[recipe], **values, "recipe": recipe})

    # --------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Build a config from a dict; unknown keys raise `HybridError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise HybridError(
                f"unknown config field(s) {', '.join(unknown)}; valid fields: "
                f"{', '.join(sorted(known))}"
            )
        return cls(**values)

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The config as indented JSON; also written to `path` when given."""
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, source: str | os.PathLike) -> RunConfig:
        """Read a config from a JSON file path or a JSON string."""
        text, path = str(source), None
        if not text.lstrip().startswith("{"):
            path = Path(source)
            if not path.is_file():
                raise HybridError(f"config file {str(path)!r} not found")
            try:
                text = path.read_text()
            except UnicodeDecodeError:
                text = "not text"
        where = f"config {str(path)!r}" if path else "config"
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise HybridError(f"{where} is not valid JSON: {error}") from None
        # a config.json another program wrote: say so rather than train or test on defaults
        known = {f.name for f in fields(cls)}
        if not isinstance(values, dict) or not {"model", "dataset"} <= set(values):
            what = f"a JSON {type(values).__name__}" if not isinstance(values, dict) else None
            keys = ", ".join(sorted(str(k) for k in values)) if isinstance(values, dict) else ""
            has = what or (f"fields {keys}" if keys else "no fields")
            raise HybridError(
                f"{where} is not a hybridlib run config (it holds {has}, not RunConfig's "
                "model, dataset, ...); give a run directory written by `hybridlib train`"
            )
        unknown = sorted(set(values) - known)
        if unknown and path is not None:
            raise HybridError(
                f"{where} is not a hybridlib run config: unknown field(s) {', '.join(unknown)}; "
                "give a run directory written by `hybridlib train`"
            )
        return cls.from_dict(values)

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def science(self) -> dict[str, Any]:
        """The fields that change what a run computes (all but `RUNTIME_FIELDS`)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}

    def command(self) -> str:
        """An equivalent `python -m hybridlib train ...` command line (see `TRAIN_OPTIONS`)."""
        defaults = {**DEFAULTS, **RECIPES[self.recipe]}
        parts = ["python -m hybridlib train"]
        for name, option in TRAIN_OPTIONS.items():
            value, flag = getattr(self, name), "--" + name.replace("_", "-")
            if not option.written or not option.always and value == defaults[name]:
                continue
            if isinstance(value, bool):
                parts.append(flag if value else flag.replace("--", "--no-", 1))
            elif value is not None and value != "":
                parts.append(f"{flag} {option.written.format(value)}")
        return " ".join(parts)


@dataclass(frozen=True)
class Option:
    """A `train` option: `--FIELD-NAME` sets `RunConfig.FIELD` (booleans: `--no-FIELD`)."""

    help: str  # what `--help` says (for a field on by default: what `--no-FIELD` does)
    always: bool = False  # `command()` writes it even at its default
    written: str = "{}"  # how `command()` writes the value; "": never (where, not what)


DEFAULTS = {f.name: f.default for f in fields(RunConfig)}

# The command line's `train` options, in the order `command()` writes them. The parser
# (hybridlib.tools.cli) takes each flag, type and default from here and the dataclass,
# so a new option is one field above and one line here.
TRAIN_OPTIONS: dict[str, Option] = {
    "model": Option(f"model: {', '.join(MODEL_NAMES)}", always=True),
    "dataset": Option(f"data set: {', '.join(DATASET_NAMES)}", always=True),
    "batch_size": Option("images per step (paper A: 16)", always=True),
    "epochs": Option("passes over the training split (paper A: 30)", always=True),
    "lr": Option(
        "learning rate (default: the recipe's: 1e-4 as paper A, 1e-3 with --recipe improved)",
        always=True,
        written="{:g}",
    ),
    "val_every": Option("validate every N epochs (paper A: 5)", always=True),
    "seed": Option("random seed", always=True),
    "recipe": Option("paper: the papers' settings; improved: the course's better recipe"),
    "weight_decay": Option(
        "L2 weight decay of the optimiser (default: the recipe's, 0 for the paper's; "
        "in paper B's grid 5e-4 on its regularised CNN only; given here: every run)",
        written="{!r}",
    ),
    "device": Option("cuda, cuda:N, mps, cpu or auto (CUDA, then MPS, then CPU)"),
    "step_mode": Option(
        "eager: op by op; graph: the whole training step in a CUDA graph (falls back "
        "to eager where capture is not possible); auto: graph on CUDA"
    ),
    "limit": Option("use at most this many images per split (quick runs)"),
    "folder": Option("for --dataset folder: a folder with one sub-folder of images per class"),
    "num_classes": Option(
        "classes to keep (default: the data set's: Caltech 101 10, Tiny ImageNet 5, others all)"
    ),
    "data_root": Option("data root (default: $HYBRIDLIB_DATA or ~/hybridlib/data)"),
    "download": Option("download a missing data set from its official host", written=""),
    "deterministic": Option("deterministic kernels (slower; bit-exact resume on CPU)"),
    "augment": Option("turn the training augmentation off"),  # --no-augment
    "flip": Option(
        "random horizontal and vertical flips while augmenting (default: on for "
        "train and paper A, off for paper B's grid, which names crops only)"
    ),
    "amp": Option("no bf16 autocast on CUDA (it is off on the CPU unless --cpu-bf16)"),  # --no-amp
    "cpu_bf16": Option("opt in to bf16 autocast on the CPU (changes numerics)"),
    "per_rank_batch": Option(
        "under torchrun: --batch-size is per process (global batch = it x processes); "
        "by default it is the global batch, split over the processes"
    ),
    "out": Option("run directory (default: a new folder under $HYBRIDLIB_RUNS/runs)"),
}


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise HybridError(f"{name} must be a whole number, got {value!r}")
    if value < minimum:
        raise HybridError(f"{name} must be at least {minimum}, got {value}")


def _check_float(
    name: str,
    value: Any,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
    fix: str = "",
) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise HybridError(f"{name} must be a finite number, got {value!r}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        if math.isinf(high):
            wanted = f"greater than {low:g}" if low_open else f"at least {low:g}"
        else:
            left, right = "(" if low_open else "[", ")" if high_open else "]"
            wanted = f"in {left}{low:g}, {high:g}{right}"
        hint = f"; {fix}" if fix else ""
        raise HybridError(f"{name} must be {wanted}, got {value:g}{hint}")
