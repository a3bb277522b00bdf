"""Run the whole course headlessly: every notebook, in order, with papermill.

    python -m hybridlib course                  # quick profile: embedded digits data, CPU is enough
    python -m hybridlib course --profile paper  # the papers' settings on the real data sets
    python -m hybridlib course --only 02 05 -p epochs 3
    python -m hybridlib course --solutions      # also train the solutions' extra runs
    python -m hybridlib course --notebooks build/editions/student   # an edition (make.py editions)

Executed notebooks go to `<out>/notebooks/`, figures to `<out>/figures/`,
runs to `<out>/runs/` (default `<out>`: `$HYBRIDLIB_RUNS/course-<profile>`).
The first notebook that fails stops the course with its name and the cell
that failed; the partly executed copy is kept so the error can be read there.
"""

from __future__ import annotations

import ast
import difflib
import time
from pathlib import Path

from hybridlib.errors import HybridError
from hybridlib.paths import data_root, runs_root

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"

# Parameters injected into every notebook that declares them in its
# `parameters` cell. The quick profile keeps each notebook's own defaults.
PROFILES: dict[str, dict[str, object]] = {
    "quick": {},
    "paper": {
        "profile": "paper",
        "dataset": "caltech101",
        "datasets": ["cifar10", "caltech101", "tiny-imagenet"],
        "epochs": 30,  # paper A
        "lr": 1e-4,  # paper A (the quick notebooks use 1e-3)
        "flip": True,  # paper A's flips (off in the quick notebooks)
        "seeds": 3,
        "limit": None,
    },
}


