"""The code's shape, checked from the source text: no import circle among the production packages
(counting imports inside functions and under TYPE_CHECKING, which hide a circle rather than remove
it), and no production module past 400 lines."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "producers", "consumers", "eventpipe")
MAX_LINES = 400


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imported(tree: ast.AST, known: Mapping[str, Path]) -> set[str]:
    """The project modules a module imports anywhere in its text. `from a.b import c` names the
    submodule a.b.c when there is one, else the module a.b."""

    def owner(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return {m for m in map(owner, names) if m is not None}


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(ast.parse(path.read_text()), known) - {name} for name, path in known.items()}


def cycles(graph: Mapping[str, set[str]]) -> Iterator[list[str]]:
    """Circles met by a depth-first walk, each as the path back to where it closed: none when the
    graph has none."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> Iterator[list[str]]:
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                yield [*path[path.index(nxt) :], nxt]
            elif nxt not in done:
                yield from visit(nxt, [*path, nxt])
        done.add(node)

    for start in sorted(graph):
        if start not in done:
            yield from visit(start, [start])


def test_the_graph_sees_the_imports_it_must_judge() -> None:
    graph = import_graph()
    # A function-level import and a `from package import submodule` are both edges.
    assert "pipeline.formats" in graph["pipeline.limit_check"]
    assert "pipeline.formats.dfinery" in graph["pipeline.formats"]
    assert "consumers.replay" in graph["eventpipe.commands"]


def test_the_cycle_finder_finds_a_circle() -> None:
    found = list(cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}))
    assert found == [["a", "b", "c", "a"]]


def test_no_import_circle() -> None:
    assert list(cycles(import_graph())) == []


def test_no_production_module_over_400_lines() -> None:
    lines = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert lines["consumers.worker"] > 100  # the walk reads the modules it should
    assert {name: n for name, n in lines.items() if n > MAX_LINES} == {}
