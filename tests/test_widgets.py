"""The tuning dashboard, driven from Python: set widgets, click, train, stop, read the state.

Every run trains paper A's CNN on the embedded digits with a few hundred images, a
second or two on a CPU. The browser version of these checks is tests/test_browser.py.
"""

from __future__ import annotations

import math
import os
import time

import pytest
import torch

from hybridlib import runtime
from hybridlib.config import RunConfig
from hybridlib.errors import HybridError
from hybridlib.models import MODEL_NAMES
from hybridlib.tools.widgets import (
    CONTROLS,
    DASHBOARD_DATASETS,
    QUICK,
    QUICK_CHANGES,
    RUN_COLUMNS,
    Dashboard,
    slow_epoch_hint,
    thread_hint,
)

TINY = {"limit": 100, "epochs": 1, "batch_size": 16}
PNG = b"\x89PNG"


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a CPU shared with other work, two threads spin and crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def dashboard(tmp_env):
    board = Dashboard(device="cpu", out_dir=tmp_env / "out", **TINY)
    yield board
    board.stop()
    board.wait(60)


def assert_usable(board: Dashboard) -> None:
    """Not running, Train enabled, Stop disabled, every setting editable, no traceback."""
    assert not board.running
    assert not board.train_button.disabled
    assert board.stop_button.disabled
    assert not any(control.disabled for control in board.controls.values())
    assert "Traceback" not in board.status
    assert "Traceback" not in board.status_html.value


def test_builds_with_the_quick_settings(dashboard):
    assert set(dashboard.controls) == set(QUICK)
    assert dashboard.values == {**QUICK, **TINY}
    config = dashboard.config()
    assert (config.model, config.dataset, config.limit, config.epochs) == ("cnn", "digits", 100, 1)
    assert config.device == "cpu" and config.progress is False
    assert dashboard.controls["lr"].base ** dashboard.controls["lr"].min == pytest.approx(1e-5)
    assert dashboard.runs.empty and list(dashboard.runs.columns) == RUN_COLUMNS
    assert "press Train" in dashboard.status
    assert_usable(dashboard)
    bundle = dashboard._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle


@pytest.mark.parametrize(
    "values, message",
    [
        ({"learning_rate": 1e-3}, "unknown dashboard setting 'learning_rate'"),
        ({"model": "cnnn"}, "unknown model 'cnnn'; choose one of: cnn, cnn_lstm"),
        ({"dataset": "folder"}, "unknown dataset 'folder'"),
        ({"lr": 100.0}, "lr must be between 1e-05 and 10"),
        ({"epochs": 0}, "epochs must be between 1 and"),
    ],
)
def test_set_rejects_bad_values_with_the_choices(dashboard, values, message):
    with pytest.raises(HybridError, match=message.replace("(", r"\(")):
        dashboard.set(**values)


def test_train_fills_history_plot_results_and_runs_table(dashboard, tmp_env):
    row = dashboard.set(epochs=2).train(block=True, timeout=120)
    assert row is not None and row["status"] == "complete", dashboard.status
    assert dashboard.status.startswith("Done: test accuracy")
    history = dashboard.history.to_frame()
    assert list(history["epoch"]) == [1, 2]
    assert history["val_acc"].notna().all()  # val_every=1
    assert 0.0 <= row["test_acc"] <= 1.0
    assert row["test_acc"] == pytest.approx(dashboard.result.accuracy)
    assert dashboard.result.confusion.shape == (10, 10)
    assert int(dashboard.result.confusion.sum()) == dashboard.bundle.sizes["test"]
    events = [event["event"] for event in dashboard.events]
    assert events[0] == "start" and events[-1] == "end" and events.count("epoch") == 2
    assert bytes(dashboard.plot.value).startswith(PNG) and dashboard.plot.layout.display is None
    assert bytes(dashboard.confusion.value).startswith(PNG)
    assert "test accuracy" in dashboard.result_html.value
    assert dashboard.progress.value == pytest.approx(1.0)
    assert "<table" in dashboard.runs_html.value
    assert_usable(dashboard)

    # The Train button is the same as train(); the table gains a row per run.
    dashboard.set(seed=1, augment=False)
    dashboard.train_button.click()
    assert dashboard.wait(120)
    runs = dashboard.runs
    assert list(runs.index) == [1, 2]
    assert list(runs["seed"]) == [0, 1] and list(runs["augment"]) == [True, False]
    assert list(runs["status"]) == ["complete", "complete"]
    assert (tmp_env / "out" / "dashboard" / "runs.csv").is_file()


