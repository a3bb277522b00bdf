"""Faults around a run directory, tried as a user would meet them.

Each case checks the exit status, that the message is one line without a traceback
and names the fix, and that nothing is lost: the previous checkpoint survives, a
refused command changes nothing, a resumed run equals an uninterrupted one.
Training uses the embedded digits (48-64 images, 1-3 epochs).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from hybridlib.config import RunConfig
from hybridlib.engine import rundir, trainer
from hybridlib.tools import cli

REPO = Path(__file__).resolve().parents[1]
QUICK = ["--dataset", "digits", "--limit", "48", "--lr", "1e-3", "--device", "cpu"]


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    """Exit status and stderr of `python -m hybridlib ARGV`, run in this process."""
    status = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return status, err


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err  # one line, whatever else was printed
    return lines[0]


@pytest.fixture()
def finished_run(tmp_path, capsys):
    """A finished 2-epoch cnn run on the digits, validated every epoch."""
    run_dir = tmp_path / "run"
    argv = ["train", *QUICK, "--epochs", "2", "--val-every", "1", "--out", run_dir]
    assert run_cli(capsys, *argv)[0] == 0
    return run_dir


# --------------------------------------------------------------- one writer per folder


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    """Another process that holds `run_dir`'s lock until it is killed."""
    script = (
        "import sys, time; from pathlib import Path; from hybridlib.engine import rundir; "
        "rundir.lock_run_dir(Path(sys.argv[1])); print('locked', flush=True); time.sleep(600)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_writer_is_refused_and_a_dead_ones_lock_is_taken_over(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = _hold_lock(run_dir)
    try:
        status, err = run_cli(capsys, "train", *QUICK, "--epochs", "1", "--out", run_dir)
        assert status == 2
        line = error_line(err)
        assert f"is in use by process {holder.pid}" in line and "another --out" in line
        assert not (run_dir / "config.json").exists()  # the refused run wrote nothing
    finally:
        holder.kill()  # as kill -9: the lock goes with the process
        holder.wait()
    status, _ = run_cli(capsys, "train", *QUICK, "--epochs", "1", "--out", run_dir)
    assert status == 0
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "complete"


def test_resume_is_refused_while_the_run_trains(finished_run, capsys):
    holder = _hold_lock(finished_run)
    try:
        before = (finished_run / "summary.json").read_bytes()
        status, err = run_cli(capsys, "train", "--out", finished_run, "--resume")
        assert status == 2 and "is in use by process" in error_line(err)
        assert (finished_run / "summary.json").read_bytes() == before
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_is_released_when_a_run_ends(finished_run):
    rundir.lock_run_dir(finished_run)  # this process could take it: nobody holds it
    rundir.unlock_run_dir(finished_run)


# --------------------------------------------------------------- what a resume may change


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--model", "cnn_lstm"], ["--model (cnn -> cnn_lstm)"]),
        (["--batch-size", "8", "--seed", "3"], ["--batch-size (16 -> 8)", "--seed (0 -> 3)"]),
        (["--recipe", "improved"], ["--recipe (paper -> improved)"]),
        (["--no-augment"], ["--augment (True -> False)"]),
    ],
)
def test_resume_refuses_a_changed_setting(finished_run, capsys, extra, named):
    before = (finished_run / "config.json").read_text()
    status, err = run_cli(capsys, "train", "--out", finished_run, "--resume", *extra)
    line = error_line(err)
    assert status == 2 and "only --epochs (to extend it) and --lr may change" in line
    for text in named:
        assert text in line
    assert (finished_run / "config.json").read_text() == before


def test_resume_refuses_the_default_value_written_out(tmp_path, capsys):
    """`--model cnn` is the parser's default, but written on the command line it is asked for."""
    run_dir = tmp_path / "run"
    assert run_cli(capsys, "train", *QUICK, "--model", "cnn_lstm", "--epochs", "1",
                   "--out", run_dir)[0] == 0  # fmt: skip
    status, err = run_cli(capsys, "train", "--out", run_dir, "--resume", "--model", "cnn")
    assert status == 2 and "--model (cnn_lstm -> cnn)" in error_line(err)
    # the same settings written out again are no change
    assert run_cli(capsys, "train", "--out", run_dir, "--resume", "--model", "cnn_lstm")[0] == 0


