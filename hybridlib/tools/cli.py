"""The command line: `python -m hybridlib COMMAND ...` (or the `hybridlib` script).

    python -m hybridlib train --model cnn_lstm_skip --dataset caltech101
    python -m hybridlib evaluate RUN_DIR
    python -m hybridlib reproduce --table paper-a --seeds 3
    python -m hybridlib results RUN_DIR [RUN_DIR ...]
    python -m hybridlib bench --model cnn --dataset digits --steps 50
    python -m hybridlib course --profile quick
    python -m hybridlib site
    python -m hybridlib figures
    python -m hybridlib data caltech101

This module only parses arguments. Each command is carried out by a
`cli_<command>(args)` function in the module that owns the concept, so the
command line and the notebooks share the same code. Mistakes a user can fix
raise `HybridError` and end here as one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import sys
import threading

from hybridlib import __version__, runtime
from hybridlib.config import DEFAULTS, RECIPES, STEP_MODES, TRAIN_OPTIONS
from hybridlib.errors import HybridError, Terminated
from hybridlib.study.reproduce import GRID_OPTIONS, GRIDS
from hybridlib.tools.course import PROFILES

# command -> (module, function) that carries it out.
HANDLERS = {
    "train": ("hybridlib.engine.trainer", "cli_train"),
    "evaluate": ("hybridlib.engine.trainer", "cli_evaluate"),
    "reproduce": ("hybridlib.study.reproduce", "cli_reproduce"),
    "results": ("hybridlib.study.results", "cli_results"),
    "bench": ("hybridlib.tools.bench", "cli_bench"),
    "course": ("hybridlib.tools.course", "cli_course"),
    "site": ("hybridlib.tools.site", "cli_site"),
    "figures": ("hybridlib.tools.diagrams", "cli_figures"),
    "data": ("hybridlib.data", "cli_data"),
}


def _terminate(signum, frame):
    """`kill PID` stops a command as Ctrl-C does, but it exits 143 (see `Terminated`)."""
    raise Terminated


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N such as 0/4, got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"need 0 <= I < N in I/N, got {text!r}")
    return index, count


def absolute_path(text: str) -> str:
    """A path as an absolute string, so a saved config finds it from any folder."""
    return os.path.abspath(os.path.expanduser(text))


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: the problem and where help is."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


# RunConfig fields that need a parser type other than their default's (int, float, str).
_TYPES = {
    "seed": int,  # 0 is a seed
    "weight_decay": float,  # 0 turns it off
    "limit": positive_int,
    "num_classes": positive_int,
    "folder": absolute_path,
}
CHOICES = {"recipe": tuple(RECIPES), "step_mode": STEP_MODES}


def config_option(p: argparse.ArgumentParser, name: str, **changes) -> None:
    """Add `--NAME` for `RunConfig.NAME`: help from `TRAIN_OPTIONS`, type and default
    from the dataclass (booleans on by default become `--no-NAME`); `changes` win."""
    default, flag = DEFAULTS[name], "--" + name.replace("_", "-")
    kwargs = {"dest": name, "default": default, "help": TRAIN_OPTIONS[name].help}
    if isinstance(default, bool) and "action" not in changes:
        kwargs["action"] = "store_false" if default else "store_true"
        flag = flag.replace("--", "--no-", 1) if default else flag
    elif changes.get("action") is not argparse.BooleanOptionalAction:  # it takes no type
        kwargs["type"] = _TYPES.get(name) or {int: positive_int, float: positive_float}.get(
            type(default), str
        )
    if name in CHOICES:
        kwargs["choices"] = CHOICES[name]
    kwargs.update(changes)
    if not isinstance(kwargs["default"], bool | type(None)):
        kwargs["help"] += f" (default: {kwargs['default']})"
    p.add_argument(flag, **kwargs)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train one model on one data set (paper A's six arguments)")
    for name in ("model", "dataset", "batch_size", "epochs"):
        config_option(p, name)
    config_option(p, "lr", default=None)  # None: the recipe's
    for name in ("val_every", "seed", "out"):
        config_option(p, name)
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    _add_grid_options(p)


def _add_grid_options(p: argparse.ArgumentParser) -> None:
    """The run options `train` and `reproduce` share."""
    for name in GRID_OPTIONS:
        if name in ("flip", "weight_decay"):  # None: the recipe's, or the grid's per model
            action = argparse.BooleanOptionalAction if name == "flip" else "store"
            config_option(p, name, default=None, action=action)
        else:
            config_option(p, name)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a finished run on its test split")
    p.add_argument("run_dir", help="a run directory written by `train`")
    p.add_argument("--data-root", default=None, help="data root (default: the run's)")
    p.add_argument("--device", default="auto", help="(default: auto)")


def _add_reproduce(sub) -> None:
    p = sub.add_parser("reproduce", help="run a paper's whole grid and write its results table")
    p.add_argument("--table", required=True, choices=list(GRIDS))
    p.add_argument("--seeds", type=positive_int, default=3, help="seeds per cell (default: 3)")
    the_papers = "(default: the paper's)"
    p.add_argument("--epochs", type=positive_int, default=None, help=f"epochs per run {the_papers}")
    p.add_argument("--datasets", nargs="+", default=None, help=f"data sets {the_papers}")
    p.add_argument("--models", nargs="+", default=None, help=f"models {the_papers}")
    p.add_argument("--batch-size", type=positive_int, default=None, help=the_papers)
    p.add_argument(
        "--out", default=None, help="grid directory (default: $HYBRIDLIB_RUNS/<table>[-<recipe>])"
    )
    p.add_argument(
        "--shard",
        type=shard,
        default=(0, 1),
        help="run only shard I of N of the grid, e.g. 0/4 (default: 0/1)",
    )
    p.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="runs trained at once on one device (default: 1)",
    )
    _add_grid_options(p)


def _add_results(sub) -> None:
    p = sub.add_parser("results", help="collect run directories into a results table")
    p.add_argument("run_dirs", nargs="+", help="run or grid directories")
    p.add_argument(
        "--table",
        choices=[*GRIDS, "runs"],
        default="runs",
        help="layout of the table (default: one row per run)",
    )
    p.add_argument("--markdown", action="store_true", help="print markdown instead of text")
    p.add_argument(
        "--out",
        default=None,
        help="also write the merged tables (CSV, markdown) into this folder (with --table "
        "paper-a or paper-b), e.g. from the grid shards of several machines",
    )
    p.add_argument(
        "--compare",
        choices=("precision",),
        default=None,
        help="instead of the tables, compare two groups of runs cell by cell and write "
        "OUT/<prefix>_<name>.csv/.md (precision: bf16 against fp32 runs)",
    )
    p.add_argument(
        "--copy-runs",
        action="store_true",
        help="copy the finished runs (without checkpoints) into OUT/runs and make the "
        "tables from the copies: a self-contained results folder to share or commit",
    )
    p.add_argument(
        "--figures",
        default=None,
        help="also draw the loss curves per data set and a confusion matrix per cell "
        "into this folder (with --table paper-a or paper-b)",
    )


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="time the plain loop against hybridlib's training paths")
    for name in ("model", "dataset", "batch_size", "device", "data_root", "folder"):
        config_option(p, name)
    config_option(p, "num_classes")
    p.add_argument(
        "--steps", type=positive_int, default=50, help="timed steps per repeat (default: 50)"
    )
    p.add_argument("--repeats", type=positive_int, default=3, help="(default: 3)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default: 5)")
    config_option(p, "seed", help="weights and shuffling seed")
    config_option(p, "limit")
    p.add_argument(
        "--cpu-bf16",
        choices=("auto", "on", "off"),
        default="auto",
        help="bf16 autocast on the fastest CPU path (changes numerics); auto: where the CPU "
        "has native bf16, AMX or AVX-512 BF16 (default: auto)",
    )
    p.add_argument("--out", default=None, help="also write the table as JSON and markdown here")


def _add_course(sub) -> None:
    p = sub.add_parser("course", help="run every notebook headlessly with papermill")
    p.add_argument(
        "--profile",
        choices=list(PROFILES),
        default="quick",
        help="quick: embedded data, seconds per notebook; paper: the papers' "
        "settings (default: quick)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="folder for executed notebooks and figures "
        "(default: $HYBRIDLIB_RUNS/course-<profile>)",
    )
    p.add_argument(
        "--only",
        nargs="+",
        default=None,
        help="run only notebooks whose names start with these, e.g. 00 03",
    )
    p.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="override a notebook parameter",
    )
    p.add_argument(
        "--solutions",
        action="store_true",
        help="also train the extra runs of the solutions (run_solutions = True)",
    )
    p.add_argument(
        "--notebooks",
        default=None,
        help="folder of the notebooks to run, e.g. build/editions/student "
        "(default: the course's notebooks/)",
    )


def _add_site(sub) -> None:
    p = sub.add_parser("site", help="run the course, then build its website (both editions)")
    p.add_argument(
        "--executed",
        default=None,
        help="folder of notebooks executed already (e.g. <course out>/notebooks); "
        "default: run the course first, quick profile with the solutions' runs",
    )
    p.add_argument(
        "--out", default="build/site", help="folder for the site's html/ (default: build/site)"
    )


def _add_figures(sub) -> None:
    p = sub.add_parser("figures", help="redraw the architecture figures from the models")
    p.add_argument("--out", default=None, help="(default: figures/architectures, or figures/data)")
    p.add_argument(
        "--samples", action="store_true", help="draw sample grids of the data sets instead"
    )
    config_option(p, "data_root")


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="show (and optionally download) a data set and its splits")
    p.add_argument("dataset", help=TRAIN_OPTIONS["dataset"].help)
    config_option(p, "data_root")
    config_option(p, "download")
    p.add_argument(
        "--folder", default=None, help="for the 'folder' data set: a folder of class sub-folders"
    )
    config_option(p, "seed", help="split seed")
    config_option(p, "num_classes", help="number of classes (default: the paper's)")


SUBCOMMANDS = (_add_train, _add_evaluate, _add_reproduce, _add_results, _add_bench,
               _add_course, _add_site, _add_figures, _add_data)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The `hybridlib` parser: one `_add_<command>` function per sub-command."""
    parser = _Parser(
        prog="hybridlib",
        description="Train, evaluate and compare the CNN, CNN+LSTM, CNN+LSTM+skip and "
        "auto-encoder classifiers of the course.",
    )
    parser.add_argument("--version", action="version", version=f"hybridlib {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def given_options(argv: list[str] | None) -> set[str]:
    """The options (argparse `dest` names) written on the command line, defaults aside:
    `train --resume` must tell `--model cnn` from the default `cnn`."""
    parser = build_parser()
    for action in parser._actions:  # the sub-commands' parsers, without defaults
        for sub in getattr(action, "choices", None) or {}:
            subparser = action.choices[sub]
            if isinstance(subparser, argparse.ArgumentParser):
                for option in subparser._actions:
                    option.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv))) - {"command"}


