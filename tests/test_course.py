"""The course runner stops at the first failing notebook and says where."""

from __future__ import annotations

import nbformat
import pytest

from hybridlib.errors import HybridError
from hybridlib.tools.course import course_notebooks, run_course


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('out_dir = None\nmessage = "default"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, *(nbformat.v4.new_code_cell(source) for source in sources)]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)


@pytest.fixture()
def course_dir(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "00_first.ipynb", "print(message)")
    _notebook(folder / "01_broken.ipynb", "x = 1", "raise ValueError('boom')")
    _notebook(folder / "02_never.ipynb", "print('unreachable')")
    (folder / "scratch.ipynb").write_text("{}")  # not numbered: not part of the course
    return folder


def test_runs_in_order_and_stops_at_the_first_failure(course_dir, tmp_path):
    assert [p.name for p in course_notebooks(course_dir)] == [
        "00_first.ipynb",
        "01_broken.ipynb",
        "02_never.ipynb",
    ]
    out = tmp_path / "out"
    # Cell 4 of the executed copy: papermill adds its injected-parameters cell.
    with pytest.raises(
        HybridError, match=r"01_broken\.ipynb failed in cell 4 \(ValueError: boom\)"
    ):
        run_course(out=out, notebooks_dir=course_dir, overrides={"message": "injected"})
    first = nbformat.read(out / "notebooks" / "00_first.ipynb", as_version=4)
    assert first.cells[-1].outputs[0]["text"] == "injected\n"  # the override reached it
    assert (out / "notebooks" / "01_broken.ipynb").exists()  # kept for reading the error
    assert not (out / "notebooks" / "02_never.ipynb").exists()


def test_only_selects_by_number_and_rejects_unknown_prefixes(course_dir):
    assert [p.name for p in course_notebooks(course_dir, ["02"])] == ["02_never.ipynb"]
    with pytest.raises(HybridError, match="--only 7 matches no notebook"):
        course_notebooks(course_dir, ["7"])


def test_unknown_profile_is_refused(course_dir):
    with pytest.raises(HybridError, match="unknown profile 'huge'"):
        run_course("huge", notebooks_dir=course_dir)
