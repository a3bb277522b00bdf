"""The tuning dashboard of notebook 09: change a setting, train, compare with earlier runs.

    from hybridlib.tools.widgets import Dashboard
    dashboard = Dashboard(dataset="digits", limit=600, epochs=3)
    dashboard                        # the last line of a cell: shows it in JupyterLab

    dashboard.set(lr=1e-2, epochs=1) # the same as moving the widgets
    dashboard.train(block=True)      # the same as pressing Train, then waiting
    dashboard.history                # the run's History, one row per finished epoch
    dashboard.runs                   # one row per run of this session: settings and results
    dashboard.status                 # the text of the status line

The settings are one table, `CONTROLS`: each row names a `RunConfig` field, the widget
that sets it and what it changes; the choices come from the registries
(`MODEL_NAMES`, `DATASET_NAMES`, `RECIPES`) and the starting values from `RunConfig`'s
defaults, with the few changes a quick CPU run needs (`QUICK_CHANGES`).

Training runs `hybridlib.engine.trainer.fit` in a background thread, so the notebook (and its
Stop button) keeps responding while a model trains. `fit`'s one callback hook feeds
the live loss and accuracy plot and the progress bar; its `stop` event is the Stop
button, which ends the run after the current step and keeps the model and the
finished epochs. The plot is a matplotlib figure drawn off-screen to a PNG image
widget at most twice a second, so a fast run does not flood the browser.

Mistakes show as one readable message in the status line, never as a traceback,
and the dashboard stays usable: settings that do not fit together (a paper-A model
that needs 32x32 images on 24x24 data), a data set that is not on disk, and a
learning rate so high that the loss explodes (it becomes NaN or rises to 100 times
the loss of random guessing; the run is then stopped and marked "diverged").

On a CPU shared with other work, torch's threads wait for each other and a run can
take 10-50 times longer. The device line shows torch's thread count and the CPU's
cores; a hint says what to do when the threads outnumber the free cores, or when the
first epoch got much less CPU time than its threads asked for. `$HYBRIDLIB_THREADS`
is read at every Train, so `os.environ["HYBRIDLIB_THREADS"] = "1"` in a cell is enough.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import ipywidgets as w
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hybridlib import runtime
from hybridlib.config import RECIPES, RunConfig
from hybridlib.data import DATASET_NAMES
from hybridlib.engine import trainer
from hybridlib.engine.loading import load_bundle
from hybridlib.errors import HybridError, choices_error
from hybridlib.history import History
from hybridlib.models import MODEL_NAMES, build_model
from hybridlib.plots import plot_confusion
from hybridlib.train import evaluate, input_crop

__all__ = ["CONTROLS", "DASHBOARD_DATASETS", "Dashboard", "slow_epoch_hint", "thread_hint"]

# "folder" needs a path, which the dashboard does not ask for; train it from Python.
DASHBOARD_DATASETS = tuple(name for name in DATASET_NAMES if name != "folder")
IMAGE_SIZES = (32, 24)  # paper A's input, paper B's crop size
LR_EXPONENTS = (-5, 1)  # the slider spans 1e-5 .. 10 (paper A: 1e-4; it found 1e-2 worse)
DIVERGED_FACTOR = 100.0  # a loss this many times log(K) (random guessing) counts as diverged
PLOT_INTERVAL_S = 0.5  # redraw the live plot at most twice a second
UI_INTERVAL_S = 0.1  # progress bar and status line: at most ten updates a second
SLOW_SHARE = 0.6  # an epoch whose threads got less than this share of their cores was slowed
SLOW_MIN_S = 2.0  # epochs shorter than this (seconds) are too short to judge the CPU by
CONTROL_WIDTH = "330px"  # the settings column; the curves and results sit beside it
PLOT_SIZE, PLOT_DPI = (7.2, 2.3), 80  # inches, dots per inch: 576x184 px, shown unscaled
PLOT_PX = f"{PLOT_SIZE[0] * PLOT_DPI:.0f}px"

# What a saved notebook shows where the live dashboard was (widgets do not outlive the kernel).
FALLBACK_TEXT = (
    "hybridlib training dashboard: run this cell to show it (a saved notebook keeps no "
    "live widgets; 'Error displaying widget: model not found' means the same)."
)


# ---------------------------------------------------------------- the controls
def _choice(options: tuple) -> Callable[[], w.ValueWidget]:
    return lambda: w.Dropdown(options=options)


def _whole(low: int, high: int) -> Callable[[], w.ValueWidget]:
    return lambda: w.BoundedIntText(min=low, max=high)


def _log_slider() -> w.ValueWidget:
    return w.FloatLogSlider(
        base=10,
        min=LR_EXPONENTS[0],
        max=LR_EXPONENTS[1],
        step=0.1,  # ten stops per factor of ten
        readout_format=".1e",
        continuous_update=False,
    )


def _tick() -> w.ValueWidget:
    return w.Checkbox(indent=False)


@dataclass(frozen=True)
class Control:
    """One setting: the `RunConfig` field it sets, its label, its widget and what it does."""

    field: str  # a RunConfig field; also the setting's name in `Dashboard.set`
    label: str  # shown beside the widget
    make: Callable[[], w.ValueWidget]  # builds the widget
    help: str  # the widget's tooltip: what the setting changes
    none_as: Any = None  # the widget's value that stands for the field's None


CONTROLS = (
    Control("model", "model", _choice(MODEL_NAMES), "what is trained (notebooks 02 to 06)"),
    Control("dataset", "data set", _choice(DASHBOARD_DATASETS), "what it is trained on"),
    Control("image_size", "image size", _choice(IMAGE_SIZES), "32: paper A; 24: paper B's input"),
    Control(
        "recipe",
        "recipe",
        _choice(tuple(RECIPES)),
        "paper: the papers' training; improved: batch norm, AdamW, label smoothing, cosine",
    ),
    Control("lr", "learning rate", _log_slider, "the size of each step; logarithmic, 1e-5 to 10"),
    Control("batch_size", "batch size", _whole(1, 4096), "images per optimiser step"),
    Control("epochs", "epochs", _whole(1, 1000), "passes over the training split"),
    Control("val_every", "validate every", _whole(1, 1000), "epochs between validation passes"),
    Control("augment", "random flips", _tick, "paper A's horizontal and vertical flips"),
    Control("seed", "seed", _whole(0, 2**31 - 1), "the initial weights, shuffling and flips"),
    Control(
        "limit",
        "images/split",
        _whole(0, 10**8),
        "at most this many images per split; 0: all",
        none_as=0,
    ),
)

# Where a quick run on a CPU differs from RunConfig's defaults (paper A's settings).
QUICK_CHANGES = {
    "lr": 5e-4,  # 5x paper A's 1e-4: paper A's CNN then leaves its first plateau in 2 epochs
    "epochs": 3,  # paper A: 30
    "val_every": 1,  # paper A: 5; every epoch, so short runs show a validation curve
    "limit": 600,  # images per split at most; 0 or None: all
}
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig)}
# The settings the dashboard starts with, unless given.
QUICK = {c.field: QUICK_CHANGES.get(c.field, _DEFAULTS[c.field]) for c in CONTROLS}

RUN_COLUMNS = [
    *(c.field for c in CONTROLS),
    "status",
    "epochs_done",
    "train_loss",
    "val_acc",
    "test_acc",
    "time_s",
]

# Short headers for the table as shown, so that every column fits a 1280 px screen.
_SHORT_HEADERS = {
    "run": "#",
    "dataset": "data",
    "image_size": "px",
    "batch_size": "batch",
    "epochs": "epochs",
    "val_every": "val/",
    "augment": "flips",
    "limit": "images",
    "train_loss": "loss",
    "val_acc": "val acc",
    "test_acc": "test acc",
    "time_s": "s",
}
_TABLE_NOTE = (
    "newest first, in bold · epochs: done/asked · val/: validate every · px: image size · "
    "images: per split · loss: training · s: seconds"
)
# Selectors specific enough to win over JupyterLab's own table styles (0.5em padding).
_T = "div.hybridlib-runs table.hybridlib-runs-table"
_TABLE_CSS = (
    f"{_T} {{border-collapse: collapse; font-size: 12px; margin: 0}}"
    f"{_T} th, {_T} td {{padding: 1px 5px; line-height: 18px; text-align: right; "
    "white-space: nowrap; border: none; border-bottom: 1px solid #ddd}"
    f"{_T} thead th {{position: sticky; top: 0; background: #fff}}"
    f"{_T} tbody tr:first-child {{font-weight: bold}}"
)
_PLACEHOLDER = (
    "<div style='padding-left:1em; color:#666'>Press Train: the loss and accuracy curves "
    "appear here while the model trains, then the confusion matrix of the test split.</div>"
)
_STATUS_COLOURS = {"info": "#333333", "ok": "#1b5e20", "warning": "#8a5300", "error": "#b00020"}


def _png(fig: Figure, dpi: int = 80) -> bytes:
    """A figure drawn off-screen (no pyplot, so safe outside the main thread) as PNG bytes."""
    buffer = io.BytesIO()
    FigureCanvasAgg(fig)  # the figure draws with Agg, whatever pyplot's backend is
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


# ---------------------------------------------------------------- the CPU's share
def _load() -> float | None:
    """The 1-minute load average (runnable threads, all processes), None where unknown."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows
        return None


