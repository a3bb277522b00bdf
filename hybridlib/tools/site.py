"""The course as a static website: both editions, executed, with the results study.

    python3 make.py site                          # run the course, then build build/site/
    python -m hybridlib site --executed DIR       # build from notebooks executed already
    python -m http.server -d build/site/html -b 127.0.0.1 8000   # then open it

The course runs once (quick profile, with the solutions' extra runs, as the tests run
it); notebook 08 presents the committed study in results/. Sphinx with myst-nb renders
the executed notebooks as they are (it runs nothing) with sphinx-book-theme, the theme
Jupyter Book uses: navigation, full-text search and math with no network at build or
reading time. Each notebook becomes two pages:

* the instructor edition: the executed notebook, its solutions folded behind a toggle;
* the student edition: the same page through `editions.student_edition`, every exercise
  cell an empty stub with no output, so the page shows what the course's own cells
  print and no solution.

Each page links to the other edition and to both clean notebooks (no outputs) to
download. Notebook 09's dashboard needs a live kernel, so its page shows a recorded
picture instead. The site goes to `<out>/html/` (default `build/site/`).
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

from hybridlib.errors import HybridError
from hybridlib.tools import editions
from hybridlib.tools.course import NOTEBOOKS_DIR, course_notebooks, run_course

REPO = NOTEBOOKS_DIR.parent
TEMPLATE = REPO / "docs" / "site"  # conf.py and the landing page
DEFAULT_OUT = REPO / "build" / "site"
WIDGET = "application/vnd.jupyter.widget-view+json"
DASHBOARD = "09_interactive_tuning"
DASHBOARD_PICTURES = REPO / "figures" / "dashboard"
# Each results grid: its folder in results/ and a heading for its page.
GRIDS = {
    "paper-a": "Paper A, Table I at the paper's settings",
    "paper-a-improved": "Paper A with the improved recipe",
    "improved-vs-paper": "The improved recipe against the paper's, cell by cell",
    "paper-b": "Paper B, Table 1 at its stated settings",
    "paper-a-cpu-bf16": "One cell in bf16 on the CPU",
    "cpu-bf16-vs-fp32": "That cell in bf16 against fp32",
}


def _title(nb) -> str:
    first = nb.cells[0].source.splitlines()[0] if nb.cells else ""
    return first.lstrip("#").strip() or "untitled"


def _static_outputs(nb) -> None:
    """Drop what needs a live kernel: widget views (their text fallback stays).

    A cell that showed a widget is marked `site_widget` in its metadata.
    """
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.outputs:
            data = output.get("data")
            if data and WIDGET in data:
                del data[WIDGET]
                cell.metadata["site_widget"] = True
                if not data:
                    continue
            kept.append(output)
        cell.outputs = kept


def _banner(stem: str, edition: str) -> str:
    """The note under a page's title: which edition, the other one, the downloads."""
    other = "student" if edition == "instructor" else "instructor"
    about = {
        "instructor": "every solution is here, folded: a cell's toggle opens it",
        "student": "the exercises are left for you, with no solution; the other cells show "
        "what the course's own run printed",
    }[edition]
    return (
        f":::{{note}}\n**{edition.capitalize()} edition**: {about}. "
        f"[The {other} edition of this page](../{other}/{stem}.ipynb). "
        f"Download the notebook to run it: "
        f"{{download}}`student edition <../downloads/student/{stem}.ipynb>`, "
        f"{{download}}`instructor edition <../downloads/instructor/{stem}.ipynb>`.\n:::\n"
    )


def _dashboard_note() -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(
        "```{note}\nThe dashboard of this notebook needs a running Python kernel, which a "
        "static page does not have: its buttons and sliders do nothing here. This is how "
        "it looks in JupyterLab after two short training runs (a picture the browser "
        "test records as it drives the dashboard):\n\n"
        "![The tuning dashboard after a run](dashboard_after.png)\n\n"
        "To use it live: `python3 make.py course` once (it installs everything), then "
        "`.venv/bin/jupyter lab notebooks/09_interactive_tuning.ipynb`.\n```",
    )


def site_page(executed, edition: str, stem: str):
    """One executed notebook as the site shows it in `edition` ("student" or "instructor")."""
    nb = copy.deepcopy(executed)
    _static_outputs(nb)
    # papermill's cell of injected parameters holds this machine's paths: not for readers
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    if edition == "student":
        nb = editions.student_edition(nb)
        for cell in nb.cells:
            if cell.cell_type == "code" and "exercise" in cell.metadata.get("tags", []):
                cell.outputs, cell.execution_count = [], None
        nb.cells[0].source = nb.cells[0].source.replace(_title(nb), f"{_title(nb)} (student)", 1)
    else:
        for cell in nb.cells:
            tags = cell.metadata.get("tags", [])
            if cell.cell_type == "code" and "solution" in tags:
                cell.metadata["tags"] = [*tags, "hide-input"]
    title, _, rest = nb.cells[0].source.partition("\n")
    nb.cells[0].source = f"{title}\n\n{_banner(stem, edition)}\n{rest.lstrip()}"
    if stem == DASHBOARD:  # the picture goes where the dashboard would be
        shown = [i for i, c in enumerate(nb.cells) if c.metadata.pop("site_widget", False)]
        nb.cells.insert(shown[0] if shown else 1, _dashboard_note())
    for cell in nb.cells:
        cell.metadata.pop("site_widget", None)
    return nb


