"""The course notebooks: committed clean, each one passes nbval, and the whole course runs.

    pytest tests/test_notebooks.py -m "not slow" -q   # structure only (seconds)
    pytest tests/test_notebooks.py -q                 # also executes every notebook (minutes)

How the nbval check works: the notebooks are committed without outputs, so nbval
needs a reference copy to compare against. The slow tests run the whole course
once with papermill (`hybridlib.tools.course.run_course`, quick profile, into a
temporary folder); that run is itself a test, and its executed notebooks are the
references. Each reference is then run again under `pytest --nbval-lax` on a
fresh kernel: every cell must run without error, and the cells marked
`# NBVAL_CHECK_OUTPUT` (a split size, a shape, a table's shape) must print
exactly what they printed the first time. That catches both breakage and
nondeterminism in the facts the lessons state. Some of those facts (split sizes,
shapes, parameter counts) are also computed here independently, from the papers
and plain arithmetic, and must appear in the reference's checked outputs.

Selecting a single notebook (`-k "nbval and 02"`) executes just that one with
papermill as its reference instead of the whole course. The real data subsets
(`$HYBRIDLIB_TEST_DATA`) are linked into the temporary data root when present.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
IDS = [path.stem for path in NOTEBOOKS]

# The parameters hybridlib.tools.course may inject (see course.PROFILES and run_course).
KNOWN_PARAMETERS = {
    "profile",
    "dataset",
    "datasets",
    "epochs",
    "lr",
    "flip",
    "seeds",
    "limit",
    "device",
    "data_root",
    "out_dir",
    "run_solutions",
}
CHECK_MARKER = "# NBVAL_CHECK_OUTPUT"
REAL_DATA_FOLDERS = ("cifar10-jpg", "caltech101", "tiny-imagenet-200")


def run_nbval(executed: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`pytest --nbval-lax` on an executed notebook, in a fresh process and kernel."""
    command = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env",
               "--nbval-cell-timeout=600", "-p", "no:cacheprovider", "-q", "--no-header",
               str(executed)]  # fmt: skip
    return subprocess.run(
        command,
        cwd=executed.parent,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=1200,
    )


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _is_checked(cell) -> bool:
    return cell.cell_type == "code" and (
        CHECK_MARKER in cell.source or "nbval-check-output" in cell.metadata.get("tags", [])
    )


def test_the_course_has_notebooks():
    assert NOTEBOOKS, f"no numbered notebooks in {NOTEBOOK_DIR}"
    numbers = [path.name[:2] for path in NOTEBOOKS]
    assert len(numbers) == len(set(numbers)), f"two notebooks share a number: {numbers}"