def free_cores(cores: int, load: float | None) -> int:
    """About how many of `cores` the other work leaves free (at least 1)."""
    return cores if load is None else max(1, math.floor(cores - load + 0.5))


def thread_hint(threads: int, cores: int, free: int) -> str:
    """What to do when torch's `threads` outnumber the `free` cores; "" when they fit."""
    if threads <= free:
        return ""
    return (
        f"torch runs {threads} threads, but only about {free} of the {cores} CPU cores are "
        "free: on a busy CPU the threads wait for each other and a run can take 10-50x "
        f'longer. Set os.environ["HYBRIDLIB_THREADS"] = "{free}" in a cell (read at every '
        f"Train) or call torch.set_num_threads({free}), then press Train."
    )


def slow_epoch_hint(wall_s: float, cpu_s: float, threads: int, cores: int) -> str:
    """A hint when an epoch's threads got much less CPU time than they asked for; else "".

    Args:
        wall_s: the epoch's wall-clock time; cpu_s: the CPU time the process used in it.
        threads: torch's intra-op threads; cores: the cores this process may use.
    """
    if wall_s < SLOW_MIN_S:
        return ""
    share = cpu_s / (wall_s * threads)
    if share >= SLOW_SHARE:
        return ""
    got = f"The first epoch took {wall_s:.1f} s with {share:.0%} of the CPU time"
    hint = thread_hint(threads, cores, max(1, round(threads * share)))
    if hint:
        return f"{got} its {threads} threads asked for: other work is using the cores. {hint}"
    return f"{got} of a core: other work is using the CPU, so runs take longer until it is free."