def course_notebooks(directory: Path = NOTEBOOKS_DIR, only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks in teaching order (only those starting with `only`, if given)."""
    notebooks = sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb"))
    if only:
        notebooks = [p for p in notebooks if any(p.name.startswith(prefix) for prefix in only)]
        if not notebooks:
            raise HybridError(
                f"--only {' '.join(only)} matches no notebook in {directory}; "
                "use the two-digit numbers, e.g. --only 00 03"
            )
    if not notebooks:
        raise HybridError(f"no numbered notebooks found in {directory}")
    return notebooks


def _parse_value(text: str) -> object:
    """`-p epochs 3` gives 3, `-p limit None` gives None, anything else stays a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def check_overrides(notebooks: list[Path], overrides: dict[str, object]) -> dict[str, object]:
    """`overrides` checked against the parameters the notebooks declare; returns them.

    A name no notebook declares, or a value whose type differs from the default's
    in a notebook's `parameters` cell, raises `HybridError` (before anything runs or
    is written). A None default accepts any value, an int or float default a whole
    number, a float default any number; None is accepted where the parameter's
    comment offers it (e.g. `limit`: "None: every image").

    Returns:
        The overrides, a float parameter's whole numbers as floats.
    """
    import papermill  # with its Jupyter stack: seconds to load, and only the course needs it

    declared = {path.name: papermill.inspect_notebook(str(path)) for path in notebooks}
    names = sorted({name for params in declared.values() for name in params})
    checked = dict(overrides)
    for name, value in overrides.items():
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise HybridError(
                f"unknown notebook parameter {name!r} (-p {name} ...); {hint}the notebooks "
                f"run declare: {', '.join(names)}"
            )
        for notebook, params in declared.items():
            if name in params:
                checked[name] = _check_type(name, value, params[name], notebook)
    return checked


def _check_type(name: str, value: object, param: dict, notebook: str) -> object:
    """`value` if it fits the parameter's default in `notebook`, else `HybridError`."""
    try:
        default = ast.literal_eval(param["default"])
    except (ValueError, SyntaxError):
        return value  # an expression: nothing to compare with
    if default is None or not isinstance(default, (bool, int, float, str, list, tuple)):
        return value
    if value is None and "None" in (param.get("help") or ""):
        return value  # e.g. limit: "None: every image"
    kind = type(default).__name__
    if isinstance(default, bool):
        fits = isinstance(value, bool)
    elif isinstance(default, (int, float)):
        number = isinstance(value, int) or isinstance(value, float) and kind == "float"
        fits = number and not isinstance(value, bool)
    elif isinstance(default, str):
        fits = isinstance(value, str)
    else:
        fits = isinstance(value, (list, tuple))
    if fits:
        return float(value) if kind == "float" else value
    example = {"bool": "True", "int": "3", "float": "0.5", "list": "\"['a', 'b']\""}
    raise HybridError(
        f"notebook parameter {name} is a {kind} in {notebook} (default {param['default']}), "
        f"got {value!r}; pass e.g. -p {name} {example.get(kind, param['default'])}"
    )


def run_course(
    profile: str = "quick",
    out: str | Path | None = None,
    only: list[str] | None = None,
    overrides: dict[str, object] | None = None,
    notebooks_dir: Path = NOTEBOOKS_DIR,
    kernel_name: str = "python3",
    run_solutions: bool = False,
) -> Path:
    """Execute the course notebooks with papermill.

    Args:
        profile: "quick" or "paper" (see PROFILES).
        out: output folder; default `$HYBRIDLIB_RUNS/course-<profile>`.
        only: run only notebooks whose names start with these prefixes.
        overrides: extra parameters for every notebook that declares them.
        notebooks_dir: where the notebooks are (e.g. an edition's folder).
        run_solutions: also train the extra runs of the solutions, in the notebooks
            whose `parameters` cell declares `run_solutions` (the tests do).
    Returns:
        The output folder.
    Raises:
        HybridError: naming the failing notebook and cell.
    """
    import papermill  # with its Jupyter stack: seconds to load, and only the course needs it

    if profile not in PROFILES:
        raise HybridError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    out = Path(out).expanduser().resolve() if out else runs_root() / f"course-{profile}"
    notebooks = course_notebooks(notebooks_dir, only)
    overrides = check_overrides(notebooks, overrides or {})  # before anything is written
    executed = out / "notebooks"
    executed.mkdir(parents=True, exist_ok=True)
    wanted = {
        "data_root": str(data_root()),
        "out_dir": str(out),
        "run_solutions": run_solutions,
        **PROFILES[profile],
        **overrides,
    }
    print(f"Running {len(notebooks)} notebooks ({profile} profile) into {out}", flush=True)
    started = time.perf_counter()
    for path in notebooks:
        declared = papermill.inspect_notebook(str(path))
        parameters = {name: value for name, value in wanted.items() if name in declared}
        target = executed / path.name
        tic = time.perf_counter()
        print(f"  {path.name} ...", end=" ", flush=True)
        try:
            papermill.execute_notebook(
                str(path),
                str(target),
                parameters=parameters,
                cwd=str(path.parent),
                kernel_name=kernel_name,
                progress_bar=False,
                # The kernel's own start-up chatter (e.g. ipykernel's TCP notice) is noise here.
                extra_arguments=["--IPKernelApp.log_level=ERROR"],
            )
        except papermill.PapermillExecutionError as error:
            print("FAILED", flush=True)
            raise HybridError(
                f"notebook {path.name} failed in cell {error.exec_count} "
                f"({error.ename}: {error.evalue}); the partly executed copy is {target}"
            ) from None
        print(f"ok ({time.perf_counter() - tic:.0f} s)", flush=True)
    print(
        f"Done in {time.perf_counter() - started:.0f} s. Executed notebooks: {executed}; "
        f"figures: {out / 'figures'}",
        flush=True,
    )
    return out


def cli_course(args) -> int:
    overrides = {name: _parse_value(value) for name, value in args.parameter}
    notebooks_dir = Path(args.notebooks).expanduser().resolve() if args.notebooks else NOTEBOOKS_DIR
    run_course(
        args.profile,
        args.out,
        args.only,
        overrides,
        notebooks_dir=notebooks_dir,
        run_solutions=args.solutions,
    )
    return 0
