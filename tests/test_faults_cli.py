"""Mistakes and faults at the command line, tried as a user would make them.

Each case must end with one line on stderr (no traceback), the documented exit
status, a message that names the fix or an option that exists, and no file lost
or silently wrong.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import pytest

from hybridlib.tools import cli

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures import layouts  # noqa: E402

PACKAGE = Path(cli.__file__).resolve().parents[1]  # hybridlib/
QUICK = ["--dataset", "digits", "--epochs", "1", "--limit", "48"]

# Options of torchrun (not of hybridlib) that messages about distributed runs name.
TORCHRUN_OPTIONS = {"--nproc_per_node", "--master_addr", "--master_port"}


@pytest.fixture(autouse=True)
def quiet(tmp_env, monkeypatch):
    """Runs and data go to a temporary folder; no progress bars in the test log."""
    monkeypatch.setenv("TQDM_DISABLE", "1")
    return tmp_env


def fails(capsys, *argv: str, status: int = 2) -> str:
    """Run the command line; it must fail with `status` and one line on stderr."""
    assert cli.main(list(argv)) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith(f"hybridlib {argv[0]}: "), err
    assert len(lines) == 1, err
    return lines[-1]


def _subcommand_options() -> dict[str, set[str]]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {
        name: {flag for action in p._actions for flag in action.option_strings}
        for name, p in sub.choices.items()
    }


def _template(node: ast.AST) -> str:
    """The text of a message expression, with `{}` where a value is filled in."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_template(part) for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _template(node.left) + _template(node.right)
    return "{}"


def _package_messages() -> list[tuple[str, int, str]]:
    """(file, line, text) of every error raised with a message in the package."""
    messages = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", "")
            if name.endswith("Error") and node.args:
                messages.append(
                    (str(path.relative_to(PACKAGE)), node.lineno, _template(node.args[0]))
                )
    return messages


# ------------------------------------------------------------------ 7: options
def test_every_option_a_message_names_exists():
    options = set().union(*_subcommand_options().values())
    named = {}
    for file, line, text in _package_messages():
        for option in re.findall(r"--[a-z][a-z_-]*[a-z]", text):
            named.setdefault(option, f"{file}:{line}")
    assert "--folder" in named and "--resume" in named  # the scan finds the messages
    missing = {o: where for o, where in named.items() if o not in options | TORCHRUN_OPTIONS}
    assert not missing, f"messages name options no subcommand has: {missing}"


def test_every_config_field_a_message_names_is_an_option():
    """`folder=PATH` in a message: the command line must have `--folder` to set it."""
    from hybridlib.config import RunConfig

    fields = set(RunConfig.__dataclass_fields__)
    # no model takes images larger than the 32 px default: that message cannot come
    # from the command line, so it has no --image-size
    api_only = {"image_size"}
    options = set().union(*_subcommand_options().values())
    missing = {}
    for file, line, text in _package_messages():
        for field in re.findall(r"\b([a-z_]+)=", text):
            option = "--" + field.replace("_", "-")
            if field in fields - api_only and option not in options:
                missing.setdefault(option, f"{file}:{line}")
    assert not missing, f"messages name fields the command line cannot set: {missing}"


@pytest.mark.parametrize("command", ["train", "reproduce", "bench", "data"])
def test_folder_and_num_classes_are_options_where_data_is_built(command):
    assert {"--folder", "--num-classes"} <= _subcommand_options()[command]


def test_train_a_folder_data_set_from_the_command_line(capsys, tmp_path, monkeypatch):
    layouts.write_image_folder(tmp_path / "pets", {"cat": 10, "dog": 10, "emu": 10})
    monkeypatch.chdir(tmp_path)
    message = fails(capsys, "train", "--dataset", "folder", "--epochs", "1")
    assert "--folder PATH" in message  # the fix names an option that exists
    run_dir = tmp_path / "run"
    argv = ["train", "--dataset", "folder", "--folder", "pets", "--num-classes", "2"]
    assert cli.main([*argv, "--epochs", "1", "--out", str(run_dir)]) == 0
    capsys.readouterr()
    config = (run_dir / "config.json").read_text()
    # saved absolute, so `evaluate` finds the images from any folder
    assert f'"folder": "{tmp_path / "pets"}"' in config and '"num_classes": 2' in config
    monkeypatch.chdir(run_dir)
    assert cli.main(["evaluate", str(run_dir), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "cat" in out and "dog" in out and "emu" not in out


# ------------------------------------------------------- 9: course parameters
@pytest.fixture()
def executed_before(tmp_path):
    """A course output folder holding an executed notebook from an earlier run."""
    out = tmp_path / "course"
    (out / "notebooks").mkdir(parents=True)
    earlier = out / "notebooks" / "02_cnn.ipynb"
    earlier.write_text('{"cells": [], "note": "executed earlier"}\n')
    return out, earlier, earlier.read_bytes(), earlier.stat().st_mtime_ns


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("epoch", "3", "unknown notebook parameter 'epoch' (-p epoch ...); did you mean 'epochs'?"),
        ("epochs", "three", "parameter epochs is a int in 02_cnn.ipynb (default 5), got 'three'"),
        ("epochs", "2.5", "got 2.5; pass e.g. -p epochs 3"),
        ("dataset", "3", "parameter dataset is a str in 02_cnn.ipynb"),
    ],
)
def test_course_refuses_bad_parameters_before_writing(
    capsys, executed_before, name, value, expected
):
    out, earlier, content, mtime = executed_before
    message = fails(capsys, "course", "--only", "02", "--out", str(out), "-p", name, value)
    assert expected in message
    if name == "epoch":  # the list of what the notebook declares
        assert "declare: data_root, dataset, device, epochs, flip, limit, lr, out_dir" in message
    assert earlier.read_bytes() == content and earlier.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in out.rglob("*")) == ["02_cnn.ipynb", "notebooks"]


