"""The course's website in a real browser: every page, figure and link, both editions.

The site is built (`hybridlib.tools.site.build_site`) from the course that
test_notebooks executed in this session (or, run alone, from a fresh run of it),
served by `python -m http.server` on 127.0.0.1 and opened page by page in headless
Chromium (the system's, through Playwright, as in test_browser). Every page must
load with no console error and no failed request; every figure the executed notebook
holds must be on its page, decoded, with a non-zero size; every link between pages
must resolve; no solution may reach a student page or a student download. A
screenshot of the landing page goes to `test-artifacts/site-index.png`.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urldefrag, urljoin

import nbformat
import pytest
from test_browser import ARTIFACTS, CHROMIUM_ARGS, VIEWPORT, _chromium, _free_port, _unavailable
from test_notebooks import NOTEBOOKS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PAGE_LOAD_S = 60
SERVER_START_S = 30

IMAGES_JS = """async () => {
    const images = [...document.querySelectorAll('img')];
    return await Promise.all(images.map(async (img) => {
        img.loading = 'eager';
        try { await img.decode(); } catch (e) {}
        return {src: img.getAttribute('src'), width: img.naturalWidth,
                height: img.naturalHeight, output: !!img.closest('.cell_output')};
    }));
}"""
MATH_JS = "() => document.querySelectorAll('.MathJax, .MathJax_Display').length > 0"
LINKS_JS = "() => [...document.querySelectorAll('a[href]')].map(a => a.href)"


@pytest.fixture(scope="module")
def site(course, tmp_path_factory):
    """The built site (its html folder) and the executed notebooks it was built from."""
    from hybridlib.tools.site import build_site

    executed = course.out / "notebooks"
    if any(course.reference(path) is None for path in NOTEBOOKS):
        from hybridlib.tools.course import run_course

        with pytest.MonkeyPatch.context() as patch:
            for name, value in course.env.items():
                patch.setenv(name, value)
            run_course(profile="quick", out=course.out, run_solutions=True)
        course.finished = True
    html = build_site(executed, tmp_path_factory.mktemp("site"))
    return html, executed


@pytest.fixture(scope="module")
def server(site):
    html, _ = site
    port = _free_port()
    command = [sys.executable, "-m", "http.server", str(port), "-b", "127.0.0.1", "-d", html]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                with urllib.request.urlopen(base, timeout=5):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the site's server did not answer on {base}")
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


def _solution_lines(nb) -> list[str]:
    """Distinctive lines of the notebook's solutions (code lines and answer sentences)."""
    elsewhere = "\n".join(  # the rest of the notebook, where a line may appear as well
        cell.source for cell in nb.cells if "solution" not in cell.metadata.get("tags", [])
    )
    lines = []
    for cell in nb.cells:
        if "solution" not in cell.metadata.get("tags", []):
            continue
        if cell.cell_type == "code":
            source = cell.source
            if "### BEGIN SOLUTION" in source:
                source = source.split("### BEGIN SOLUTION", 1)[1].split("### END SOLUTION")[0]
            candidates = [line.strip() for line in source.splitlines()]
        else:  # an answer: its runs of plain words, as the page's text shows them
            candidates = re.findall(r"[A-Za-z][A-Za-z ,]{40,}", cell.source)
        lines += [
            text.strip()
            for text in candidates
            if len(text.strip()) >= 25 and text.strip() not in elsewhere
        ]
    return lines


