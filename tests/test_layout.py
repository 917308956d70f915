"""The package's shape: no import cycle between the bundle's modules (imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "bundle" / "scripts"


def module_name(path: Path) -> str:
    parts = ["scripts", *path.relative_to(SCRIPTS).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The bundle modules that ``path`` imports anywhere in its code (``from scripts.x import y`` counts
    ``scripts.x.y`` when that is a module, else ``scripts.x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names
            ]
        else:
            continue
        found |= {n for n in names if n in modules and n != "scripts"}
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in SCRIPTS.rglob("*.py")}
    return {name: imports_of(path, set(files)) - {name} for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_lazy_imports():
    graph = import_graph()
    assert "scripts.ops.handlers" in graph["scripts.ops.registry"]  # imported inside a function
    assert "scripts.data.io" in graph["scripts.data.datalist"]


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_cycle_detection_works():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# Each package may import only the packages before it: data flows one way, from files to the workflows.
LAYERS = ["errors", "nets", "zsegan", "paired", "data", "simulate", "cingan", "inference", "evaluation", "ops"]


def test_packages_import_only_earlier_layers():
    def layer(module: str) -> int:
        return LAYERS.index(module.split(".")[1])

    wrong = sorted(
        f"{a} imports {b}"
        for a, imported in import_graph().items()
        if a != "scripts"
        for b in imported
        if layer(b) > layer(a)
    )
    assert wrong == []
    assert {p.name for p in SCRIPTS.iterdir() if p.is_dir() and p.name != "__pycache__"} <= set(LAYERS)


def test_tests_mirror_the_packages():
    tests = Path(__file__).resolve().parent
    for package in (p for p in SCRIPTS.iterdir() if p.is_dir() and p.name != "__pycache__"):
        assert list((tests / package.name).glob("test_*.py")), f"tests/{package.name}/ has no tests"
    names = [p.name for p in tests.rglob("test_*.py")]
    assert len(names) == len(set(names)), "test file names must be unique (pytest's default import mode)"


def test_every_module_starts_with_its_docstring():
    for path in sorted(SCRIPTS.rglob("*.py")):
        assert ast.get_docstring(ast.parse(path.read_text())), f"{path} has no module docstring"
