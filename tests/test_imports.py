"""The import graph: no cycles, and imports run downhill (cli -> app -> wings -> core)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"aidns.resolver": ROOT / "resolver", "aidns.cli": ROOT / "cli"}
WINGS = ("stages", "rules", "upstream", "querylog", "procinfo", "system", "keeper")


def module_files() -> dict[str, Path]:
    modules = {}
    for package, directory in SOURCES.items():
        for path in directory.rglob("*.py"):
            parts = path.relative_to(directory).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every aidns module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {name for name in names if name in known}
    return found


def graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {name: imports_of(path, known) - {name} for name, path in files.items()}


def layer(module: str) -> int:
    """0 core, 1 a wing, 2 the app, 3 the CLI; a package's __init__ sits with its modules."""
    parts = module.split(".")
    if parts[1] == "cli":
        return 3
    if len(parts) > 2 and parts[2] in WINGS:
        return 1
    if module in ("aidns.resolver.app", "aidns.resolver.start"):
        return 2
    return 0


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read_from_the_sources() -> None:
    edges = graph()
    assert "aidns.resolver.app" in edges
    assert "aidns.resolver.pipeline" in edges["aidns.resolver.app"]


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]


def test_imports_run_downhill() -> None:
    uphill = sorted(
        f"{module} -> {target}"
        for module, targets in graph().items()
        for target in targets
        if layer(target) > layer(module)
    )
    assert uphill == []


def test_platform_code_does_not_import_its_facade() -> None:
    edges = graph()
    facade = "aidns.resolver.procinfo.lookup"
    platforms = ("aidns.resolver.procinfo.linux", "aidns.resolver.procinfo.macos")
    assert {facade, *platforms} <= set(edges)
    assert [name for name in platforms if facade in edges.get(name, set())] == []