def test_the_site_in_chromium(site, server):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed: pip install -e '.[dev]'")
    chromium = _chromium()
    html, executed = site
    pages = sorted(  # the site's pages, not the theme's templates under _static/
        path.as_posix()
        for path in (p.relative_to(html) for p in html.rglob("*.html"))
        if not path.parts[0].startswith("_")
    )
    editions = ("instructor", "student")
    expected = {f"{edition}/{p.stem}.html" for p in NOTEBOOKS for edition in editions}
    assert expected | {"index.html", "study/index.html"} <= set(pages), pages

    problems: list[str] = []
    links: set[str] = set()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(viewport=VIEWPORT)
        try:
            for name in pages:
                page = context.new_page()
                page.on(
                    "console",
                    lambda m, name=name: (
                        m.type == "error" and problems.append(f"{name}: console error: {m.text}")
                    ),
                )
                page.on(
                    "response",
                    lambda r, name=name: (
                        r.status >= 400 and problems.append(f"{name}: {r.status} for {r.url}")
                    ),
                )
                page.on("pageerror", lambda e, name=name: problems.append(f"{name}: {e}"))
                page.on(
                    "requestfailed",
                    lambda r, name=name: problems.append(f"{name}: request failed: {r.url}"),
                )
                response = page.goto(urljoin(server, name), timeout=PAGE_LOAD_S * 1000)
                assert response is not None and response.ok, f"{name}: {response}"
                page.wait_for_load_state("networkidle", timeout=PAGE_LOAD_S * 1000)
                if page.locator(".math").count():  # MathJax typesets the formulas
                    page.wait_for_function(MATH_JS, timeout=PAGE_LOAD_S * 1000)
                images = page.evaluate(IMAGES_JS)
                for image in images:
                    if image["width"] == 0 or image["height"] == 0:
                        problems.append(f"{name}: image {image['src']} has no size")
                stem = Path(name).stem
                edition = Path(name).parent.name
                if edition in ("instructor", "student"):
                    _check_notebook_page(page, executed / f"{stem}.ipynb", edition, images)
                if name == "index.html":
                    ARTIFACTS.mkdir(exist_ok=True)
                    page.screenshot(path=str(ARTIFACTS / "site-index.png"), full_page=True)
                links.update(page.evaluate(LINKS_JS))
                page.close()
        finally:
            browser.close()
    assert not problems, "\n".join(problems[:40])

    internal = {urldefrag(link).url for link in links if link.startswith(server)}
    broken = []
    for link in sorted(internal):
        try:
            with urllib.request.urlopen(link, timeout=10) as answer:
                if answer.status != 200:
                    broken.append(f"{link}: {answer.status}")
        except OSError as error:
            broken.append(f"{link}: {error}")
    assert not broken, "\n".join(broken)
    downloads = [link for link in internal if "/_downloads/" in link]
    assert len(downloads) == 2 * len(NOTEBOOKS), downloads  # both editions of each notebook
    for link in downloads:
        with urllib.request.urlopen(link, timeout=10) as answer:
            nb = nbformat.reads(answer.read().decode(), as_version=4)
        assert not any(cell.get("outputs") for cell in nb.cells), f"{link} has outputs"
        if nb.metadata["hybridlib"]["edition"] == "student":
            source = "\n".join(cell.source for cell in nb.cells)
            assert "BEGIN SOLUTION" not in source, link


def _check_notebook_page(page, executed_path: Path, edition: str, images: list[dict]) -> None:
    """The page shows the executed notebook's figures, and a student page no solution."""
    executed = nbformat.read(executed_path, as_version=4)
    figures = 0
    for cell in executed.cells:
        if cell.cell_type != "code":
            continue
        if edition == "student" and "solution" in cell.metadata.get("tags", []):
            continue  # a student page keeps the stub only
        figures += sum("image/png" in (o.get("data") or {}) for o in cell.outputs)
    shown = [image for image in images if image["output"]]
    assert len(shown) == figures, (
        f"{edition}/{executed_path.stem}: {len(shown)} figures on the page, "
        f"{figures} in the executed notebook"
    )
    text = page.locator("article").first.text_content()  # folded cells too
    solutions = _solution_lines(executed)
    solution_cells = page.locator(".tag_solution").count()
    if edition == "student":
        leaked = [line for line in solutions if line in text]
        assert not leaked, f"student/{executed_path.stem} shows solutions: {leaked[:5]}"
        assert solution_cells == 0, f"student/{executed_path.stem}: {solution_cells}"
    elif any("solution" in c.metadata.get("tags", []) for c in executed.cells):
        # Folded solutions are in the page (the check above could find them).
        assert solution_cells > 0, f"instructor/{executed_path.stem} has no solution"
        assert any(line in text for line in solutions), f"instructor/{executed_path.stem}"