def test_course_parameter_types_follow_the_defaults(tmp_path):
    import nbformat

    from hybridlib.errors import HybridError
    from hybridlib.tools.course import check_overrides

    folder = tmp_path / "nb"
    folder.mkdir()

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(
        "epochs = 3\nlr = 0.1\nlimit = 600  # None: every image\nflag = False\n"
        'names = ["a"]\nanything = None'
    )
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, folder / "00_x.ipynb")
    good = {"epochs": 5, "lr": 1, "limit": None, "flag": True, "names": ["b"], "anything": "x"}
    assert check_overrides([folder / "00_x.ipynb"], good) == {**good, "lr": 1.0}

    for bad in ({"epochs": None}, {"epochs": True}, {"flag": 1}, {"names": "b"}, {"lr": "x"}):
        with pytest.raises(HybridError, match=f"parameter {next(iter(bad))} is a"):
            check_overrides([folder / "00_x.ipynb"], bad)


# ------------------------------------------- 10: threads, signals, lr in tables
@pytest.mark.parametrize("value", ["abc", "0", "-1", "2.5"])
def test_an_invalid_thread_count_is_refused_before_any_work(capsys, tmp_env, monkeypatch, value):
    monkeypatch.setenv("HYBRIDLIB_THREADS", value)
    message = fails(capsys, "train", *QUICK)
    assert f"HYBRIDLIB_THREADS={value!r} is not a thread count" in message
    assert "e.g. HYBRIDLIB_THREADS=2" in message
    assert not (tmp_env / "runs").exists()  # no run folder was started


def test_results_print_a_small_learning_rate_readably(capsys, tmp_path):
    run_dir = tmp_path / "run"
    assert cli.main(["train", *QUICK, "--lr", "1e-4", "--out", str(run_dir)]) == 0
    capsys.readouterr()
    for markdown in ([], ["--markdown"]):
        assert cli.main(["results", str(run_dir), *markdown]) == 0
        out = capsys.readouterr().out
        assert "0.0001" in out, out


def _start(argv: list[str], *, script: str | None = None, **kwargs):
    """`python -m hybridlib ARGV` (or a script given ARGV) in the foreground's signal state."""
    import signal
    import subprocess

    command = [sys.executable, "-c", script] if script else [sys.executable, "-m", "hybridlib"]
    return subprocess.Popen(
        [*command, *argv],
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C reaches Python as KeyboardInterrupt even under a background test runner
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **kwargs,
    )


def _wait_for(condition, process, what: str, timeout: float = 600) -> None:
    import time

    deadline = time.monotonic() + timeout  # generous: a busy 2-core machine starts slowly
    while not condition():
        assert process.poll() is None, f"{what}: the command ended first"
        assert time.monotonic() < deadline, f"{what}: timed out"
        time.sleep(0.1)


def _stop(process) -> str:
    """Whatever a test started ends with it; returns its stderr."""
    if process.poll() is None:
        process.kill()
    return process.communicate(timeout=60)[1]


# rundir.write_summary made slow for an interrupted run, so a second Ctrl-C lands in it
_SLOW_SUMMARY = """
import sys, time
from pathlib import Path
from hybridlib.engine import rundir
from hybridlib.tools import cli

real = rundir.write_summary


def slow(run_dir, *args, **kwargs):
    if kwargs.get("status") == "interrupted":
        (Path(run_dir) / "writing-summary").write_text("")
        time.sleep(3)
    return real(run_dir, *args, **kwargs)


rundir.write_summary = slow
sys.argv[0] = "hybridlib"
sys.exit(cli.main())
"""


