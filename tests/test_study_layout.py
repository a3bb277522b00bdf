"""The study's modules build on the core one way: plots draws, the study reads runs.

`hybridlib.plots` (core) draws what it is given and imports nothing of the study,
the engine or the tools; the study's modules import each other without a cycle,
at the top of the file, and keep their functions short enough to read at once.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hybridlib.study import results

ROOT = Path(__file__).resolve().parents[1]
STUDY = sorted((ROOT / "hybridlib" / "study").glob("*.py"))
PLOTS = ROOT / "hybridlib" / "plots.py"


def _imports(path: Path) -> list[tuple[str, ast.AST]]:
    """(imported module, the import node) for every import in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, node) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, node))
    return found


def test_plots_imports_only_the_core():
    for module, _ in _imports(PLOTS):
        assert not module.startswith(("hybridlib.study", "hybridlib.engine", "hybridlib.tools"))
    # and importing it loads none of them
    code = "import json, sys, hybridlib.plots; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = [m for m in json.loads(done.stdout) if m.startswith("hybridlib.")]
    assert loaded and not [m for m in loaded if m.split(".")[1] in ("study", "engine", "tools")]


def test_study_modules_form_no_cycle():
    graph = {}
    for path in STUDY:
        name = f"hybridlib.study.{path.stem}"
        graph[name] = {m for m, _ in _imports(path) if m.startswith("hybridlib.study.")}
        assert not [m for m, _ in _imports(path) if m.startswith("hybridlib.tools")], name
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name in done:
            return
        for module in graph.get(name, ()):
            visit(module, (*path, name))
        done.add(name)

    for name in graph:
        visit(name, ())


@pytest.mark.parametrize("path", [*STUDY, PLOTS], ids=lambda p: p.name)
def test_no_import_inside_a_function_and_no_long_function(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= 60, f"{path.name}: {node.name} is {length} lines; name its steps"
            inner = [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
            assert not inner, f"{path.name}: {node.name} imports at line {inner[0].lineno}"


def test_results_keeps_the_names_notebooks_use():
    names = ["LABELS", "PAPER_A", "PAPER_B", "RUN_COLUMNS", "TABLES", "compare_pairs"]
    names += ["compare_recipes", "complete_runs", "dataset_labels", "find_run_dirs"]
    names += ["paper_table", "read_runs", "wide_table", "write_tables", "cli_results"]
    for name in names:
        assert name in results.__all__ and hasattr(results, name), name