# Commands that compute, and so read $HYBRIDLIB_THREADS (checked before they start).
COMPUTING = ("train", "evaluate", "reproduce", "bench", "course", "site")


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: the program's arguments) and run the command.

    Returns the exit status: 0 done, 1 a run failed (diverged), 2 a mistake the user
    can fix (one line on stderr), 130 Ctrl-C, 143 SIGTERM, 141 a closed pipe. As the
    program (`argv` None), SIGTERM stops a run as Ctrl-C does: it keeps its checkpoint
    and summary.
    """
    program = argv is None and threading.current_thread() is threading.main_thread()
    if program:
        signal.signal(signal.SIGTERM, _terminate)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has printed its message
        return int(exit_.code or 0)
    args.given = given_options(argv)
    module_name, function_name = HANDLERS[args.command]
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
        if args.command in COMPUTING:
            runtime.threads_setting()  # an invalid $HYBRIDLIB_THREADS: stop before any work
        status = int(handler(args) or 0)
        sys.stdout.flush()  # here, so a closed pipe is caught below, not at exit
        return status
    except HybridError as error:
        print(f"hybridlib {args.command}: error: {error}", file=sys.stderr)
        return getattr(error, "exit_code", 2)  # 1 for runtime faults such as a full disk
    except KeyboardInterrupt as interrupt:
        if program:  # a further Ctrl-C must not turn this message into a traceback
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        terminated = isinstance(interrupt, Terminated)
        what = "terminated" if terminated else "interrupted"
        print(f"hybridlib {args.command}: {what}", file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so Python's exit-time flush cannot fail again
        return 141
    except OSError as error:
        if error.filename is None:  # not about a path: a real fault, with its traceback
            raise
        print(f"hybridlib {args.command}: error: {path_message(error, args)}", file=sys.stderr)
        return 1 if error.errno in _FULL else 2


_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))  # a fault, not a mistake: exit 1


def _setting_for(path: str, args: argparse.Namespace) -> str | None:
    """The option or variable that gave `path` (or a folder above or below it)."""
    given = [(f"--{name.replace('_', '-')}", getattr(args, name, None)) for name in _PATH_OPTIONS]
    given += [(f"${name}", os.environ.get(name)) for name in ("HYBRIDLIB_RUNS", "HYBRIDLIB_DATA")]
    target = os.path.abspath(os.path.expanduser(path))
    for label, value in given:
        if isinstance(value, str) and value:
            folder = os.path.abspath(os.path.expanduser(value))
            if os.path.commonpath([folder, target]) in (folder, target):
                return label
    return None


# options whose value is a path, in the order they are blamed for a path error
_PATH_OPTIONS = ("out", "run_dir", "folder", "data_root", "figures")


def path_message(error: OSError, args: argparse.Namespace) -> str:
    """One line for an OSError about a path: which path, what is wrong, how to fix it."""
    path = str(error.filename)
    setting = _setting_for(path, args)
    where = f" (from {setting})" if setting else ""
    if setting is None:
        choose = "choose"
    elif setting.startswith("$"):
        choose = f"set {setting[1:]} to"
    else:
        choose = f"give {setting}"
    if isinstance(error, FileExistsError | NotADirectoryError):
        problem = "is, or lies under, a file where a folder is needed"
        fix = f"{choose} a folder path, or move the file away"
    elif isinstance(error, IsADirectoryError):
        problem = "is a folder where a file is needed"
        fix = f"{choose} a file path"
    elif isinstance(error, FileNotFoundError):
        problem = "does not exist"
        fix = f"{choose} an existing path"
    elif error.errno in _FULL:
        problem = "cannot be written: the disk is full"
        fix = "free some space (or choose a folder on another disk) and run the command again"
    elif isinstance(error, PermissionError) or error.errno == errno.EROFS:
        problem = f"cannot be written ({error.strerror or 'permission denied'})"
        fix = f"{choose} a folder you can write to"
    else:
        problem = f"cannot be used ({error.strerror or error})"
        fix = f"{choose} another path"
    return f"{path}{where} {problem}; {fix}"
