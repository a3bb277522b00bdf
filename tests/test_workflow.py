"""The GitHub Actions workflow a teacher's repository runs (`.github/workflows/course.yml`).

It cannot run here, so it is checked as far as it can be without GitHub: against the
workflow schema (check-jsonschema's copy, no network), and for doing what the README
promises: the README's install commands, the version matrix, the course under papermill
and nbval, the site kept and published.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import require_everything

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "course.yml"
CHECK = Path(sys.executable).with_name("check-jsonschema")


def _validate(path: Path) -> subprocess.CompletedProcess:
    command = [str(CHECK), "--builtin-schema", "vendor.github-workflows", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _steps(job: dict) -> str:
    return "\n".join(step.get("run", "") + step.get("uses", "") for step in job["steps"])


def test_the_workflow_passes_the_github_workflow_schema(tmp_path):
    result = _validate(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr
    # the check is not vacuous: a job without `runs-on` or `steps` is rejected
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on:", "runs_on:"))
    assert _validate(broken).returncode != 0


def test_the_workflow_installs_tests_runs_the_course_and_publishes_the_site():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    jobs = workflow["jobs"]
    assert "python3 make.py test" in _steps(jobs["test"])  # the README's test command
    matrix = jobs["test"]["strategy"]["matrix"]["include"]
    stacks = {(entry["python"], entry["stack"]) for entry in matrix}
    assert {("3.10", "oldest"), ("3.13", "newest")} <= stacks
    assert jobs["test"]["env"]["HYBRIDLIB_STACK"] == "${{ matrix.stack }}"
    course = _steps(jobs["course"])
    assert "python3 make.py course" in course and "--nbval-lax" in course
    assert "python3 make.py site" in course and "actions/upload-pages-artifact" in course
    assert "actions/upload-artifact" in course  # the executed notebooks and figures
    pages = jobs["pages"]
    assert "actions/deploy-pages" in _steps(pages)
    assert "default_branch" in pages["if"] and pages["permissions"]["pages"] == "write"


def test_the_readme_says_how_to_run_the_course_in_ci_with_parameters():
    readme = (ROOT / "README.md").read_text()
    assert ".github/workflows/course.yml" in readme
    assert "-p epochs" in readme  # papermill parameters through `course -p`


@pytest.mark.parametrize(
    "env, required",
    [
        ({}, False),
        ({"CI": "true"}, True),
        ({"CI": "true", "HYBRIDLIB_REQUIRE_TEST_DATA": "0"}, False),
        ({"HYBRIDLIB_REQUIRE_TEST_DATA": "1"}, True),
    ],
)
def test_a_missing_data_folder_fails_in_ci_unless_the_workflow_says_otherwise(
    monkeypatch, env, required
):
    for name in ("CI", "HYBRIDLIB_REQUIRE_TEST_DATA"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert require_everything() is required
    # the workflow sets the variable, so a fork without the data sets skips, says why
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert "vars.HYBRIDLIB_TEST_DATA" in workflow["env"]["HYBRIDLIB_REQUIRE_TEST_DATA"]
