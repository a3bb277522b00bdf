"""The student and instructor editions (`python3 make.py editions`), made from notebooks/.

    pytest tests/test_editions.py -m "not slow" -q   # structure of both editions (seconds)
    pytest tests/test_editions.py -q                 # also executes notebook 01 of each (minutes)

Fast: both editions hold every notebook; the student edition has no line of any
solution, a stub (`raise NotImplementedError` or `...`) in place of each, the calls of
the exercises' checks, no answers to the think questions, and none of the tests'
markers (`# NBVAL_CHECK_OUTPUT`, "a checked fact"), while the same cells carry nbval's
`nbval-check-output` tag; the instructor edition is the committed notebooks, solutions
and markers included. Solutions that train runs only do so with `run_solutions`.

Slow: notebook 01 of each edition runs under papermill (as `python -m hybridlib course
--notebooks ...` runs it) and then passes nbval on a fresh kernel, checked cells
included; the student's unwritten exercise is reported, the instructor's passes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import papermill
import pytest
from test_notebooks import CHECK_MARKER, NOTEBOOKS, Course, _is_checked, run_nbval

from hybridlib import exercises
from hybridlib.tools.editions import CHECK_TAG, DEFAULT_OUT, make_editions

ROOT = Path(__file__).resolve().parents[1]
IDS = [path.stem for path in NOTEBOOKS]
TRAINS = ("run_grid(", "run_training(", ".train(")  # calls that train whole runs


@pytest.fixture(scope="module")
def editions(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("editions")
    written = make_editions(out)
    assert [p.name for p in written["student"]] == [p.name for p in NOTEBOOKS]
    assert [p.name for p in written["instructor"]] == [p.name for p in NOTEBOOKS]
    return out


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _is_solution(cell) -> bool:
    return "solution" in cell.metadata.get("tags", [])


def _solution_lines(cell) -> list[str]:
    """The lines of a solution a student must not see (its marked part, if it has one)."""
    source = cell.source
    if "### BEGIN SOLUTION" in source:
        source = "\n".join(re.findall(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", source, re.S))
    lines = [line.strip() for line in source.splitlines()]
    return [line for line in lines if len(line) >= 12 and not line.startswith("# Solution")]


def test_the_build_folder_is_ignored_by_git():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    probe = DEFAULT_OUT / "student" / "00_overview.ipynb"
    result = subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=ROOT)
    assert result.returncode == 0, f"{DEFAULT_OUT} is not git-ignored; add /build/ to .gitignore"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_the_student_edition_has_stubs_not_solutions(path, editions):
    source, student = _read(path), _read(editions / "student" / path.name)
    nbformat.validate(student)
    by_id = {cell.id: cell for cell in student.cells}
    others = {
        line.strip() for c in source.cells if not _is_solution(c) for line in c.source.split("\n")
    }
    text = "\n".join(cell.source for cell in student.cells)
    shown = {line.strip() for line in text.split("\n")}
    solutions = [cell for cell in source.cells if _is_solution(cell)]
    assert solutions, f"{path.name} has no solutions"
    for cell in solutions:
        stub = by_id[cell.id]  # every solution keeps its place, as a stub
        assert not _is_solution(stub)
        if cell.cell_type == "code":
            assert "raise NotImplementedError" in stub.source or "..." in stub.source, stub.source
        leaked = [line for line in _solution_lines(cell) if line not in others and line in shown]
        assert not leaked, f"{path.name}: the student edition shows solution lines {leaked[:3]}"
    assert "### BEGIN SOLUTION" not in text and "run_solutions" not in text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_the_student_edition_hides_the_tests_markers_but_keeps_the_checks(path, editions):
    source, student = _read(path), _read(editions / "student" / path.name)
    by_id = {cell.id: cell for cell in student.cells}
    for cell in student.cells:
        assert CHECK_MARKER not in cell.source, f"{path.name}: {cell.source[:80]}"
        assert not re.search(r"checked\s+facts?", cell.source, re.I), cell.source
    checked = [cell.id for cell in source.cells if _is_checked(cell)]
    assert checked
    for cell_id in checked:  # nbval compares the same cells, marked by their tag
        assert CHECK_TAG in by_id[cell_id].metadata.get("tags", []), cell_id
        assert _is_checked(by_id[cell_id])
    declared = set(papermill.inspect_notebook(str(path))) - {"run_solutions"}
    assert set(papermill.inspect_notebook(str(editions / "student" / path.name))) == declared


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_the_instructor_edition_is_the_source_with_every_solution(path, editions):
    source, instructor = _read(path), _read(editions / "instructor" / path.name)
    assert [(c.id, c.source) for c in instructor.cells] == [(c.id, c.source) for c in source.cells]
    assert any(_is_solution(cell) for cell in instructor.cells)


def test_every_exercise_check_is_called_in_both_editions(editions):
    for name in exercises.__all__:
        for edition in ("student", "instructor"):
            calls = [
                (path.name, cell)
                for path in sorted((editions / edition).glob("*.ipynb"))
                for cell in _read(path).cells
                if f"{name}(" in cell.source and cell.cell_type == "code"
            ]
            assert calls, f"no notebook of the {edition} edition calls {name}"
            if edition == "student":
                for notebook, cell in calls:
                    assert "raise NotImplementedError" in cell.source, (notebook, cell.source)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_think_questions_have_answers_for_the_instructor_only(path, editions):
    source, student = _read(path), _read(editions / "student" / path.name)
    cells = source.cells
    think = [
        i
        for i, c in enumerate(cells)
        if c.cell_type == "markdown" and c.source.startswith("### Think")
    ]
    assert len(think) == 1, f"{path.name}: one '### Think' cell"
    questions = re.findall(r"^\d+\. ", cells[think[0]].source, re.M)
    assert 1 <= len(questions) <= 3, f"{path.name}: {len(questions)} think questions"
    answer = cells[think[0] + 1]
    assert answer.cell_type == "markdown" and _is_solution(answer), (
        "answers follow, tagged solution"
    )
    assert len(re.findall(r"^\d+\. ", answer.source, re.M)) == len(questions)
    hidden = {c.id: c for c in student.cells}[answer.id]
    assert hidden.source.startswith("*Your answer:*")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_solutions_that_train_runs_wait_for_run_solutions(path):
    nb = _read(path)
    training = [c for c in nb.cells if _is_solution(c) and any(call in c.source for call in TRAINS)]
    if not training:
        return
    declared = papermill.inspect_notebook(str(path))
    assert declared.get("run_solutions", {}).get("default") == "False", (
        f"{path.name}: declare run_solutions = False in the parameters cell"
    )
    for cell in training:
        assert "if run_solutions:" in cell.source, f"{path.name}: {cell.source[:200]}"


# ---------------------------------------------------------------------------
# Execution: notebook 01 of each edition, papermill then nbval (slow)
# ---------------------------------------------------------------------------


EDITION_RUNS = {"student": ["01", "05", "08"], "instructor": ["01"]}


@pytest.mark.slow
@pytest.mark.parametrize("edition", ["student", "instructor"])
def test_an_edition_runs_and_passes_nbval(edition, editions, tmp_path_factory, monkeypatch):
    from hybridlib.tools.course import run_course

    course = Course(tmp_path_factory.mktemp(f"course-{edition}"))
    cache = tmp_path_factory.getbasetemp() / "decoded-cache"  # decode the real images once
    env = {**course.env, "HYBRIDLIB_CACHE": str(cache)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # The instructor edition is the committed notebooks, which test_notebooks runs whole;
    # the student edition runs every quick notebook with a self-checking exercise.
    only = EDITION_RUNS[edition]
    run_course(out=course.out, only=only, notebooks_dir=editions / edition, run_solutions=True)
    for executed in sorted((course.out / "notebooks").glob("*.ipynb")):
        nb = _read(executed)
        printed = "".join(
            output.get("text", "") for cell in nb.cells for output in cell.get("outputs", [])
        )
        expected = "not written yet" if edition == "student" else "channel statistics: correct"
        assert expected in printed, executed.name
        assert all(cell.outputs for cell in nb.cells if _is_checked(cell)), executed.name

        result = run_nbval(executed, env)
        assert result.returncode == 0, (
            f"nbval failed on the {edition} edition of {executed.name}:\n{result.stdout[-6000:]}"
        )
        assert re.search(r"\d+ passed", result.stdout), result.stdout[-2000:]
    assert len(list((course.out / "notebooks").glob("*.ipynb"))) == len(only)
