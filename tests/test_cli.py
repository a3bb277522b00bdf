"""The `train`, `evaluate`, `reproduce` and `results` commands: exit codes, messages, files."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from hybridlib.models import MODEL_NAMES
from hybridlib.tools import cli

QUICK = ["--dataset", "digits", "--epochs", "1", "--limit", "48"]


@pytest.fixture(autouse=True)
def quiet(tmp_env, monkeypatch):
    """Runs and data go to a temporary folder; no progress bars in the test log."""
    monkeypatch.setenv("TQDM_DISABLE", "1")
    return tmp_env


def fails(capsys, *argv: str) -> str:
    """Run the command line; it must fail with status 2 and a one-line message.

    Mistakes argparse catches (a negative --lr) come after its usage lines; every
    other message is the only line on stderr.
    """
    assert cli.main(list(argv)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-1].startswith(f"hybridlib {argv[0]}: error: "), err
    assert len(lines) == 1 or lines[0].startswith("usage: hybridlib"), err
    return lines[-1]


def test_unknown_model_lists_the_valid_ones(capsys):
    message = fails(capsys, "train", "--model", "cnnn")
    assert message.startswith("hybridlib train: error: unknown model 'cnnn'; choose one of:")
    for name in MODEL_NAMES:
        assert name in message


def test_unknown_dataset_lists_the_valid_ones(capsys):
    message = fails(capsys, "train", "--dataset", "imagenet")
    assert "unknown dataset 'imagenet'; choose one of: cifar10, caltech101" in message


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--lr", "-1"], "must be a positive finite number"),
        (["train", "--lr", "0"], "must be a positive finite number"),
        (["train", "--batch-size", "0"], "must be at least 1"),
        (["train", "--seed", "-3"], "seed must be at least 0"),
        (["train", "--device", "tpu"], "unknown device 'tpu'"),
        (["train", "--resume"], "--resume needs --out RUN_DIR"),
        (["reproduce", "--table", "paper-a", "--datasets", "mnist"], "unknown dataset 'mnist'"),
        (["reproduce", "--table", "paper-b", "--models", "vgg"], "unknown model 'vgg'"),
        (["evaluate", "no-such-run"], "run directory 'no-such-run' does not exist"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(capsys, argv, expected):
    assert expected in fails(capsys, *argv)


def test_resume_needs_an_existing_run(capsys, tmp_path):
    message = fails(capsys, "train", "--resume", "--out", str(tmp_path / "nothing"))
    assert "nothing to resume" in message


def test_entry_point_reports_errors_without_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "hybridlib", "train", "--model", "resnet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "unknown model 'resnet'" in result.stderr and "Traceback" not in result.stderr


def test_sigterm_interrupts_a_run_as_ctrl_c_does(tmp_path):
    import signal
    import time

    run_dir = tmp_path / "run"
    # 48 images: an epoch takes a moment even on a busy machine; start-up may take long
    argv = ["--dataset", "digits", "--limit", "48", "--epochs", "100000", "--out", str(run_dir)]
    process = subprocess.Popen(
        [sys.executable, "-m", "hybridlib", "train", *argv],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 600
        while not (run_dir / "checkpoint.pt").is_file():  # the first epoch is saved
            assert time.monotonic() < deadline and process.poll() is None, "no epoch finished"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:  # never leave the run training
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 143 and "Traceback" not in err, err  # 128 + SIGTERM
    assert f"continue with: python -m hybridlib train --out {run_dir} --resume" in err
    assert err.strip().endswith("hybridlib train: terminated"), err
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"


def test_train_evaluate_results(capsys, tmp_path):
    run_dir = tmp_path / "run"
    # a paper B model on a paper A data set: it takes 24x24 crops of the 32x32 images
    argv = ["train", "--model", "yu_cnn", *QUICK, "--lr", "1e-3", "--out", str(run_dir)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "yu_cnn on digits: test accuracy" in out and str(run_dir) in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["lr"] == 1e-3

    # the same --out again needs --resume; with it, the finished run is just re-tested
    assert "already holds a run" in fails(capsys, *argv)
    assert cli.main([*argv, "--resume"]) == 0
    capsys.readouterr()

    assert cli.main(["evaluate", str(run_dir), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"test accuracy {summary['test_acc']:.2%}" in out and "precision" in out

    assert cli.main(["results", str(run_dir)]) == 0
    assert "yu_cnn" in capsys.readouterr().out


def test_train_improved_recipe(capsys, tmp_path):
    run_dir = tmp_path / "run"
    assert cli.main(["train", *QUICK, "--recipe", "improved", "--out", str(run_dir)]) == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["recipe"] == "improved" and config["batch_norm"]
    assert config["lr"] == 1e-3  # the recipe's rate replaces the paper's default
    run_dir = tmp_path / "explicit"
    argv = ["train", *QUICK, "--recipe", "improved", "--lr", "1e-4", "--out", str(run_dir)]
    assert cli.main(argv) == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["lr"] == 1e-4 and config["batch_norm"]  # a rate given on the command line wins


def test_reproduce_paper_a_on_digits_and_resume(capsys, tmp_path):
    grid = tmp_path / "grid"
    argv = ["reproduce", "--table", "paper-a", "--seeds", "1", *QUICK, "--out", str(grid)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "Paper A, Table I" in out and "CNN + LSTM + skip" in out
    for name in ("paper_a_table.csv", "paper_a_table.md", "paper_a_tests.csv", "runs.csv"):
        assert (grid / name).is_file(), name
    table = pd.read_csv(grid / "paper_a_table.csv", index_col=[0, 1])
    assert table.shape[0] == 4 and (table["n_seeds"] == 1).all()
    assert (grid / "figures" / "curves-digits.png").is_file()
    assert len(list((grid / "figures").glob("confusion-digits-*.png"))) == 4

    # a second call finds every run complete and trains nothing
    assert cli.main(argv) == 0
    assert "trained 0, already done 4" in capsys.readouterr().out

    # other settings in the same grid folder are refused, not mixed
    message = fails(capsys, *argv, "--no-augment")
    assert "holds a run with other settings (augment True -> False)" in message


def test_reproduce_shards_split_the_grid(capsys, tmp_path):
    grid = tmp_path / "grid"
    base = ["reproduce", "--table", "paper-b", "--seeds", "1", "--models", "yu_cnn", "row_gru"]
    base += [*QUICK, "--out", str(grid)]
    assert cli.main([*base, "--shard", "1/2"]) == 0
    assert sorted(p.name for p in grid.glob("digits-*")) == ["digits-row_gru-s0"]
    assert cli.main([*base, "--shard", "0/2"]) == 0
    assert sorted(p.name for p in grid.glob("digits-*")) == [
        "digits-row_gru-s0",
        "digits-yu_cnn-s0",
    ]
    capsys.readouterr()
    table = pd.read_csv(grid / "paper_b_table.csv", index_col=[0, 1])
    assert table.loc[("yu_cnn", "digits"), "n_seeds"] == 1
    assert table.loc[("row_gru", "digits"), "n_seeds"] == 1
