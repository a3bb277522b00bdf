"""The teacher's guide (docs/teachers_guide.md) stays in step with the notebooks."""

from __future__ import annotations

import re
from pathlib import Path

from hybridlib import exercises

ROOT = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "docs" / "teachers_guide.md").read_text()


def _rows() -> dict[str, list[str]]:
    """The per-notebook table: '02' -> its cells."""
    rows = {}
    for line in GUIDE.splitlines():
        match = re.match(r"\| (\d\d) \w+ \|(.*)\|$", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split("|")]
    return rows


def test_every_notebook_has_a_row_with_its_time():
    numbers = sorted(p.name[:2] for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    rows = _rows()
    assert sorted(rows) == numbers
    for number, cells in rows.items():
        assert re.fullmatch(r"\d+ s", cells[1]), (number, cells)  # measured compute time
        assert re.search(r"\d+ min", cells[2]), (number, cells)  # the students' time


def test_every_self_checking_exercise_is_named_beside_its_notebook():
    rows = _rows()
    for name in exercises.__all__:
        users = [p.name[:2] for p in (ROOT / "notebooks").glob("*.ipynb") if name in p.read_text()]
        assert users, f"{name} is used by no notebook"
        for number in users:
            assert f"`{name}`" in rows[number][3], (name, number)


def test_the_guide_marks_07_optional_and_the_readme_links_it():
    assert "optional" in _rows()["07"][0].lower()
    assert "docs/teachers_guide.md" in (ROOT / "README.md").read_text()
