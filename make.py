#!/usr/bin/env python3
"""The course's set-up commands, for a fresh machine with only Python 3.10+.

    python3 make.py course   # install everything, then run the whole course headlessly
    python3 make.py test     # install everything, then lint and run the full test suite
    python3 make.py editions # write the student and instructor editions to build/editions/
    python3 make.py site     # run the course, then build its website into build/site/html/

Each creates (or reuses) a virtual environment in `.venv/` beside this file and
installs the package into it with the tested versions in `constraints.txt`.
Running one twice in a row is safe: the second run installs nothing unless
`pyproject.toml`, `constraints.txt` or the stack changed.

`HYBRIDLIB_STACK` chooses what gets installed (the CI workflow's matrix uses it):
`tested` (default) the pins of `constraints.txt`; `oldest` every dependency at
the lower bound `pyproject.toml` promises; `newest` the newest release of each.

Extra arguments are passed on: `python3 make.py course --profile paper`,
`python3 make.py test -k models -x`, `python3 make.py editions --out DIR`,
`python3 make.py site --executed DIR`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".hybridlib-installed"
STACKS = ("tested", "oldest", "newest")
OLDEST = ROOT / "build" / "constraints-oldest.txt"


def say(message: str) -> None:
    print(f"[make.py] {message}", flush=True)


def run(*cmd: str | Path, **kwargs) -> int:
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, **kwargs)


def check(*cmd: str | Path) -> None:
    code = run(*cmd)
    if code != 0:
        say(f"command failed with exit code {code}: {' '.join(map(str, cmd))}")
        sys.exit(code)


def stack() -> str:
    name = os.environ.get("HYBRIDLIB_STACK") or "tested"
    if name not in STACKS:
        sys.exit(f"HYBRIDLIB_STACK={name!r}: choose one of {', '.join(STACKS)}")
    return name


def lower_bounds() -> list[str]:
    """`name==version` for every `name>=version` requirement in pyproject.toml (read with
    a pattern, not tomllib, which Python 3.10 lacks)."""
    text = (ROOT / "pyproject.toml").read_text()
    text = text[text.index("[project]") : text.index("[project.scripts]")]
    return [f"{name}=={version}" for name, version in re.findall(r'"([\w.-]+)>=([\w.]+)"', text)]


def install_options() -> list[str]:
    """pip options that select the stack's versions."""
    if stack() == "tested":
        return ["-c", "constraints.txt"]
    if stack() == "oldest":
        OLDEST.parent.mkdir(exist_ok=True)
        OLDEST.write_text("\n".join(lower_bounds()) + "\n")
        return ["-c", str(OLDEST)]
    return ["--upgrade", "--upgrade-strategy", "eager"]


def install_fingerprint() -> str:
    digest = hashlib.sha256(stack().encode())
    for name in ("pyproject.toml", "constraints.txt"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_venv() -> None:
    """Create `.venv` and install the package with its dev extras, once."""
    if sys.version_info < (3, 10):  # noqa: UP036 (make.py may be started by an older python3)
        sys.exit(f"hybridlib needs Python 3.10 or newer; this is {sys.version.split()[0]}.")
    if not PYTHON.exists():
        say(f"creating a virtual environment in {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    fingerprint = install_fingerprint()
    if STAMP.exists() and STAMP.read_text() == fingerprint:
        say("virtual environment is up to date")
        return
    say(
        f"installing hybridlib and its dependencies, {stack()} versions "
        "(first time: a few minutes, ~6 GB for torch)"
    )
    pip = [PYTHON, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    check(*pip, *install_options(), "-e", ".[dev]")
    STAMP.write_text(fingerprint)


def ensure_chromium() -> None:
    """The JupyterLab browser test drives the system Chromium; install it if we can."""
    chosen = os.environ.get("HYBRIDLIB_CHROMIUM")  # a browser of one's own, e.g. google-chrome
    if any(shutil.which(name) for name in (chosen, "chromium", "chromium-browser") if name):
        return
    if os.name != "posix" or not shutil.which("apt-get") or os.geteuid() != 0:
        say(
            "Chromium is not installed and cannot be installed here (needs root and apt-get); "
            "the browser test will say so. Install Debian's 'chromium' package to run it."
        )
        return
    say("installing Debian's chromium for the JupyterLab browser test")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if (
        run("apt-get", "update", "-qq", env=env) != 0
        or run("apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium", env=env)
        != 0
    ):
        say("could not install chromium with apt-get; the browser test will say so")


def course(args: list[str]) -> int:
    ensure_venv()
    return run(PYTHON, "-m", "hybridlib", "course", *args)


def editions(args: list[str]) -> int:
    """The student and the instructor edition of the notebooks (hybridlib.tools.editions)."""
    ensure_venv()
    return run(PYTHON, "-m", "hybridlib.tools.editions", *args)


def site(args: list[str]) -> int:
    """The course as a static website (hybridlib.tools.site)."""
    ensure_venv()
    return run(PYTHON, "-m", "hybridlib", "site", *args)


def test(args: list[str]) -> int:
    ensure_venv()
    ensure_chromium()
    say("ruff: lint and format checks")
    check(BIN / "ruff", "check", ".")
    check(BIN / "ruff", "format", "--check", ".")
    say("pytest")
    code = run(PYTHON, "-m", "pytest", *args)
    if code == 5:
        say("pytest collected no tests")
        return 1
    return code


COMMANDS = {"course": course, "test": test, "editions": editions, "site": site}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__)
        sys.exit(2 if len(sys.argv) >= 2 and sys.argv[1] not in ("-h", "--help") else 0)
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]))