def test_stop_ends_the_run_and_keeps_model_and_history(dashboard):
    dashboard.set(epochs=200, limit=300)
    assert dashboard.train() is None  # returns at once; the run goes on in its thread
    deadline = time.monotonic() + 60
    while not any(e["event"] == "epoch" for e in dashboard.events):
        assert dashboard.running and time.monotonic() < deadline, dashboard.status
        time.sleep(0.05)
    assert dashboard.train_button.disabled and not dashboard.stop_button.disabled
    assert dashboard.controls["lr"].disabled
    dashboard.train()  # a second Train while running only says so
    assert "in progress" in dashboard.status
    dashboard.stop()
    assert dashboard.wait(60)
    assert dashboard.status.startswith("Stopped at epoch"), dashboard.status
    history = dashboard.history
    assert history.stopped_at is not None and 1 <= len(history) < 200
    assert dashboard.model is not None and dashboard.result is None
    row = dashboard.runs.iloc[-1]
    assert row["status"] == "stopped" and row["epochs_done"] == len(history)
    assert 0.0 <= row["val_acc"] <= 1.0 and math.isfinite(row["train_loss"])  # val_every=1
    assert row["time_s"] > 0
    assert_bar_where_it_stopped(dashboard)
    assert "stopped" in dashboard.runs_html.value
    assert_usable(dashboard)
    dashboard.stop()  # nothing to stop: a message, no error
    assert "Nothing to stop" in dashboard.status


def assert_bar_where_it_stopped(board: Dashboard) -> None:
    """The progress bar shows the steps the run reached, not 0 % or 100 %."""
    steps = next(e["steps"] for e in board.events if e["event"] == "start")
    last = [e for e in board.events if e["event"] == "step"][-1]
    done = (last["epoch"] - 1) * steps + last["step"]
    assert board.progress.value == pytest.approx(done / (board.runs.iloc[-1]["epochs"] * steps))
    assert 0.0 < board.progress.value < 1.0
    assert board.progress.description == f"{board.progress.value:.0%}"
    assert board.progress.bar_style == "warning"


def test_stop_inside_the_first_epoch_keeps_the_bar_and_the_numbers_reached(dashboard):
    dashboard.set(epochs=50, limit=600)
    dashboard.train()
    deadline = time.monotonic() + 60
    while not any(e["event"] == "step" for e in dashboard.events):
        assert dashboard.running and time.monotonic() < deadline, dashboard.status
        time.sleep(0.01)
    dashboard.stop()
    assert dashboard.wait(60)
    row = dashboard.runs.iloc[-1]
    assert row["status"] == "stopped" and row["epochs_done"] == len(dashboard.history)
    assert math.isfinite(row["train_loss"]) and row["time_s"] > 0  # the last step's loss
    assert_bar_where_it_stopped(dashboard)
    table = dashboard.runs_html.value
    assert f"{row['train_loss']:.3g}" in table and f"{row['epochs_done']}/50" in table
    assert_usable(dashboard)


def test_a_new_run_clears_the_last_results_at_its_start(dashboard):
    assert dashboard.train(block=True, timeout=120)["status"] == "complete", dashboard.status
    assert dashboard.confusion.layout.display is None
    assert "test accuracy" in dashboard.result_html.value
    dashboard.set(epochs=200).train()  # returns at once: what shows while it runs?
    assert dashboard.result is None
    assert dashboard.confusion.layout.display == "none" and not dashboard.confusion.value
    assert "test accuracy" not in dashboard.result_html.value
    assert dashboard.plot.layout.display == "none" or dashboard.events  # or already redrawn
    assert dashboard.progress.value < 1.0
    dashboard.stop()
    assert dashboard.wait(60)


def test_the_display_bundle_has_a_text_fallback(dashboard):
    bundle = dashboard._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle  # JupyterLab shows the widget
    for mime in ("text/plain", "text/markdown"):  # a saved notebook, GitHub, nbconvert
        assert "run this cell to show it" in bundle[mime]
        assert "model not found" in bundle[mime]
        assert "VBox(" not in bundle[mime]


def test_controls_come_from_the_registries_and_the_config_defaults(dashboard):
    assert dashboard.controls["model"].options == MODEL_NAMES
    assert dashboard.controls["dataset"].options == DASHBOARD_DATASETS
    defaults = RunConfig()
    for control in CONTROLS:
        expected = QUICK_CHANGES.get(control.field, getattr(defaults, control.field))
        assert QUICK[control.field] == expected, control.field
        assert dashboard.controls[control.field].tooltip == control.help
    assert dashboard.set(limit=None).values["limit"] == 0 and dashboard.config().limit is None


