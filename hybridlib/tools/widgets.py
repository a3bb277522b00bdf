"""The tuning dashboard of notebook 09: change a setting, train, compare with earlier runs.

    from hybridlib.tools.widgets import Dashboard
    dashboard = Dashboard(dataset="digits", limit=600, epochs=3)
    dashboard                        # the last line of a cell: shows it in JupyterLab

    dashboard.set(lr=1e-2, epochs=1) # the same as moving the widgets
    dashboard.train(block=True)      # the same as pressing Train, then waiting
    dashboard.history                # the run's History, one row per finished epoch
    dashboard.runs                   # one row per run of this session: settings and results
    dashboard.status                 # the text of the status line

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
"""

from __future__ import annotations

import io
import math
import threading
import time
import traceback
from html import escape
from pathlib import Path
from typing import Any

import ipywidgets as w
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hybridlib.config import RECIPES, RunConfig
from hybridlib.data import DATASET_NAMES
from hybridlib.errors import HybridError, choices_error
from hybridlib.models import MODEL_NAMES

__all__ = ["DASHBOARD_DATASETS", "Dashboard"]

# "folder" needs a path, which the dashboard does not ask for; train it from Python.
DASHBOARD_DATASETS = tuple(name for name in DATASET_NAMES if name != "folder")
IMAGE_SIZES = (32, 24)  # paper A's input, paper B's crop size
LR_EXPONENTS = (-5, 1)  # the slider spans 1e-5 .. 10 (paper A: 1e-4; it found 1e-2 worse)
DIVERGED_FACTOR = 100.0  # a loss this many times log(K) (random guessing) counts as diverged
PLOT_INTERVAL_S = 0.5  # redraw the live plot at most twice a second
UI_INTERVAL_S = 0.1  # progress bar and status line: at most ten updates a second

# Settings the dashboard starts with, unless given: paper A's, except where a quick
# run on a CPU needs otherwise.
QUICK = {
    "model": "cnn",
    "dataset": "digits",
    "image_size": 32,
    "recipe": "paper",
    "lr": 5e-4,  # 5x paper A's 1e-4: paper A's CNN then leaves its first plateau in 2 epochs
    "batch_size": 16,  # paper A
    "epochs": 3,  # paper A: 30
    "val_every": 1,  # paper A: 5; every epoch, so short runs show a validation curve
    "augment": True,  # paper A's horizontal and vertical flips
    "seed": 0,
    "limit": 600,  # images per split at most; 0 or None: all
}

RUN_COLUMNS = [
    "model",
    "dataset",
    "recipe",
    "image_size",
    "lr",
    "batch_size",
    "epochs",
    "val_every",
    "augment",
    "seed",
    "limit",
    "status",
    "epochs_done",
    "train_loss",
    "val_acc",
    "test_acc",
    "time_s",
]

# Shorter headers for the table as shown, so that it fits the notebook's width.
_SHORT_HEADERS = {
    "image_size": "size",
    "batch_size": "batch",
    "val_every": "val every",
    "augment": "flips",
    "epochs_done": "done",
    "train_loss": "train loss",
    "val_acc": "val acc",
    "test_acc": "test acc",
    "time_s": "time (s)",
}
_TABLE_CSS = (
    ".hybridlib-runs-table {border-collapse: collapse; font-size: 12px}"
    ".hybridlib-runs-table th, .hybridlib-runs-table td "
    "{padding: 2px 8px; text-align: right; white-space: nowrap; border-bottom: 1px solid #ddd}"
    ".hybridlib-runs-table tbody tr:last-child {font-weight: bold}"
)
_STATUS_COLOURS = {"info": "#333333", "ok": "#1b5e20", "warning": "#8a5300", "error": "#b00020"}


def _png(fig: Figure, dpi: int = 80) -> bytes:
    """A figure drawn off-screen (no pyplot, so safe outside the main thread) as PNG bytes."""
    buffer = io.BytesIO()
    FigureCanvasAgg(fig)  # the figure draws with Agg, whatever pyplot's backend is
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


