"""The student and the instructor edition of the course, made from the committed notebooks.

    python3 make.py editions                           # both, into build/editions/
    python -m hybridlib.tools.editions --out DIR       # the same, into DIR/{student,instructor}

The notebooks in `notebooks/` are the one source. The instructor edition is a copy of
them: every solution, every answer to a "think" question. The student edition

* turns each code cell tagged `solution` into a stub: where the cell marks its answer
  with `### BEGIN SOLUTION` and `### END SOLUTION`, only those lines become
  `raise NotImplementedError` (the rest, such as the call of the exercise's check,
  stays); any other solution becomes an empty answer cell (`...`);
* turns each markdown cell tagged `solution` (an answer) into a cell for the
  student's own answer, and "**Solution N**" headings into "**Exercise N.**";
* leaves out the `run_solutions` parameter, which only solutions read;
* moves the `# NBVAL_CHECK_OUTPUT` marker from the cell's code into its tags
  (`nbval-check-output`, which nbval reads as well) and drops the sentences that call
  an output "a checked fact", so students see neither and the tests still check the
  same outputs in both editions.
"""

from __future__ import annotations

import argparse
import copy
import re
from pathlib import Path

import nbformat

from hybridlib.tools.course import NOTEBOOKS_DIR, course_notebooks

DEFAULT_OUT = NOTEBOOKS_DIR.parent / "build" / "editions"
EDITIONS = ("student", "instructor")
CHECK_MARKER = "# NBVAL_CHECK_OUTPUT"
CHECK_TAG = "nbval-check-output"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
ANSWER_CELL = "*Your answer:* (double-click here to write it)"

_HEADING = re.compile(r"^\*\*Solution (\d+)\.?\*\*\.?(?:\s*\(collapsed:[^)]*\)\.?)?\s*")
_CHECKED_FACT = [  # from the most specific to the most general
    re.compile(r"\s*\(an? checked\s+facts?\.?\)", re.IGNORECASE),  # "(a checked fact)"
    re.compile(r";\s+(?:the table|it) is a checked\s+fact(?=\.)"),  # "...; the table is a ..."
    re.compile(
        r"(?:(?<=[.!?:])[ \t]+|(?<=\n)|^)(?:[^.!?\n]|\n(?!\n))*?checked\s+facts?\b"
        r"(?:[^.!?\n]|\n(?!\n))*[.!?)]+",
        re.MULTILINE,
    ),  # the whole sentence
]


def _tags(cell) -> list[str]:
    return list(cell.metadata.get("tags", []))


def _set_tags(cell, tags: list[str]) -> None:
    if tags:
        cell.metadata["tags"] = tags
    else:
        cell.metadata.pop("tags", None)


def _stub(source: str, number: str | None) -> str:
    """The student's part of a solution: its marked answer, or the whole cell, left out."""
    if BEGIN not in source:
        return f"# Exercise {number}: your code here\n..." if number else "# your code here\n..."
    lines, inside = [], False
    for line in source.splitlines():
        if line.strip() == BEGIN:
            indent = line[: len(line) - len(line.lstrip())]
            lines.append(f"{indent}raise NotImplementedError  # your code here")
            inside = True
        elif line.strip() == END:
            inside = False
        elif not inside and not line.startswith("# Solution"):
            lines.append(line)
    return "\n".join(lines)


def strip_checked_facts(text: str) -> str:
    """Markdown without the sentences (or asides) that call an output a checked fact."""
    for pattern in _CHECKED_FACT:
        text = pattern.sub("", text)
    return re.sub(r"[ \t]+\n", "\n", text).strip()


def _student_cell(cell, number: str | None):
    """The student edition of one cell (None: leave it out)."""
    cell = copy.deepcopy(cell)
    cell.metadata.get("jupyter", {}).pop("source_hidden", None)
    if not cell.metadata.get("jupyter"):
        cell.metadata.pop("jupyter", None)
    tags = _tags(cell)
    if "solution" in tags:
        tags = [t if t != "solution" else "exercise" for t in tags]
        cell.source = _stub(cell.source, number) if cell.cell_type == "code" else ANSWER_CELL
    elif cell.cell_type == "markdown":
        cell.source = _HEADING.sub(
            lambda m: f"**Exercise {m.group(1)}.** Your answer:\n\n",
            strip_checked_facts(cell.source),
        ).strip()
        if not cell.source:
            return None
    elif CHECK_MARKER in cell.source:
        lines = [line for line in cell.source.splitlines() if line.strip() != CHECK_MARKER]
        cell.source = "\n".join(lines)
        tags = tags + [CHECK_TAG] if CHECK_TAG not in tags else tags
    if "parameters" in tags:
        kept = [line for line in cell.source.splitlines() if not line.startswith("run_solutions")]
        cell.source = "\n".join(kept)
    _set_tags(cell, tags)
    return cell


def student_edition(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook with stubs for the solutions and no markers of the tests."""
    student = copy.deepcopy(nb)
    cells, number = [], None
    for cell in nb.cells:
        heading = _HEADING.match(cell.source) if cell.cell_type == "markdown" else None
        if heading:
            number = heading.group(1)
        edited = _student_cell(cell, number)
        if edited is not None:
            cells.append(edited)
    student.cells = cells
    student.metadata["hybridlib"] = {"edition": "student"}
    return student


def instructor_edition(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook as committed: every solution and answer."""
    instructor = copy.deepcopy(nb)
    instructor.metadata["hybridlib"] = {"edition": "instructor"}
    return instructor


def make_editions(
    out: str | Path = DEFAULT_OUT, source: Path = NOTEBOOKS_DIR
) -> dict[str, list[Path]]:
    """Write both editions of every course notebook.

    Args:
        out: folder that receives `student/` and `instructor/` (replacing their notebooks).
        source: the folder of the committed notebooks.
    Returns:
        The written notebooks of each edition.
    """
    out = Path(out)
    written: dict[str, list[Path]] = {}
    for edition, make in (("student", student_edition), ("instructor", instructor_edition)):
        folder = out / edition
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.ipynb"):
            old.unlink()
        written[edition] = []
        for path in course_notebooks(source):
            nb = make(nbformat.read(path, as_version=4))
            nbformat.validate(nb)
            nbformat.write(nb, folder / path.name)
            written[edition].append(folder / path.name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hybridlib.tools.editions",
        description="Write the student and the instructor edition of the course notebooks.",
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"(default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    written = make_editions(args.out)
    for edition, paths in written.items():
        print(f"{edition:10s} {len(paths)} notebooks in {paths[0].parent}")
    student = Path(args.out) / "student"
    print(f"Open them in JupyterLab, or run one: python -m hybridlib course --notebooks {student}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
