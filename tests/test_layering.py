"""The package's layers, enforced: what a student reads stays apart from the machinery.

hybridlib/*.py is the teaching core (data sets, models, the written-out loop, plots);
hybridlib/engine (resumable, distributed, graph-captured runs), hybridlib/study (grids,
tables, their tests and figures) and hybridlib/tools (command line, course runner,
dashboard, diagrams, bench) build on it. Imports go one way,
tools -> study -> engine -> core, with no cycles, and none hidden inside a function
(an optional or slow-to-import dependency may be, with a comment saying why).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hybridlib"
LAYERS = {"core": 0, "engine": 1, "study": 2, "tools": 3}
MAX_FUNCTION_LINES = 60  # code lines, docstring excluded
MAX_CORE_LINES = 4500  # "a few thousand lines at most" (exercises.py and the option table included)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text()) for name, path in MODULES.items()}


def _layer(module: str) -> str:
    if module == "hybridlib.__main__":  # `python -m hybridlib`: the command line's entry
        return "tools"
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in LAYERS else "core"


def _imported(node: ast.AST, module: str) -> list[str]:
    """The hybridlib modules an import statement names."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "hybridlib"]
    if not isinstance(node, ast.ImportFrom) or node.module is None and node.level == 0:
        return []
    if node.level:  # relative: resolve against the importing module's package
        base = (
            module.split(".")[: -node.level]
            if not MODULES[module].name == "__init__.py"
            else module.split(".")
        )
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module
    if target.split(".")[0] != "hybridlib":
        return []
    names = [f"{target}.{a.name}" for a in node.names]
    return [n if n in MODULES else target for n in names]


def _top_level_imports(module: str) -> set[str]:
    found = set()
    for node in TREES[module].body:
        if isinstance(node, ast.If):  # `if TYPE_CHECKING:` blocks
            nodes = node.body + node.orelse
        else:
            nodes = [node]
        for n in nodes:
            found.update(m for m in _imported(n, module) if m in MODULES and m != module)
    return found


GRAPH = {m: _top_level_imports(m) for m in MODULES}


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_one_way(module):
    here = LAYERS[_layer(module)]
    upward = sorted(m for m in GRAPH[module] if LAYERS[_layer(m)] > here)
    assert not upward, f"{module} ({_layer(module)}) imports {upward}, a layer above it"


def test_no_import_cycles():
    # Tarjan's strongly connected components over the top-level import graph
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_imports_hidden_in_functions(module):
    lines = MODULES[module].read_text().splitlines()
    hidden = []
    for function in _functions(TREES[module]):
        for node in ast.walk(function):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            if _imported(node, module):
                hidden.append(f"line {node.lineno}: {lines[node.lineno - 1].strip()}")
            elif "#" not in lines[node.lineno - 1] and "#" not in lines[node.lineno - 2]:
                hidden.append(
                    f"line {node.lineno} (no comment saying why): {lines[node.lineno - 1].strip()}"
                )
    assert not hidden, f"{module} imports inside functions:\n" + "\n".join(hidden)


def _code_lines(function) -> int:
    body = function.body
    first = body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        body = body[1:]
    if not body:
        return 0
    return body[-1].end_lineno - body[0].lineno + 1


@pytest.mark.parametrize("module", sorted(MODULES))
def test_functions_fit_on_a_screen(module):
    long = [
        f"{f.name} (line {f.lineno}): {_code_lines(f)} lines"
        for f in _functions(TREES[module])
        if _code_lines(f) > MAX_FUNCTION_LINES
    ]
    assert not long, f"{module}: split into named steps: {long}"


def test_the_teaching_core_stays_small():
    core = {m: p for m, p in MODULES.items() if _layer(m) == "core"}
    total = sum(len(p.read_text().splitlines()) for p in core.values())
    assert total <= MAX_CORE_LINES, f"the core has {total} lines ({sorted(core)})"


def test_the_tools_find_the_repository():
    """Modules moved into sub-packages still find the notebooks and the figures folder."""
    from hybridlib.tools import course, diagrams

    assert len(course.course_notebooks()) == 10, course.NOTEBOOKS_DIR
    assert diagrams._default_out() == PACKAGE.parent / "figures" / "architectures"