class Dashboard:
    """A training dashboard: settings, Train and Stop, live curves, results, a runs table.

    Args:
        device: where to train: "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", ...
        data_root: the data root (default: `$HYBRIDLIB_DATA` or `~/hybridlib/data`).
        out_dir: when given, the runs table is also written to `<out_dir>/dashboard/runs.csv`
            after every run.
        live_plot: redraw the curves while training; False draws them once at the end
            (for scripted sweeps, where nobody watches).
        values: starting values of the settings (see `QUICK` and `Dashboard.controls`).

    Attributes:
        controls: {name: widget} of the settings.
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
        from hybridlib.history import History

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
        self._status = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bundle_key: tuple | None = None
        self._draw_lock = threading.Lock()
        # per run, reset by _run: the run's config, divergence message, curves, step counts
        self._config: RunConfig | None = None
        self._diverged: str | None = None
        self._curves: dict[str, list[float]] = {}
        self._chance_loss = math.log(10)
        self._steps = self._epochs = 1
        self._last_ui = self._last_plot = 0.0
        self._build()
        self.set(**{**QUICK, **values})
        self._say("Choose the settings and press Train.")

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        wide = {"description_width": "110px"}
        box = w.Layout(width="300px")
        c = {
            "model": w.Dropdown(options=MODEL_NAMES, description="model", style=wide, layout=box),
            "dataset": w.Dropdown(
                options=DASHBOARD_DATASETS, description="data set", style=wide, layout=box
            ),
            "image_size": w.Dropdown(
                options=IMAGE_SIZES, description="image size", style=wide, layout=box
            ),
            "recipe": w.Dropdown(
                options=tuple(RECIPES), description="recipe", style=wide, layout=box
            ),
            "lr": w.FloatLogSlider(
                value=1e-3,
                base=10,
                min=LR_EXPONENTS[0],
                max=LR_EXPONENTS[1],
                step=0.1,  # ten stops per factor of ten
                readout_format=".1e",
                continuous_update=False,
                description="learning rate",
                style=wide,
                layout=w.Layout(width="610px"),
            ),
            "batch_size": w.BoundedIntText(
                min=1, max=4096, description="batch size", style=wide, layout=box
            ),
            "epochs": w.BoundedIntText(
                min=1, max=1000, description="epochs", style=wide, layout=box
            ),
            "val_every": w.BoundedIntText(
                min=1, max=1000, description="validate every", style=wide, layout=box
            ),
            "augment": w.Checkbox(description="random flips (paper A)", indent=False),
            "seed": w.BoundedIntText(
                min=0, max=2**31 - 1, description="seed", style=wide, layout=box
            ),
            "limit": w.BoundedIntText(
                min=0, max=10**8, description="images/split", style=wide, layout=box
            ),
        }
        c["limit"].tooltip = "at most this many images per split; 0: all"
        c["val_every"].tooltip = "epochs between validation passes"
        for name, control in c.items():
            control.add_class(f"hybridlib-{name.replace('_', '-')}")
        self.controls: dict[str, w.Widget] = c

        self.train_button = w.Button(description="Train", button_style="success", icon="play")
        self.stop_button = w.Button(
            description="Stop", button_style="danger", icon="stop", disabled=True
        )
        self.train_button.add_class("hybridlib-train")
        self.stop_button.add_class("hybridlib-stop")
        self.train_button.on_click(lambda _button: self.train())
        self.stop_button.on_click(lambda _button: self.stop())
        self.progress = w.FloatProgress(
            value=0.0, min=0.0, max=1.0, description="0 %", layout=w.Layout(width="400px")
        )
        self.progress.add_class("hybridlib-progress")
        self.status_html = w.HTML()
        self.status_html.add_class("hybridlib-status")
        self.plot = w.Image(format="png", layout=w.Layout(display="none"))
        self.plot.add_class("hybridlib-plot")
        self.result_html = w.HTML()
        self.result_html.add_class("hybridlib-result")
        self.confusion = w.Image(format="png", layout=w.Layout(display="none"))
        self.confusion.add_class("hybridlib-confusion")
        self.runs_html = w.HTML()
        self.runs_html.add_class("hybridlib-runs")

        title = w.HTML(f"<b>hybridlib training dashboard</b> &nbsp; device: {self._device_text()}")
        self.widget = w.VBox(
            [
                title,
                w.HBox([c["model"], c["dataset"]]),
                w.HBox([c["image_size"], c["recipe"]]),
                c["lr"],
                w.HBox([c["batch_size"], c["epochs"]]),
                w.HBox([c["val_every"], c["seed"]]),
                w.HBox([c["limit"], c["augment"]]),
                w.HBox([self.train_button, self.stop_button, self.progress]),
                self.status_html,
                self.plot,
                w.HBox([self.confusion, self.result_html]),
                self.runs_html,
            ]
        )
        self.widget.add_class("hybridlib-dashboard")

    def _device_text(self) -> str:
        from hybridlib import runtime

        try:
            return escape(runtime.describe_device(runtime.resolve_device(self.device)))
        except HybridError as error:
            return f"<span style='color:{_STATUS_COLOURS['error']}'>{escape(str(error))}</span>"

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # ---------------------------------------------------------------- settings
    def set(self, **values: Any) -> Dashboard:
        """Set widgets by name, as a student would: `dashboard.set(lr=1e-2, epochs=1)`.

        Raises:
            HybridError: for an unknown setting or a value a widget cannot take.
        """
        for name, value in values.items():
            if name not in self.controls:
                raise choices_error("dashboard setting", name, self.controls)
            control = self.controls[name]
            if name == "limit" and value is None:
                value = 0
            options = getattr(control, "options", None)
            if options is not None and value not in options:
                raise choices_error(name, value, options)
            low, high = getattr(control, "min", None), getattr(control, "max", None)
            if name == "lr":
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
        v = self.values
        return RunConfig.from_recipe(
            v["recipe"],
            model=v["model"],
            dataset=v["dataset"],
            image_size=int(v["image_size"]),
            lr=float(v["lr"]),
            batch_size=int(v["batch_size"]),
            epochs=int(v["epochs"]),
            val_every=int(v["val_every"]),
            augment=bool(v["augment"]),
            seed=int(v["seed"]),
            limit=int(v["limit"]) or None,
            device=self.device,
            data_root=self.data_root,
            progress=False,  # the dashboard is the progress display
        )

    @staticmethod
    def check(config: RunConfig) -> None:
        """Raise `HybridError` for settings that do not fit together, before any data loads."""
        from hybridlib.models import build_model
        from hybridlib.train import input_crop

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
        from hybridlib.engine.trainer import load_bundle

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
        from hybridlib import runtime
        from hybridlib.engine.trainer import DivergedError, fit
        from hybridlib.history import History
        from hybridlib.models import build_model

        started = time.perf_counter()
        self._config = config
        self.events, self.result, self._diverged = [], None, None
        self._history = History()
        self._curves = {"x": [], "loss": [], "acc": [], "vx": [], "vloss": [], "vacc": []}
        self._last_ui = self._last_plot = 0.0
        self._steps, self._epochs = 1, config.epochs
        status, message = "error", ""
        try:
            device = runtime.resolve_device(config.device)
            self._say(f"Loading {config.dataset} ...")
            bundle = self._bundle_for(config)
            self._chance_loss = math.log(bundle.num_classes)
            runtime.seed_everything(config.seed)  # the weights come from the seed
            self.model = build_model(
                config.model,
                bundle.num_classes,
                batch_norm=config.batch_norm,
                dropout=config.dropout,
            )
            self._say(
                f"Training {config.model} on {config.dataset} "
                f"({bundle.sizes['train']:,} training images) on {device} ..."
            )
            history = fit(
                self.model,
                bundle,
                config,
                callback=self._on_event,
                stop=self._stop,
                device=device,
            )
            self._history = history
            if self._diverged:
                status, message = "diverged", self._diverged
            elif history.stopped_at is not None:
                epoch, step = history.stopped_at
                status = "stopped"
                message = (
                    f"Stopped at epoch {epoch}, step {step}; the model and the "
                    f"{len(history)} finished epoch(s) are kept (dashboard.model, "
                    "dashboard.history). Press Train for a new run."
                )
            else:
                self.result = self._test(config, bundle, device)
                status = "complete"
                message = (
                    f"Done: test accuracy {self.result.accuracy:.1%} on "
                    f"{self.result.num_samples:,} images in {time.perf_counter() - started:.1f} s."
                )
        except DivergedError as error:
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

    def _test(self, config: RunConfig, bundle, device):
        from hybridlib import runtime
        from hybridlib.train import evaluate, input_crop

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

    def _on_event(self, event: dict[str, Any]) -> None:
        """`fit`'s callback, in the training thread: record, check, redraw (throttled)."""
        self.events.append(event)
        kind = event["event"]
        if kind == "start":
            self._steps = max(1, event["steps"])
            self._epochs = event["epochs"]
        elif kind == "step":
            x = event["epoch"] - 1 + event["step"] / event["steps"]
            self._curves["x"].append(x)
            self._curves["loss"].append(event["loss"])
            self._curves["acc"].append(event["acc"] * 100)
            self._check_divergence(event)
        elif kind == "epoch":
            self._history.append(event)
            if not math.isnan(event["val_acc"]):
                self._curves["vx"].append(event["epoch"])
                self._curves["vloss"].append(event["val_loss"])
                self._curves["vacc"].append(event["val_acc"] * 100)
        now = time.perf_counter()
        force = kind != "step"
        if force or now - self._last_ui >= UI_INTERVAL_S:
            self._last_ui = now
            self._show_progress(event)
        if self.live_plot and (force or now - self._last_plot >= PLOT_INTERVAL_S):
            self._draw_curves()
            self._last_plot = time.perf_counter()  # after drawing: drawing takes time too

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

    def _show_progress(self, event: dict[str, Any]) -> None:
        epoch = event.get("epoch", 1)
        step = event.get("step", self._steps if event["event"] in ("epoch", "end") else 0)
        total = self._epochs * self._steps
        if event["event"] == "end":
            done = len(self._history) * self._steps
        else:
            done = (epoch - 1) * self._steps + step
        self.progress.value = min(1.0, done / total)
        self.progress.description = f"{self.progress.value:.0%}"
        if event["event"] == "step" and not self._stop.is_set():
            self._say(
                f"Epoch {epoch}/{self._epochs}, step {step}/{self._steps}: "
                f"loss {event['loss']:.4f}, accuracy {event['acc']:.1%}"
            )

    def _draw_curves(self) -> None:
        curves = self._curves
        fig = Figure(figsize=(9.0, 3.0), layout="constrained")
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
            self.plot.value = _png(fig)
            self.plot.layout.display = None

    def _record(self, config: RunConfig, status: str, seconds: float) -> None:
        last = self._history.last or {}
        validated = self._history.last_validated() or {}
        row = {name: getattr(config, name) for name in RUN_COLUMNS if hasattr(config, name)}
        row.update(
            limit=config.limit or 0,
            status=status,
            epochs_done=len(self._history),
            train_loss=last.get("train_loss", math.nan),
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
            from hybridlib.plots import plot_confusion

            result, bundle = self.result, self.bundle
            fig = plot_confusion(result.confusion, list(bundle.classes), title="test split")
            with self._draw_lock:
                self.confusion.value = _png(fig, dpi=72)
                self.confusion.layout.display = None
            self.progress.bar_style = "success"
            self.result_html.value = (
                f"<div style='padding-left:1em'><h3>test accuracy {result.accuracy:.1%}</h3>"
                f"{config.model} on {config.dataset}, {result.num_samples:,} test images, "
                f"{len(self._history)} epoch(s).<br>Random guessing: "
                f"{1 / bundle.num_classes:.1%}.</div>"
            )
        else:
            self.confusion.layout.display = "none"
            self.progress.bar_style = "warning" if status == "stopped" else "danger"
            self.result_html.value = (
                f"<div style='padding-left:1em'><h3>no test accuracy</h3>run {status}</div>"
            )
        self.runs_html.value = self._runs_table_html()

    def _runs_table_html(self) -> str:
        frame = self.runs
        if not len(frame):
            return ""
        shown = frame.copy()
        shown["lr"] = shown["lr"].map("{:.1e}".format)
        for column in ("val_acc", "test_acc"):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.1%}")
        shown["train_loss"] = shown["train_loss"].map(lambda v: "" if pd.isna(v) else f"{v:.3g}")
        shown["limit"] = shown["limit"].map(lambda v: v or "all")
        shown = shown.rename(columns=_SHORT_HEADERS)
        table = shown.reset_index().to_html(
            index=False, border=0, escape=True, classes="hybridlib-runs-table"
        )
        return (
            f"<style>{_TABLE_CSS}</style>"
            "<b>Runs of this session</b> (the latest in bold; change one setting at a time "
            "to see its effect)"
            f"<div style='overflow-x:auto'>{table}</div>"
        )
