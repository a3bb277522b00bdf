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

from hybridlib import cli

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures import layouts  # noqa: E402

PACKAGE = Path(cli.__file__).resolve().parent
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
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", "")
            if name.endswith("Error") and node.args:
                messages.append((path.name, node.lineno, _template(node.args[0])))
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
        ("epochs", "three", "parameter epochs is a int in 02_cnn.ipynb (default 3), got 'three'"),
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
        assert "declare: data_root, dataset, device, epochs, limit, out_dir" in message
    assert earlier.read_bytes() == content and earlier.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in out.rglob("*")) == ["02_cnn.ipynb", "notebooks"]


def test_course_parameter_types_follow_the_defaults(tmp_path):
    import nbformat

    from hybridlib.course import check_overrides
    from hybridlib.errors import HybridError

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