def _course_map(stems: list[str], titles: dict[str, str]) -> str:
    rows = ["| notebook | instructor edition | student edition |", "| --- | --- | --- |"]
    for stem in stems:
        rows.append(
            f"| {titles[stem]} | [with solutions](instructor/{stem}.ipynb) "
            f"| [exercises](student/{stem}.ipynb) |"
        )
    return "\n".join(rows) + "\n"


def _grid_page(grid: str, heading: str) -> str:
    folder = REPO / "results" / grid
    figures = REPO / "figures" / "results" / grid
    parts = [f"# {heading}\n", f"The files of `results/{grid}/`, as committed.\n"]
    tables = [p for pattern in ("*_table.md", "*_recipes.md", "*_precision.md")
              for p in sorted(folder.glob(pattern))]  # fmt: skip
    for table in tables:
        parts.append(f"```{{include}} ../results/{grid}/{table.name}\n:start-line: 2\n```\n")
    if (figures / "table.png").exists():
        parts.append(f"![The table as dots](../figures/results/{grid}/table.png)\n")
    for tests in sorted(folder.glob("*_tests.md")):
        parts.append(
            f"## Tests between the models\n\n```{{include}} ../results/{grid}/"
            f"{tests.name}\n:start-line: 2\n```\n"
        )
    curves = sorted(figures.glob("curves-*.png"))
    if curves:
        parts.append("## Loss and accuracy curves\n")
        parts += [f"![{p.stem}](../figures/results/{grid}/{p.name})\n" for p in curves]
    return "\n".join(parts)


def write_source(executed_dir: Path, src: Path) -> list[str]:
    """The Sphinx source tree in `src` (replaced); returns the notebooks' stems."""
    executed_dir = Path(executed_dir)
    notebooks = course_notebooks(NOTEBOOKS_DIR)
    missing = [p.name for p in notebooks if not (executed_dir / p.name).exists()]
    if missing:
        raise HybridError(
            f"{executed_dir} lacks the executed {', '.join(missing)}; run the course first "
            "(python -m hybridlib course --solutions --out DIR) or leave out --executed"
        )
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(TEMPLATE, src, ignore=shutil.ignore_patterns("__pycache__"))
    editions.make_editions(src / "downloads")  # the clean notebooks to download
    stems, titles = [], {}
    for path in notebooks:
        executed = nbformat.read(executed_dir / path.name, as_version=4)
        stems.append(path.stem)
        titles[path.stem] = _title(executed)
        for edition in editions.EDITIONS:
            (src / edition).mkdir(exist_ok=True)
            nbformat.write(site_page(executed, edition, path.stem), src / edition / path.name)
    for picture in DASHBOARD_PICTURES.glob("*.png"):
        for edition in editions.EDITIONS:
            shutil.copy(picture, src / edition / picture.name)
    (src / "_course_map.md").write_text(_course_map(stems, titles))
    # The study: its README, each grid's tables and figures (text and pictures only).
    shutil.copytree(REPO / "results", src / "results", ignore=shutil.ignore_patterns("runs"))
    shutil.copytree(REPO / "figures", src / "figures")
    (src / "study").mkdir()
    shutil.copy(REPO / "results" / "README.md", src / "study" / "index.md")
    for grid, heading in GRIDS.items():
        if (REPO / "results" / grid).is_dir():
            (src / "study" / f"{grid}.md").write_text(_grid_page(grid, heading))
    with open(src / "study" / "index.md", "a") as readme:
        readme.write("\n```{toctree}\n:hidden:\n\n" + "\n".join(GRIDS) + "\n```\n")
    return stems


def build_site(executed: str | Path | None = None, out: str | Path = DEFAULT_OUT) -> Path:
    """Execute the course (unless `executed` names its executed notebooks) and build the site.

    Args:
        executed: folder of executed notebooks (e.g. `<course out>/notebooks`); None runs
            the course first, quick profile with the solutions' runs, into `<out>/course`.
        out: folder for the source tree (`src/`) and the site (`html/`).
    Returns:
        The folder of the built site (`<out>/html`), whose index.html is the landing page.
    Raises:
        HybridError: the course or Sphinx failed (with Sphinx's warnings).
    """
    out = Path(out).expanduser().resolve()
    started = time.perf_counter()
    if executed is None:
        executed = run_course("quick", out / "course", run_solutions=True) / "notebooks"
    src, html = out / "src", out / "html"
    tic = time.perf_counter()
    write_source(Path(executed), src)
    if html.exists():
        shutil.rmtree(html)
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-W", "--keep-going"]
    result = subprocess.run(
        [*command, "-d", str(out / "doctrees"), str(src), str(html)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise HybridError(f"Sphinx could not build the site:\n{result.stderr[-4000:]}")
    size = sum(p.stat().st_size for p in html.rglob("*") if p.is_file())
    print(
        f"Site built in {time.perf_counter() - tic:.0f} s (with the course: "
        f"{time.perf_counter() - started:.0f} s), {size / 1e6:.0f} MB: {html / 'index.html'}\n"
        f"Serve it: python -m http.server -d {html} -b 127.0.0.1 8000",
        flush=True,
    )
    return html


def cli_site(args) -> int:
    build_site(args.executed, args.out)
    return 0