class Dashboard:
    """A training dashboard: settings, Train and Stop, live curves, results, a runs table.

    Args:
        device: where to train: "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", ...
        data_root: the data root (default: `$HYBRIDLIB_DATA` or `~/hybridlib/data`).
        out_dir: when given, the runs table is also written to `<out_dir>/dashboard/runs.csv`
            after every run.
        live_plot: redraw the curves while training; False draws them once at the end
            (for scripted sweeps, where nobody watches).
        values: starting values of the settings (see `QUICK` and `CONTROLS`).

    Attributes:
        controls: {name: widget} of the settings, one per row of `CONTROLS`.
        widget: the whole dashboard as one ipywidgets box.
        model, bundle: the last run's model (kept after Stop) and data.
        result: the last run's test `EvalResult`, or None.
        last_traceback: the traceback of the last unexpected error (for bug reports).
    """

    def __init__(
        self,
        *,
        device: str = "auto",
        data_root: str | Path | None = None,
        out_dir: str | Path | None = None,
        live_plot: bool = True,
        **values: Any,
    ):
        self.device = device
        self.live_plot = live_plot
        self.data_root = None if data_root is None else str(data_root)
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.model = None
        self.bundle = None
        self.result = None
        self.last_traceback: str | None = None
        self.events: list[dict[str, Any]] = []  # the callback's events of the current run
        self._history = History()
        self._rows: list[dict[str, Any]] = []
        self._status = self._hint = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bundle_key: tuple | None = None
        self._draw_lock = threading.Lock()
        self._reset_run(None)
        self._build()
        self.set(**{**QUICK, **values})
        self._say("Choose the settings and press Train.")

    def _reset_run(self, config: RunConfig | None) -> None:
        """Per-run state: the config, divergence message, curves, step counts, clocks."""
        self._config = config
        self.events, self.result, self._diverged = [], None, None
        self._history = History()
        self._curves: dict[str, list[float]] = {
            key: [] for key in ("x", "loss", "acc", "vx", "vloss", "vacc")
        }
        self._chance_loss = math.log(10)
        self._steps, self._epochs = 1, config.epochs if config else 1
        self._done = 0  # training steps finished, over all epochs
        self._last_ui = self._last_plot = 0.0
        self._clock: tuple[float, float] | None = None  # (wall, CPU) at the first epoch's start

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.controls: dict[str, w.Widget] = {c.field: self._control(c) for c in CONTROLS}
        self.train_button = self._part(
            w.Button(description="Train", button_style="success", icon="play"), "train"
        )
        self.stop_button = self._part(
            w.Button(description="Stop", button_style="danger", icon="stop", disabled=True),
            "stop",
        )
        self.train_button.on_click(self._on_train)
        self.stop_button.on_click(self._on_stop)
        self.progress = self._part(
            w.FloatProgress(value=0.0, min=0.0, max=1.0, description="0 %"), "progress"
        )
        self.progress.layout.width = CONTROL_WIDTH
        self.device_html = self._part(w.HTML(), "device")
        self.hint_html = self._part(w.HTML(), "hint")
        self.status_html = self._part(w.HTML(layout=w.Layout(min_height="24px")), "status")
        self.plot = self._part(
            w.Image(format="png", layout=w.Layout(display="none", width=PLOT_PX, max_width="100%")),
            "plot",
        )
        self.result_html = self._part(w.HTML(_PLACEHOLDER), "result")
        self.confusion = self._part(
            w.Image(format="png", layout=w.Layout(display="none", flex="0 0 auto")), "confusion"
        )
        self.runs_html = self._part(w.HTML(layout=w.Layout(width="100%")), "runs")
        self.widget = self._part(w.VBox(self._layout()), "dashboard")
        self._show_device()

    @staticmethod
    def _part(widget: w.Widget, name: str) -> w.Widget:
        widget.add_class(f"hybridlib-{name.replace('_', '-')}")  # for styles and tests
        return widget

    def _control(self, control: Control) -> w.ValueWidget:
        widget = control.make()
        widget.description, widget.tooltip = control.label, control.help
        widget.style.description_width = "100px"
        widget.layout.width = CONTROL_WIDTH
        return self._part(widget, control.field)

    def _layout(self) -> list[w.Widget]:
        """Settings on the left, curves and results on the right, the runs table below."""
        settings = w.VBox(
            [
                *self.controls.values(),
                w.HBox([self.train_button, self.stop_button]),
                self.progress,
            ],
            layout=w.Layout(width="340px", flex="0 0 auto"),
        )
        output = w.VBox(
            [self.plot, w.HBox([self.confusion, w.VBox([self.result_html, self.hint_html])])],
            layout=w.Layout(flex="1 1 auto", min_width="0"),
        )
        title = w.HTML("<b>hybridlib training dashboard</b>")
        return [
            w.HBox([title, self.device_html], layout=w.Layout(grid_gap="1em")),
            w.HBox([settings, output]),
            self.status_html,
            self.runs_html,
        ]

    def _show_device(self) -> None:
        """The device line (torch's threads, the CPU's cores and load) and a thread hint."""
        cores, load, threads = runtime.available_cores(), _load(), torch.get_num_threads()
        try:
            device = escape(runtime.describe_device(runtime.resolve_device(self.device)))
        except HybridError as error:
            device = f"<span style='color:{_STATUS_COLOURS['error']}'>{escape(str(error))}</span>"
        busy = "" if load is None else f", load {load:.1f}"
        if "threads" not in device:  # describe_device names the threads of a CPU device only
            device += f" · torch CPU threads: {threads}"
        self.device_html.value = f"device: {device} · CPU cores: {cores}{busy}"
        self._show_hint(thread_hint(threads, cores, free_cores(cores, load)))

    def _show_hint(self, hint: str) -> None:
        self._hint = hint
        colour = _STATUS_COLOURS["warning"]
        self.hint_html.value = f"<div style='color:{colour}'>{escape(hint)}</div>" if hint else ""

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.widget._repr_mimebundle_(**kwargs)
        # Where no widget can show (a saved notebook, GitHub, nbconvert): say what to do.
        bundle["text/plain"] = FALLBACK_TEXT
        bundle["text/markdown"] = f"*{FALLBACK_TEXT}*"
        return bundle

    # ---------------------------------------------------------------- settings
    def set(self, **values: Any) -> Dashboard:
        """Set widgets by name, as a student would: `dashboard.set(lr=1e-2, epochs=1)`.

        Raises:
            HybridError: for an unknown setting or a value a widget cannot take.
        """
        table = {c.field: c for c in CONTROLS}
        for name, value in values.items():
            if name not in self.controls:
                raise choices_error("dashboard setting", name, self.controls)
            control = self.controls[name]
            if value is None and table[name].none_as is not None:
                value = table[name].none_as
            options = getattr(control, "options", None)
            if options is not None and value not in options:
                raise choices_error(name, value, options)
            low, high = getattr(control, "min", None), getattr(control, "max", None)
            if isinstance(control, w.FloatLogSlider):
                low, high = control.base**control.min, control.base**control.max
            if low is not None and not low <= value <= high:
                raise HybridError(f"{name} must be between {low:g} and {high:g}, got {value!r}")
            control.value = value
        return self

    @property
    def values(self) -> dict[str, Any]:
        """The current settings, {name: value}."""
        return {name: control.value for name, control in self.controls.items()}

    def config(self) -> RunConfig:
        """The `RunConfig` the Train button would use (raises `HybridError` if invalid)."""
        fields = {}
        for control in CONTROLS:
            value = self.controls[control.field].value
            none = control.none_as is not None and value == control.none_as
            fields[control.field] = None if none else value
        return RunConfig.from_recipe(
            fields.pop("recipe"),
            **fields,
            device=self.device,
            data_root=self.data_root,
            progress=False,  # the dashboard is the progress display
        )

    @staticmethod
    def check(config: RunConfig) -> None:
        """Raise `HybridError` for settings that do not fit together, before any data loads."""
        model = build_model(config.model, config.num_classes or 10)
        input_crop(model, config.image_size)  # a model that needs larger images than given

    # ---------------------------------------------------------------- state
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def status(self) -> str:
        """The status line as plain text."""
        return self._status

    @property
    def hint(self) -> str:
        """The CPU hint as plain text ("" when torch's threads fit the free cores)."""
        return self._hint

    @property
    def history(self):
        """The `History` of the current or last run (finished epochs; live while training)."""
        return self._history

    @property
    def runs(self) -> pd.DataFrame:
        """One row per run of this session: its settings and its results (accuracies 0..1)."""
        frame = pd.DataFrame(self._rows, columns=RUN_COLUMNS)
        frame.index = pd.RangeIndex(1, len(frame) + 1, name="run")
        return frame

    # ---------------------------------------------------------------- actions
    def _on_train(self, _button: w.Button) -> None:
        self.train()

    def _on_stop(self, _button: w.Button) -> None:
        self.stop()

    def train(self, block: bool = False, timeout: float | None = None) -> dict[str, Any] | None:
        """Start a run with the current settings (what the Train button does).

        Args:
            block: wait until the run has ended. Leave it False in a notebook, where the
                Stop button only works while the cell is not busy.
            timeout: with `block`, wait at most this many seconds.
        Returns:
            With `block`, the run's row of `runs` as a dict (None when it did not start,
            or had not ended after `timeout`); otherwise None.
        """
        if self.running:
            self._say("A run is in progress: wait for it, or press Stop.", "warning")
            return None
        try:
            config = self.config()
            self.check(config)
        except HybridError as error:
            self._say(str(error), "error")
            return None
        self._stop.clear()
        self._reset_run(config)
        self._clear_results()
        self._set_running(True)
        self._thread = threading.Thread(
            target=self._run, args=(config,), name="hybridlib-dashboard", daemon=True
        )
        self._thread.start()
        if not block:
            return None
        rows_before = len(self._rows)
        self.wait(timeout)
        return dict(self._rows[-1]) if len(self._rows) > rows_before else None

    def stop(self) -> None:
        """Ask the run to end after its current step (what the Stop button does)."""
        if not self.running:
            self._say("Nothing to stop: no run is in progress.", "info")
            return
        self._stop.set()
        self._say("Stopping after the current step ...", "warning")

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the current run to end; returns True when it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    # ---------------------------------------------------------------- the run
    def _bundle_for(self, config: RunConfig):
        key = (
            config.dataset,
            config.data_root,
            config.split_seed,
            config.image_size,
            config.num_classes,
            config.limit,
        )
        if key != self._bundle_key:
            self.bundle, self._bundle_key = None, None  # free the old data first
            self.bundle = load_bundle(config)
            self._bundle_key = key
        return self.bundle

    def _run(self, config: RunConfig) -> None:
        """The background thread: load, train, test, then report. Never raises."""
        started = time.perf_counter()
        try:
            status, message = self._train_and_test(config, started)
        except trainer.DivergedError as error:
            status, message = "diverged", str(error)
        except HybridError as error:
            status, message = "error", str(error)
        except Exception as error:  # a bug: one readable line here, details kept
            self.last_traceback = traceback.format_exc()
            status = "error"
            message = (
                f"Unexpected {type(error).__name__}: {error} (details in dashboard.last_traceback)"
            )
        try:
            if status != "error":
                self._record(config, status, time.perf_counter() - started)
            self._show_results(config, status)
        except Exception as error:  # keep the dashboard usable whatever happens
            self.last_traceback = traceback.format_exc()
            message += f" (the results could not be shown: {type(error).__name__}: {error})"
        finally:
            level = {"complete": "ok", "stopped": "warning"}.get(status, "error")
            self._say(message, level)
            self._set_running(False)

    def _train_and_test(self, config: RunConfig, started: float) -> tuple[str, str]:
        """Train with `fit`, then test a complete run; returns (status, message)."""
        device = runtime.resolve_device(config.device)
        if runtime.threads_setting() is not None:  # $HYBRIDLIB_THREADS, read at every Train
            runtime.set_threads(device)
        self._show_device()
        self._say(f"Loading {config.dataset} ...")
        bundle = self._bundle_for(config)
        self._chance_loss = math.log(bundle.num_classes)
        runtime.seed_everything(config.seed)  # the weights come from the seed
        self.model = build_model(
            config.model, bundle.num_classes, batch_norm=config.batch_norm, dropout=config.dropout
        )
        self._say(
            f"Training {config.model} on {config.dataset} "
            f"({bundle.sizes['train']:,} training images) on {device} ..."
        )
        self._history = trainer.fit(
            self.model, bundle, config, callback=self._on_event, stop=self._stop, device=device
        )
        if self._diverged:
            return "diverged", self._diverged
        if self._history.stopped_at is not None:
            epoch, step = self._history.stopped_at
            return "stopped", (
                f"Stopped at epoch {epoch}, step {step}; the model and the "
                f"{len(self._history)} finished epoch(s) are kept (dashboard.model, "
                "dashboard.history). Press Train for a new run."
            )
        self.result = self._test(config, bundle, device)
        return "complete", (
            f"Done: test accuracy {self.result.accuracy:.1%} on "
            f"{self.result.num_samples:,} images in {time.perf_counter() - started:.1f} s."
        )

    def _test(self, config: RunConfig, bundle, device):
        loader = bundle.loader(
            "test",
            config.eval_batch_size,
            device=device,
            crop=input_crop(self.model, bundle.image_size),
        )
        self._say("Testing ...")
        return evaluate(
            self.model,
            loader,
            device=device,
            num_classes=bundle.num_classes,
            classes=list(bundle.classes),
            ctx=runtime.autocast(device, amp=config.amp, cpu_bf16=config.cpu_bf16),
        )

    # ---------------------------------------------------------------- fit's callback
    def _on_event(self, event: dict[str, Any]) -> None:
        """`fit`'s callback, in the training thread: record, check, redraw (throttled)."""
        self.events.append(event)
        kind = event["event"]
        {"start": self._on_start, "step": self._on_step, "epoch": self._on_epoch}.get(
            kind, self._on_end
        )(event)
        now = time.perf_counter()
        force = kind != "step"
        if force or now - self._last_ui >= UI_INTERVAL_S:
            self._last_ui = now
            self._show_progress(event)
        if self.live_plot and (force or now - self._last_plot >= PLOT_INTERVAL_S):
            self._draw_curves()
            self._last_plot = time.perf_counter()  # after drawing: drawing takes time too

    def _on_start(self, event: dict[str, Any]) -> None:
        self._steps = max(1, event["steps"])
        self._epochs = event["epochs"]
        self._clock = (time.perf_counter(), time.process_time())

    def _on_step(self, event: dict[str, Any]) -> None:
        self._done = (event["epoch"] - 1) * self._steps + event["step"]
        self._curves["x"].append(self._done / self._steps)
        self._curves["loss"].append(event["loss"])
        self._curves["acc"].append(event["acc"] * 100)
        self._check_divergence(event)

    def _on_epoch(self, event: dict[str, Any]) -> None:
        self._history.append(event)
        self._done = event["epoch"] * self._steps
        if not math.isnan(event["val_acc"]):
            self._curves["vx"].append(event["epoch"])
            self._curves["vloss"].append(event["val_loss"])
            self._curves["vacc"].append(event["val_acc"] * 100)
        self._check_speed()

    def _on_end(self, event: dict[str, Any]) -> None:
        self._check_speed()  # a run stopped inside its first epoch

    def _check_speed(self) -> None:
        """After the first epoch: did its threads get the cores they asked for?"""
        if self._clock is None:
            return
        wall, cpu = time.perf_counter() - self._clock[0], time.process_time() - self._clock[1]
        self._clock = None
        if wall >= SLOW_MIN_S:  # shorter epochs say too little; keep the last hint
            hint = slow_epoch_hint(wall, cpu, torch.get_num_threads(), runtime.available_cores())
            self._show_hint(hint)

    def _check_divergence(self, event: dict[str, Any]) -> None:
        loss = event["loss"]
        limit = DIVERGED_FACTOR * self._chance_loss
        if self._diverged or (math.isfinite(loss) and loss <= limit):
            return
        lr = self._config.lr
        self._diverged = (
            f"Training diverged: the loss rose to {loss:.3g} at epoch {event['epoch']}, "
            f"step {event['step']} (random guessing gives {self._chance_loss:.2f}), so the "
            f"run was stopped. The learning rate {lr:g} is too high: try {lr / 10:g} or "
            "lower (paper A uses 1e-4)."
        )
        self._stop.set()

    # ---------------------------------------------------------------- display
    def _say(self, message: str, level: str = "info") -> None:
        self._status = message
        colour = _STATUS_COLOURS[level]
        self.status_html.value = f"<div style='color:{colour}'>{escape(message)}</div>"

    def _set_running(self, running: bool) -> None:
        for control in self.controls.values():
            control.disabled = running
        self.train_button.disabled = running
        self.stop_button.disabled = not running
        if running:
            self.progress.value = 0.0
            self.progress.description = "0 %"
            self.progress.bar_style = ""

    def _clear_results(self) -> None:
        """A new run starts: the last run's curves, confusion matrix and accuracy go."""
        with self._draw_lock:
            self.plot.layout.display = "none"
            self.confusion.layout.display = "none"
            self.confusion.value = b""
        self.result_html.value = ""

    def _show_progress(self, event: dict[str, Any]) -> None:
        # The steps done so far: a stopped run's bar stays where the run stopped.
        self.progress.value = min(1.0, self._done / (self._epochs * self._steps))
        self.progress.description = f"{self.progress.value:.0%}"
        if event["event"] == "step" and not self._stop.is_set():
            self._say(
                f"Epoch {event['epoch']}/{self._epochs}, step {event['step']}/{self._steps}: "
                f"loss {event['loss']:.4f}, accuracy {event['acc']:.1%}"
            )

    def _draw_curves(self) -> None:
        curves = self._curves
        fig = Figure(figsize=PLOT_SIZE, layout="constrained")
        ax_loss, ax_acc = fig.subplots(1, 2)
        ax_loss.plot(curves["x"], curves["loss"], color="tab:blue", label="training")
        ax_acc.plot(curves["x"], curves["acc"], color="tab:blue", label="training")
        if curves["vx"]:
            ax_loss.plot(
                curves["vx"], curves["vloss"], "o-", color="tab:orange", label="validation"
            )
            ax_acc.plot(curves["vx"], curves["vacc"], "o-", color="tab:orange", label="validation")
        ax_loss.set_ylabel("loss")
        ax_acc.set_ylabel("accuracy (%)")
        ax_acc.set_ylim(0, 100)
        for ax in (ax_loss, ax_acc):
            ax.set_xlabel("epoch")
            ax.set_xlim(0, max(1, self._epochs))
            ax.grid(alpha=0.3)
            ax.legend(loc="best", fontsize="small")
        fig.suptitle(
            "training: running mean over the epoch so far; validation: end of epoch",
            fontsize="small",
        )
        with self._draw_lock:
            self.plot.value = _png(fig, dpi=PLOT_DPI)
            self.plot.layout.display = None

    def _record(self, config: RunConfig, status: str, seconds: float) -> None:
        """The run's row of `runs`: its settings and the numbers it reached."""
        last = self._history.last or {}
        validated = self._history.last_validated() or {}
        # Stopped inside its first epoch: the running mean loss of the last step reached.
        loss = last.get(
            "train_loss", self._curves["loss"][-1] if self._curves["loss"] else math.nan
        )
        row = {name: getattr(config, name) for name in RUN_COLUMNS if hasattr(config, name)}
        row.update(
            limit=config.limit or 0,
            status=status,
            epochs_done=len(self._history),
            train_loss=loss,
            val_acc=validated.get("val_acc", math.nan),
            test_acc=self.result.accuracy if self.result is not None else math.nan,
            time_s=round(seconds, 1),
        )
        self._rows.append(row)
        if self.out_dir is not None:
            folder = self.out_dir / "dashboard"
            folder.mkdir(parents=True, exist_ok=True)
            self.runs.to_csv(folder / "runs.csv")

    def _show_results(self, config: RunConfig, status: str) -> None:
        if self._curves["x"]:
            self._draw_curves()
        if self.result is not None:
            self._show_test(config)
        else:
            self.confusion.layout.display = "none"
            self.progress.bar_style = "warning" if status == "stopped" else "danger"
            self.result_html.value = (
                f"<div style='padding-left:1em'><h3>no test accuracy</h3>run {status}</div>"
            )
        self.runs_html.value = self._runs_table_html()

    def _show_test(self, config: RunConfig) -> None:
        result, bundle = self.result, self.bundle
        fig = plot_confusion(result.confusion, list(bundle.classes), title="test split")
        fig.set_size_inches(4.4, 3.8)  # beside the curves, within a 1280x800 screen
        with self._draw_lock:
            self.confusion.value = _png(fig, dpi=64)
            self.confusion.layout.display = None
        self.progress.bar_style = "success"
        self.result_html.value = (
            f"<div style='padding-left:1em'><h3>test accuracy {result.accuracy:.1%}</h3>"
            f"{config.model} on {config.dataset},<br>{result.num_samples:,} test images, "
            f"{len(self._history)} epoch(s).<br>Random guessing: "
            f"{1 / bundle.num_classes:.1%}.</div>"
        )

    def _runs_table_html(self) -> str:
        frame = self.runs
        if not len(frame):
            return ""
        shown = frame.iloc[::-1].copy()  # newest first: in view without scrolling
        shown["lr"] = shown["lr"].map("{:.1e}".format)
        for column in ("val_acc", "test_acc"):
            shown[column] = shown[column].map(lambda v: "–" if pd.isna(v) else f"{v:.1%}")
        shown["train_loss"] = shown["train_loss"].map(lambda v: "–" if pd.isna(v) else f"{v:.3g}")
        shown["limit"] = shown["limit"].map(lambda v: v or "all")
        shown["augment"] = shown["augment"].map({True: "yes", False: "no"})
        shown["epochs"] = shown["epochs_done"].astype(str) + "/" + shown["epochs"].astype(str)
        shown = shown.drop(columns="epochs_done").reset_index().rename(columns=_SHORT_HEADERS)
        table = shown.to_html(index=False, border=0, escape=True, classes="hybridlib-runs-table")
        return (
            f"<style>{_TABLE_CSS}</style>"
            f"<b>Runs of this session</b> <small>({_TABLE_NOTE})</small>"
            f"<div style='max-width:100%; max-height:130px; overflow:auto'>{table}</div>"
        )
