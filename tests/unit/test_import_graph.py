"""The modules of adaptlab import each other one way only: no import cycles, not even through a lazy import.

A cycle hidden inside a function (``def f(): from adaptlab.x import y``) still means two modules each need the
other, so both module-level and function-level imports count.

Plug-in discovery: importing ``adaptlab.methods`` or ``adaptlab.tasks`` runs its ``_discover``, which loads every
plug-in module of the package (``importlib.import_module``, a call the statements below don't show), so the graph
adds those edges: whoever imports the registry depends on every plug-in. The one exclusion is a plug-in importing
its own package (``from adaptlab.tasks import TASKS``): discovery and self-registration are the deliberate two-way
link between a registry package and its plug-ins, and the package names none of them in code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import adaptlab

ROOT = Path(adaptlab.__file__).parent
#: Packages whose ``_discover`` imports every submodule not starting with "_" (see the module docstring).
PLUGIN_PACKAGES = ("adaptlab.methods", "adaptlab.tasks")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imported(node: ast.Import | ast.ImportFrom, name: str, is_package: bool, modules: set[str]) -> set[str]:
    """The adaptlab modules one import statement of module ``name`` loads (a name imported from a package that is
    itself a submodule counts as that submodule)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in modules}
    base = node.module or ""
    if node.level:
        package = name.split(".") if is_package else name.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join(package + ([base] if base else []))
    found = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules}
    if base in modules and len(found) < len(node.names):
        found.add(base)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: set[str] = set()
        for node in ast.walk(tree):  # every import statement, at module level or inside a function
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= imported(node, name, path.name == "__init__.py", set(modules))
        graph[name] = edges - {name}
    for package in PLUGIN_PACKAGES:
        plugins = {m for m in modules if m.rpartition(".")[0] == package and not m.rpartition(".")[2].startswith("_")}
        graph[package] |= plugins
        for m in modules:
            if m.startswith(package + "."):
                graph[m].discard(package)  # a plug-in registering itself with its package's registry
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "adaptlab.cli" in graph and "adaptlab.reporting.report" in graph
    # cli imports the report writer inside a function only: that must still be an edge
    assert "adaptlab.reporting.report" in graph["adaptlab.cli"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_modules():
    found = cycles(import_graph())
    assert found == [], "import cycles (each line one group of modules that import each other):\n" + "\n".join(
        " <-> ".join(c) for c in found
    )