# ---------------------------------------------------------------------------
# Structure: what is committed (fast)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_without_outputs(path):
    nb = _read(path)
    nbformat.validate(nb)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [], f"{path.name} cell {index} has outputs; clear them"
        assert cell.execution_count is None, (
            f"{path.name} cell {index} has execution count {cell.execution_count}; clear it"
        )
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", (
        f"{path.name}: kernelspec must be python3, got {nb.metadata.get('kernelspec')}"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_exactly_one_parameters_cell(path):
    import papermill

    nb = _read(path)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name} has {len(tagged)} cells tagged 'parameters'"
    assert tagged[0].cell_type == "code"
    declared = set(papermill.inspect_notebook(str(path)))
    assert declared, f"{path.name}: its parameters cell declares nothing"
    unknown = declared - KNOWN_PARAMETERS
    assert not unknown, (
        f"{path.name} declares {sorted(unknown)}, which `python -m hybridlib course` never "
        f"sets; use names from {sorted(KNOWN_PARAMETERS)}"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_reads_as_a_lesson(path):
    """A title, learning goals at the top, exercises, and checked facts for nbval."""
    nb = _read(path)
    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert markdown and markdown[0].lstrip().startswith("# "), f"{path.name}: no title"
    top = "\n".join(markdown[:2]).lower()
    assert "goal" in top, f"{path.name}: state the learning goals at the top"
    assert any("exercise" in text.lower() for text in markdown), f"{path.name}: no exercises"
    assert any(_is_checked(c) for c in nb.cells), (
        f"{path.name}: mark at least one cell that prints a checked fact with {CHECK_MARKER}"
    )


# ---------------------------------------------------------------------------
# Execution: the whole course with papermill, then nbval on each notebook (slow)
# ---------------------------------------------------------------------------


def _independent_facts(stem: str, data: Path) -> list[str]:
    """Lines the checked cells must print, computed here without hybridlib.

    They come from the papers and from plain arithmetic, so they pin the facts
    the lessons state to their sources, not only to the reference run.
    """
    import math

    from sklearn.datasets import load_digits

    def splits(n: int) -> dict[str, int]:  # 20 % test, then 10 % of the rest (rounded up)
        test = math.ceil(0.2 * n)
        val = math.ceil(0.1 * (n - test))
        return {"train": n - test - val, "val": val, "test": test}

    digits = splits(len(load_digits().target))
    quick = {split: min(n, 600) for split, n in digits.items()}  # limit=600
    facts = {
        "00_overview": [f"{(45_000 + 2_432 + 1_800) * 30 * 4 * 3:,} training images"],
        "01_data": [
            f"digits {digits} classes: 10",
            f"digits (limit 600): {quick}",
            "test 676, val 271, train 2432",  # paper A's Caltech 101 split
            "train batch with crop=24: x (16, 3, 24, 24)",  # paper B's input
        ],
        "02_cnn": [
            f"trunk parameters: by hand {287_008:,}, PyTorch {287_008:,}",
            "64 -> formula 60, PyTorch 60",  # paper B's example: 64 - 5 + 1
            f"-> {math.ceil(600 / 16)} steps per epoch",
        ],
        "03_cnn_lstm": ["sequence         (8, 4, 512)", "outputs (2, 4, 3)"],
        "04_cnn_lstm_skip": ["sum                      (8, 128)"],
        "05_autoencoder": ["3,072 values -> 256 (12 times fewer)"],
    }.get(stem, [])
    if stem == "01_data":  # the papers' split sizes, where the real subsets are linked
        if (data / "caltech101").exists():
            facts.append("caltech101 {'train': 2432, 'val': 271, 'test': 676}")
        if (data / "tiny-imagenet-200").exists():
            facts.append("tiny-imagenet {'train': 1800, 'val': 200, 'test': 500}")
    return facts


class Course:
    """One temporary course folder for the session, with its own data and runs roots."""

    def __init__(self, base: Path):
        self.base = base
        self.out = base / "course-quick"
        self.data = base / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        # Link (never copy) the real data subsets, read-only, when they are available,
        # so the data lesson shows real images; the embedded digits need nothing.
        real = Path(os.environ.get("HYBRIDLIB_TEST_DATA") or ROOT.parent / "shared" / "data")
        for name in REAL_DATA_FOLDERS:
            if (real / name).is_dir():
                (self.data / name).symlink_to(real / name, target_is_directory=True)
        self.env = {
            "HYBRIDLIB_DATA": str(self.data),
            "HYBRIDLIB_RUNS": str(base / "runs"),
            "MPLBACKEND": "agg",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            # Two cores shared with other work: keep every kernel to them.
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
        }
        self.finished = False  # the whole-course run has been attempted

    def reference(self, path: Path) -> Path | None:
        executed = self.out / "notebooks" / path.name
        return executed if self.finished and executed.exists() else None


@pytest.mark.slow
def test_course_runs(course, monkeypatch):
    """The README's `python -m hybridlib course` (quick profile) runs every notebook."""
    from hybridlib.tools.course import run_course

    for name, value in course.env.items():  # the kernels inherit this environment
        monkeypatch.setenv(name, value)
    try:
        run_course(profile="quick", out=course.out, run_solutions=True)
    finally:
        course.finished = True
    executed = sorted(p.name for p in (course.out / "notebooks").glob("*.ipynb"))
    assert executed == [p.name for p in NOTEBOOKS]
    figures = list((course.out / "figures").glob("*.png"))
    assert figures, f"the course saved no figures under {course.out / 'figures'}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_nbval(path, course, tmp_path, monkeypatch):
    """Re-run the executed notebook on a fresh kernel; checked cells must print the same."""
    reference = course.reference(path)
    if reference is None:  # the course was not run (or stopped before this notebook)
        from hybridlib.tools.course import run_course

        for name, value in course.env.items():
            monkeypatch.setenv(name, value)
        run_course(
            profile="quick", out=tmp_path / "alone", only=[path.name[:2]], run_solutions=True
        )
        reference = tmp_path / "alone" / "notebooks" / path.name
    nb = _read(reference)
    checked = [c for c in nb.cells if _is_checked(c)]
    printed = ""
    for cell in checked:
        assert cell.outputs, (
            f"{path.name}: a checked cell printed nothing, so nbval would compare nothing:\n"
            f"{cell.source[:300]}"
        )
        printed += "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    for fact in _independent_facts(path.stem, course.data):
        assert fact in printed, f"{path.name}: expected the checked cells to print {fact!r}"

    result = run_nbval(reference, course.env)
    assert result.returncode == 0, f"nbval failed on {path.name}:\n{result.stdout[-6000:]}"