def test_a_second_ctrl_c_does_not_lose_the_interrupted_summary(tmp_path):
    import json
    import signal

    run_dir = tmp_path / "run"
    argv = ["train", "--dataset", "digits", "--limit", "48", "--epochs", "100000"]
    process = _start([*argv, "--out", str(run_dir)], script=_SLOW_SUMMARY)
    try:
        _wait_for((run_dir / "checkpoint.pt").is_file, process, "first epoch")
        process.send_signal(signal.SIGINT)
        _wait_for((run_dir / "writing-summary").is_file, process, "summary", timeout=120)
        process.send_signal(signal.SIGINT)  # the impatient second Ctrl-C
        process.wait(timeout=120)
    finally:
        err = _stop(process)
    assert process.returncode == 130 and "Traceback" not in err, err
    assert err.strip().endswith("hybridlib train: interrupted"), err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert f"--out {run_dir} --resume" in err


def test_sigterm_to_a_grid_with_jobs_exits_143_and_keeps_each_run(tmp_path):
    import json
    import signal

    grid = tmp_path / "grid"
    argv = ["reproduce", "--table", "paper-a", "--seeds", "1", "--datasets", "digits"]
    argv += ["--limit", "48", "--epochs", "100000", "--jobs", "2", "--out", str(grid)]
    process = _start(argv)
    try:
        _wait_for(lambda: len(list(grid.glob("*/checkpoint.pt"))) >= 2, process, "two runs")
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=180)
    finally:
        err = _stop(process)
    assert process.returncode == 143 and "Traceback" not in err, err
    assert err.strip().endswith("hybridlib reproduce: terminated"), err
    started = [p.parent for p in grid.glob("*/checkpoint.pt")]
    for run_dir in started:  # each run that trained says so and can be resumed
        assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"


# ----------------------------------------------------- 8: paths a user gave
def test_out_that_is_a_file_is_one_line(capsys, tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("keep me\n")
    for out in (afile, afile / "run"):
        message = fails(capsys, "train", *QUICK, "--out", str(out))
        assert f"{out} (from --out) is, or lies under, a file where a folder is needed" in message
        assert "give --out a folder path" in message
    assert afile.read_text() == "keep me\n"
    message = fails(capsys, "bench", "--steps", "1", "--out", str(afile))
    assert "give --out a folder path" in message


def test_hybridlib_runs_that_is_a_file_is_one_line(capsys, tmp_path, monkeypatch):
    afile = tmp_path / "runs-file"
    afile.write_text("")
    monkeypatch.setenv("HYBRIDLIB_RUNS", str(afile))
    message = fails(capsys, "train", *QUICK)
    assert "(from $HYBRIDLIB_RUNS)" in message and "set HYBRIDLIB_RUNS to a folder" in message
    message = fails(capsys, "course", "--only", "00")
    assert "set HYBRIDLIB_RUNS to a folder" in message


@pytest.mark.parametrize(
    "code, status, expected",
    [
        ("EROFS", 2, "cannot be written (Read-only file system); give --out a folder you can"),
        ("EACCES", 2, "cannot be written (Permission denied); give --out a folder you can"),
        ("ENOSPC", 1, "cannot be written: the disk is full; free some space"),
    ],
)
def test_out_that_cannot_be_written_is_one_line(
    capsys, tmp_path, monkeypatch, code, status, expected
):
    import errno
    import os

    locked = tmp_path / "locked"
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):  # as on a read-only mount (tests may run as root)
        if str(self).startswith(str(locked)):
            number = getattr(errno, code)
            raise OSError(number, os.strerror(number), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    message = fails(capsys, "train", *QUICK, "--out", str(locked / "run"), status=status)
    assert expected in message and str(locked) in message


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux's /sys")
def test_out_in_a_system_folder_is_one_line():
    import subprocess

    argv = ["train", *QUICK, "--out", "/sys/hybridlib-test/run"]
    result = subprocess.run(
        [sys.executable, "-m", "hybridlib", *argv], capture_output=True, text=True, timeout=600
    )
    if result.returncode == 0:  # pragma: no cover - a machine where /sys is writable
        pytest.skip("/sys is writable here")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("hybridlib train: error: /sys/hybridlib-test") and "--out" in line


@pytest.mark.parametrize(
    "content, expected",
    [
        ('{"name": "my-app", "version": 3}\n', "it holds fields name, version"),
        ("[1, 2]\n", "it holds a JSON list"),
        ("{}\n", "it holds no fields"),
        ('{"model": "cnn", "dataset": "digits", "colour": 1}\n', "unknown field(s) colour"),
    ],
)
def test_a_config_json_from_another_program_is_refused(capsys, tmp_path, content, expected):
    other = tmp_path / "other-app"
    other.mkdir()
    (other / "config.json").write_text(content)
    for argv in (["evaluate", str(other)], ["train", "--out", str(other), "--resume"]):
        message = fails(capsys, *argv)
        assert "is not a hybridlib run config" in message and expected in message
        assert "give a run directory written by `hybridlib train`" in message
    assert (other / "config.json").read_text() == content  # nothing overwritten
    assert sorted(p.name for p in other.iterdir()) == ["config.json"]
