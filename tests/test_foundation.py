"""The package installs, its command line behaves, and its metadata agrees."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hybridlib import paths
from hybridlib.tools import cli


def _pyproject() -> dict:
    """pyproject.toml's [project] table (tomllib is Python 3.11+; on 3.10 pytest's own
    dependency tomli reads it)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hybridlib", *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in cli.HANDLERS:
        assert command in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["train", "--lr", "-1"], "must be a positive finite number"),
        (["train", "--epochs", "zero"], "expected a whole number"),
        (["train", "--bogus"], "unrecognized arguments: --bogus"),
        (["reproduce", "--table", "paper-c"], "invalid choice: 'paper-c'"),
        (["reproduce", "--table", "paper-a", "--shard", "3/2"], "need 0 <= I < N"),
    ],
)
def test_bad_arguments_exit_nonzero_without_traceback(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_every_handler_exists():
    import importlib

    for module_name, function_name in cli.HANDLERS.values():
        module = importlib.import_module(module_name)
        assert callable(getattr(module, function_name)), (module_name, function_name)


def test_console_script_is_declared():
    project = _pyproject()
    assert project["scripts"]["hybridlib"] == "hybridlib.tools.cli:main"


def _requirement_names(lines):
    return {re.split(r"[<>=!~\[ ]", line.strip(), maxsplit=1)[0].lower() for line in lines}


def test_environment_yml_matches_pyproject():
    project = _pyproject()
    wanted = {
        req.replace(" ", "")
        for req in project["dependencies"] + project["optional-dependencies"]["dev"]
    }
    env_lines = [
        line.strip()[2:].strip()
        for line in (ROOT / "environment.yml").read_text().splitlines()
        if line.strip().startswith("- ") and not line.strip().startswith("- -e")
    ]
    pip_reqs = {
        line for line in env_lines if _requirement_names([line]) & _requirement_names(wanted)
    }
    assert pip_reqs == wanted


def test_roots_default_to_absolute_home_folders(monkeypatch):
    monkeypatch.delenv("HYBRIDLIB_DATA", raising=False)
    monkeypatch.delenv("HYBRIDLIB_RUNS", raising=False)
    assert paths.data_root() == (Path.home() / "hybridlib" / "data").resolve()
    assert paths.runs_root() == (Path.home() / "hybridlib" / "runs").resolve()


def test_roots_follow_environment_and_are_created_on_demand(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDLIB_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("HYBRIDLIB_RUNS", str(tmp_path / "r"))
    assert paths.data_root() == tmp_path / "d"
    assert not (tmp_path / "d").exists()
    assert paths.runs_root(create=True) == tmp_path / "r"
    assert (tmp_path / "r").is_dir()
    assert paths.data_root(tmp_path / "x") == tmp_path / "x"


def test_ci_script_calls_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "python3 make.py test" in readme
    assert "python3 make.py course" in readme
    assert "python3 make.py test" in (ROOT / ".ci" / "run").read_text()


def _make_py():
    """make.py as a module (it is a script beside the package, not part of it)."""
    spec = importlib.util.spec_from_file_location("make_py", ROOT / "make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_oldest_stack_is_every_lower_bound_pyproject_promises(monkeypatch):
    make = _make_py()
    project = _pyproject()
    promised = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    bounds = {r.split(">=")[0]: r.split(">=")[1] for r in promised if ">=" in r}
    assert len(bounds) == len(promised)  # every dependency has a lower bound
    assert make.lower_bounds() == [f"{name}=={version}" for name, version in bounds.items()]
    assert "torch==2.11" in make.lower_bounds() and "torchvision==0.26" in make.lower_bounds()
    for name, option in (("tested", "constraints.txt"), ("newest", "--upgrade")):
        monkeypatch.setenv("HYBRIDLIB_STACK", name)
        assert option in make.install_options()
    fingerprints = set()
    for name in make.STACKS:  # a change of stack reinstalls
        monkeypatch.setenv("HYBRIDLIB_STACK", name)
        fingerprints.add(make.install_fingerprint())
    assert len(fingerprints) == len(make.STACKS)
    monkeypatch.setenv("HYBRIDLIB_STACK", "latest")
    with pytest.raises(SystemExit, match="choose one of tested, oldest, newest"):
        make.stack()
