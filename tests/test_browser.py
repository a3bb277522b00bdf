"""Notebook 09 in a real browser: JupyterLab, headless Chromium, the dashboard trains.

The test starts JupyterLab on 127.0.0.1 (a free port, a random token, its own
temporary config, data and runs folders) from this Python, so its kernel is this
environment's, with ipywidgets. Playwright drives Debian's system `chromium` (no
browser is downloaded): it opens a copy of notebook 09, runs all cells, sets the
epochs through the widget, presses Train, waits for the curves and the test accuracy,
and saves screenshots to `test-artifacts/` at the repository root. The window is a
1280x800 laptop screen: the dashboard must fit it (at most 800 px tall) and every column
header of the runs table must lie inside it; screenshots of the dashboard before and
after its runs go to `figures/dashboard/` (palette PNGs, under 150 KB each). The server
is stopped at the end, also when the test fails.

Without Chromium (`apt-get install chromium`, which `python3 make.py test` does when
it can) or Playwright, the test skips and says why; in CI (`CI` or
`HYBRIDLIB_REQUIRE_TEST_DATA` set) it fails instead.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import require_everything
from PIL import Image  # matplotlib's dependency, so always there

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "09_interactive_tuning.ipynb"
ARTIFACTS = ROOT / "test-artifacts"
FIGURES = ROOT / "figures" / "dashboard"
VIEWPORT = {"width": 1280, "height": 800}  # a laptop screen
MAX_PNG_BYTES = 150_000  # the committed screenshots stay small
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EPOCHS = (1, 2)  # two runs, set through the widget; the notebook starts with 3

# Timeouts (seconds): every wait is bounded.
SERVER_START_S = 90
PAGE_LOAD_S = 120
RUN_ALL_S = 300  # Run All: every cell, the solutions' extra runs skipped (run_solutions False)
TRAIN_S = 240


def _unavailable(reason: str):
    if require_everything():
        pytest.fail(f"the browser test must run in CI, but {reason}")
    pytest.skip(reason)


def _chromium() -> str:
    """The browser: `$HYBRIDLIB_CHROMIUM` (a path or a command name) if set, else Chromium."""
    for name in (os.environ.get("HYBRIDLIB_CHROMIUM"), "chromium", "chromium-browser"):
        if not name:
            continue
        path = shutil.which(name)
        if path:
            return path
    _unavailable(
        "Chromium is not installed: install Debian's 'chromium' package "
        "(apt-get install chromium; `python3 make.py test` does it when run as root)"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_lab_settings(folder: Path) -> None:
    """No news or update pop-ups (they would ask for the network and cover the page)."""
    target = folder / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))


@pytest.fixture()
def lab_server(tmp_path):
    """JupyterLab on a copy of the notebooks; yields (base URL, token); always stopped."""
    notebooks = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", notebooks)
    token = secrets.token_hex(24)
    port = _free_port()
    jupyter = tmp_path / "jupyter"
    settings = jupyter / "lab-settings"
    _write_lab_settings(settings)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(jupyter / "config"),
        "JUPYTER_DATA_DIR": str(jupyter / "data"),
        "JUPYTER_RUNTIME_DIR": str(jupyter / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(jupyter / "workspaces"),
        "HYBRIDLIB_DATA": str(tmp_path / "data"),
        "HYBRIDLIB_RUNS": str(tmp_path / "runs"),
        "MPLBACKEND": "agg",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        # One thread: on a CPU shared with other work, more threads spin and crawl.
        "OMP_NUM_THREADS": "1",
    }
    log_path = tmp_path / "jupyterlab.log"
    command = [
        sys.executable,  # this environment's jupyter, so the kernel has ipywidgets
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={notebooks}",
        "--ServerApp.allow_root=True",  # containers and CI often run as root
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp, to run commands
        "--LabApp.news_url=None",
    ]
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so teardown can end it all
        )
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited with {server.returncode}:\n{_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"JupyterLab did not answer within {SERVER_START_S} s:\n{_tail(log_path)}"
                    )
                time.sleep(0.5)
        yield base, token, log_path
    finally:
        _stop_server(server)


def _stop_server(server: subprocess.Popen) -> None:
    """SIGTERM (the server shuts its kernels down), then SIGKILL to the group if needed."""
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(server.pid, signal.SIGKILL)  # anything left in its process group
    except (ProcessLookupError, PermissionError):
        pass
    if server.poll() is None:
        server.wait(timeout=10)


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


NOTEBOOK_JS = "window.jupyterapp && window.jupyterapp.shell.currentWidget"
KERNEL_IDLE_JS = f"""() => {{
    const nb = {NOTEBOOK_JS};
    const kernel = nb && nb.sessionContext && nb.sessionContext.session
        && nb.sessionContext.session.kernel;
    return !!kernel && kernel.status === 'idle';
}}"""
ALL_RAN_JS = f"""() => {{
    const nb = {NOTEBOOK_JS};
    if (!nb || !nb.content) return false;
    const kernel = nb.sessionContext.session && nb.sessionContext.session.kernel;
    const code = nb.content.widgets.filter(cell => cell.model.type === 'code');
    return !!kernel && kernel.status === 'idle' && code.length > 0
        && code.every(cell => cell.model.executionCount !== null);
}}"""
RUNS_SHOWN_JS = """(runs) => {
    const rows = document.querySelectorAll('.hybridlib-runs-table tbody tr').length;
    const train = document.querySelector('.hybridlib-train');
    return rows === runs && !!train && !train.disabled;
}"""
PLOT_SHOWN_JS = """() => {
    const img = document.querySelector('img.hybridlib-plot');
    return !!img && img.complete && img.naturalWidth > 0 && img.offsetParent !== null;
}"""


BOX_JS = """(element) => {
    const box = element.getBoundingClientRect();
    return {x: box.x, y: box.y, width: box.width, height: box.height};
}"""


def _inside(inner: dict, outer: dict) -> bool:
    return (
        inner["x"] >= outer["x"] - 0.5
        and inner["y"] >= outer["y"] - 0.5
        and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + 0.5
        and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + 0.5
    )


def _assert_fits_the_screen(page, dashboard) -> None:
    """The whole dashboard is at most as tall and as wide as the window."""
    box = dashboard.evaluate(BOX_JS)
    assert box["height"] <= VIEWPORT["height"], f"the dashboard is {box['height']:.0f} px tall"
    assert box["x"] >= 0 and box["x"] + box["width"] <= VIEWPORT["width"], box


def _assert_every_column_in_view(page, dashboard) -> None:
    """Each header of the runs table lies inside the window and inside its scroll box."""
    runs = dashboard.locator(".hybridlib-runs")
    runs.scroll_into_view_if_needed()
    window = {"x": 0, "y": 0, **VIEWPORT}
    scroll_box = runs.locator("table.hybridlib-runs-table").locator("xpath=..").evaluate(BOX_JS)
    headers = runs.locator("table.hybridlib-runs-table thead th")
    names = headers.all_inner_texts()
    assert "test acc" in names and "s" in names, names  # the results, up to the time
    for index, name in enumerate(names):
        box = headers.nth(index).evaluate(BOX_JS)
        assert box["width"] > 0 and _inside(box, window), f"column {name!r} at {box}"
        assert _inside(box, scroll_box), f"column {name!r} hidden in the scroll box {scroll_box}"


def _save_screenshot(locator, path: Path) -> None:
    """An element's screenshot as a palette PNG (a few tens of KB instead of hundreds)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.open(io.BytesIO(locator.screenshot())).convert("RGB")
    image.quantize(colors=128).save(path, optimize=True)
    assert path.stat().st_size < MAX_PNG_BYTES, f"{path} is {path.stat().st_size:,} bytes"


