"""The tuning dashboard, driven from Python: set widgets, click, train, stop, read the state.

Every run trains paper A's CNN on the embedded digits with a few hundred images, a
second or two on a CPU. The browser version of these checks is tests/test_browser.py.
"""

from __future__ import annotations

import time

import pytest
import torch

from hybridlib.errors import HybridError
from hybridlib.tools.widgets import QUICK, RUN_COLUMNS, Dashboard

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
    assert_usable(dashboard)
    dashboard.stop()  # nothing to stop: a message, no error
    assert "Nothing to stop" in dashboard.status


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