def test_more_epochs_extend_a_finished_run_as_if_it_had_never_stopped(finished_run, capsys):
    longer = finished_run.parent / "longer"
    argv = [*QUICK, "--val-every", "1"]
    assert run_cli(capsys, "train", *argv, "--epochs", "3", "--out", longer)[0] == 0
    assert run_cli(capsys, "train", "--out", finished_run, "--resume", "--epochs", "3")[0] == 0
    summary = json.loads((finished_run / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["epochs_done"] == 3
    assert RunConfig.from_json(finished_run / "config.json").epochs == 3
    columns = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr"]
    extended = pd.read_csv(finished_run / "metrics.csv")[columns]
    pd.testing.assert_frame_equal(extended, pd.read_csv(longer / "metrics.csv")[columns])

    status, err = run_cli(capsys, "train", "--out", finished_run, "--resume", "--epochs", "2")
    assert status == 2 and "fewer than the 3 epochs" in error_line(err)


def test_a_new_lr_applies_from_the_resumed_epoch(tmp_path, capsys):
    run_dir = tmp_path / "run"
    config = RunConfig(
        dataset="digits", limit=48, lr=1e-3, epochs=2, device="cpu", out=str(run_dir),
        progress=False,
    )  # fmt: skip

    def interrupt(event):
        if event["event"] == "epoch":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trainer.run_training(config, callback=interrupt)
    status, _ = run_cli(capsys, "train", "--out", run_dir, "--resume", "--lr", "1e-4")
    assert status == 0
    assert pd.read_csv(run_dir / "metrics.csv")["lr"].tolist() == [1e-3, 1e-4]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["lr"] == 1e-4
    # the epochs trained before the resume count in the wall time too
    assert summary["wall_time_s"] >= summary["train_time_s"]


def test_a_scheduled_run_cannot_change_its_length(tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["train", *QUICK, "--recipe", "improved", "--epochs", "1", "--out", run_dir]
    assert run_cli(capsys, *argv)[0] == 0
    status, err = run_cli(capsys, "train", "--out", run_dir, "--resume", "--epochs", "2")
    assert status == 2 and "cosine learning-rate schedule was laid out for 1 epochs" in err


def test_the_divergence_hint_suggests_a_rate_that_trains(tmp_path, capsys):
    assert trainer.suggest_lr(1e9) == 1e-3 and trainer.suggest_lr(1e-2) == 1e-3
    assert trainer.suggest_lr(1e-3) == pytest.approx(1e-4)
    status, err = run_cli(capsys, "train", *QUICK, "--lr", "1e9", "--epochs", "1",
                          "--out", tmp_path / "run")  # fmt: skip
    assert status == 1 and "e.g. --lr 0.001" in error_line(err)


# --------------------------------------------------------------- a full disk


def test_a_full_disk_keeps_the_last_checkpoint_and_says_what_it_needs(
    tmp_path, capsys, monkeypatch
):
    run_dir = tmp_path / "run"
    real_open = open
    writes = []

    def full_disk_open(path, mode="r", *args, **kwargs):
        if str(path).endswith("checkpoint.pt.tmp"):
            writes.append(path)
            if len(writes) == 2:  # the disk fills up during epoch 2's checkpoint
                handle = real_open(path, mode, *args, **kwargs)

                def no_space(data):
                    raise OSError(errno.ENOSPC, "No space left on device")

                handle.write = no_space
                return handle
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(rundir, "open", full_disk_open, raising=False)
    status, err = run_cli(capsys, "train", *QUICK, "--epochs", "3", "--out", run_dir)
    line = error_line(err)
    assert status == 1  # a runtime fault, not a usage mistake
    assert f"no space left in {run_dir} to write checkpoint.pt" in line
    assert " MB, " in line and "are free" in line and "--resume" in line
    assert not list(run_dir.glob("*.tmp"))  # no partial file
    assert rundir.load_checkpoint(run_dir / "checkpoint.pt")["epoch"] == 1  # intact

    monkeypatch.undo()
    assert run_cli(capsys, "train", "--out", run_dir, "--resume")[0] == 0
    assert json.loads((run_dir / "summary.json").read_text())["epochs_done"] == 3


# --------------------------------------------------------------- path mistakes and leftovers


def test_out_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    status, err = run_cli(capsys, "train", *QUICK, "--epochs", "1", "--out", target)
    assert status == 2 and "(from --out) is, or lies under, a file" in error_line(err)
    assert target.read_text() == "mine"


def test_a_run_that_fails_before_training_leaves_no_folder(tmp_path, capsys):
    run_dir = tmp_path / "run"
    status, err = run_cli(capsys, "train", "--dataset", "cifar10", "--data-root",
                          tmp_path / "empty", "--out", run_dir)  # fmt: skip
    assert status == 2 and "cifar10 not found" in error_line(err)
    assert not run_dir.exists()


def test_a_checkpoint_from_another_model(finished_run, capsys):
    config = json.loads((finished_run / "config.json").read_text())
    (finished_run / "config.json").write_text(json.dumps({**config, "model": "cnn_lstm"}))
    status, err = run_cli(capsys, "evaluate", finished_run, "--device", "cpu")
    line = error_line(err)
    assert status == 2 and "model='cnn'" in line and "model='cnn_lstm'" in line


def test_one_broken_summary_does_not_block_a_table(tmp_path, capsys):
    grid = tmp_path / "grid"
    committed = REPO / "results" / "paper-a" / "runs"
    for name in ("caltech101-cnn-s0", "caltech101-cnn-s1", "caltech101-cnn_lstm-s0"):
        shutil.copytree(committed / name, grid / name)
    broken = grid / "caltech101-cnn-s1" / "summary.json"
    broken.write_text(broken.read_text()[:100])  # truncated mid-write
    status = cli.main(["results", str(grid), "--table", "paper-a"])
    captured = capsys.readouterr()
    assert status == 0 and "Traceback" not in captured.err
    assert f"skipping {broken.parent}" in captured.err
    assert "CNN + LSTM" in captured.out and "(n=1)" in captured.out


# --------------------------------------------------------------- a signal mid-run


def test_kill_9_mid_run_then_resume_takes_the_lock_over(tmp_path):
    """A run killed with SIGKILL leaves its lock file; the resume takes the lock over."""
    run_dir = tmp_path / "run"
    argv = [*QUICK, "--epochs", "200", "--limit", "200", "--out", str(run_dir)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "hybridlib", "train", *argv], env=env, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 600
        while not (run_dir / "checkpoint.pt").is_file():
            assert time.monotonic() < deadline and process.poll() is None, "no epoch finished"
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()
    assert (run_dir / rundir.LOCK_FILE).is_file()
    done = subprocess.run(
        [sys.executable, "-m", "hybridlib", "train", "--out", str(run_dir), "--resume",
         "--epochs", "8"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert json.loads((run_dir / "summary.json").read_text())["epochs_done"] == 8