def test_thread_hints_say_what_to_do():
    assert thread_hint(2, 4, 3) == ""  # the threads fit the free cores
    hint = thread_hint(4, 4, 1)
    assert "torch runs 4 threads" in hint and "1 of the 4 CPU cores" in hint
    assert 'os.environ["HYBRIDLIB_THREADS"] = "1"' in hint and "torch.set_num_threads(1)" in hint
    assert slow_epoch_hint(1.0, 0.1, 4, 4) == ""  # too short to judge
    assert slow_epoch_hint(10.0, 19.0, 2, 2) == ""  # 95 % of two cores: not slowed
    slow = slow_epoch_hint(10.0, 5.0, 2, 2)  # a quarter of what two threads asked for
    assert slow.startswith("The first epoch took 10.0 s with 25% of the CPU time")
    assert "HYBRIDLIB_THREADS" in slow and "torch.set_num_threads(1)" in slow
    one = slow_epoch_hint(10.0, 3.0, 1, 2)  # one thread cannot go lower: say why it is slow
    assert "30% of the CPU time of a core" in one and "HYBRIDLIB_THREADS" not in one


def test_device_line_shows_threads_and_cores_and_the_hint_is_followed(tmp_env, monkeypatch):
    torch.set_num_threads(4)  # the fixture sets it back
    monkeypatch.setattr(runtime, "available_cores", lambda: 4)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 3.0, 3.0))  # other work: 3 cores
    board = Dashboard(device="cpu", **TINY)
    assert (
        "4 threads" in board.device_html.value
        and "CPU cores: 4, load 3.0" in board.device_html.value
    )
    assert 'HYBRIDLIB_THREADS"] = "1"' in board.hint and "torch runs 4 threads" in board.hint
    assert "HYBRIDLIB_THREADS" in board.hint_html.value
    monkeypatch.setenv("HYBRIDLIB_THREADS", "1")  # as the hint says; read at Train
    assert board.train(block=True, timeout=120)["status"] == "complete", board.status
    # The device line is redrawn by the training thread, with the threads it trained with.
    assert "1 threads" in board.device_html.value, board.device_html.value
    assert "HYBRIDLIB_THREADS" not in board.hint
    assert_usable(board)


def test_model_needing_larger_images_is_a_readable_message(dashboard):
    dashboard.set(model="cnn", image_size=24)
    assert dashboard.train(block=True) is None
    assert "takes 3x32x32 images but the data set gives 24x24" in dashboard.status
    assert "use image_size=32" in dashboard.status
    assert dashboard.runs.empty
    assert_usable(dashboard)
    # Paper B's models take 24x24 input: on 24x24 data (or 32x32, cropped) they train.
    row = dashboard.set(model="yu_cnn").train(block=True, timeout=120)
    assert row["status"] == "complete", dashboard.status


def test_missing_data_set_is_a_readable_message(dashboard):
    dashboard.set(dataset="cifar10")
    dashboard.train(block=True, timeout=60)
    assert "cifar10 not found" in dashboard.status
    assert "download" in dashboard.status
    assert dashboard.runs.empty
    assert_usable(dashboard)


def test_diverging_learning_rate_is_reported_and_the_dashboard_recovers(dashboard):
    row = dashboard.set(lr=10.0, limit=200).train(block=True, timeout=120)
    assert row["status"] == "diverged"
    assert "diverged" in dashboard.status and "too high" in dashboard.status
    assert "no test accuracy" in dashboard.result_html.value
    assert dashboard.progress.bar_style == "danger"
    assert_usable(dashboard)
    row = dashboard.set(lr=5e-4).train(block=True, timeout=120)
    assert row["status"] == "complete"
    assert list(dashboard.runs["status"]) == ["diverged", "complete"]


def test_an_unexpected_error_is_one_line_and_kept_for_reports(dashboard, monkeypatch):
    import hybridlib.engine.trainer

    def broken_fit(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(hybridlib.engine.trainer, "fit", broken_fit)
    dashboard.train(block=True, timeout=60)
    assert dashboard.status.startswith("Unexpected RuntimeError: boom")
    assert "broken_fit" in dashboard.last_traceback
    assert_usable(dashboard)