def test_dashboard_trains_in_jupyterlab(lab_server):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed: pip install -e '.[dev]'")
    chromium = _chromium()
    base, token, log_path = lab_server
    ARTIFACTS.mkdir(exist_ok=True)
    profile = log_path.parent / "chromium-profile"  # a fresh user-data-dir

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,
        )
        page = browser.new_page()
        try:
            page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}", timeout=PAGE_LOAD_S * 1000)
            page.wait_for_function(KERNEL_IDLE_JS, timeout=PAGE_LOAD_S * 1000)
            page.evaluate("window.jupyterapp.shell.collapseLeft()")  # more room for the page

            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            dashboard = page.locator(".hybridlib-dashboard")
            dashboard.wait_for(state="visible", timeout=RUN_ALL_S * 1000)
            page.wait_for_function(ALL_RAN_JS, timeout=RUN_ALL_S * 1000, polling=500)
            errors = page.locator('[data-mime-type="application/vnd.jupyter.error"]')
            assert errors.count() == 0, f"a cell failed:\n{errors.first.inner_text()}"
            # Run all ends at the notebook's bottom; off-screen cells are not rendered.
            dashboard.scroll_into_view_if_needed()
            status = dashboard.locator(".hybridlib-status")
            page.wait_for_function(
                "(e) => e.innerText.includes('press Train')",
                arg=status.element_handle(),
                timeout=30_000,
            )
            assert "CPU cores" in dashboard.locator(".hybridlib-device").inner_text()
            _assert_fits_the_screen(page, dashboard)
            _save_screenshot(dashboard, FIGURES / "dashboard_before.png")

            # Small settings through the widget, as a student would type them: one run of
            # one epoch, then one of two, so the runs table has a comparison to show.
            for run, epochs in enumerate(EPOCHS, start=1):
                field = dashboard.locator(".hybridlib-epochs input")
                field.fill(str(epochs))
                field.press("Enter")
                dashboard.locator(".hybridlib-train").click()
                page.wait_for_function(RUNS_SHOWN_JS, arg=run, timeout=TRAIN_S * 1000, polling=250)
                result = dashboard.locator(".hybridlib-result").inner_text()
                assert "test accuracy" in result, result
                assert f"{epochs} epoch(s)" in result, result  # the value reached the kernel
                status = dashboard.locator(".hybridlib-status").inner_text()
                assert status.startswith("Done: test accuracy"), status
            page.wait_for_function(PLOT_SHOWN_JS, timeout=30_000)
            assert "Traceback" not in dashboard.inner_text()
            assert dashboard.locator("img.hybridlib-confusion").is_visible()
            assert dashboard.locator(".hybridlib-train").is_enabled()

            _assert_fits_the_screen(page, dashboard)
            _assert_every_column_in_view(page, dashboard)
            _save_screenshot(dashboard, FIGURES / "dashboard_after.png")
            dashboard.screenshot(path=str(ARTIFACTS / "09_dashboard.png"))
            page.screenshot(path=str(ARTIFACTS / "09_jupyterlab.png"))
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "09_failure.png"))
            print(f"JupyterLab log:\n{_tail(log_path)}")
            raise
        finally:
            browser.close()
