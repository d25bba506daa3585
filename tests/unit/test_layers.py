"""The layers, checked from the source text: pipeline/ (the shared kernel) imports only itself;
producers/ and consumers/ import pipeline/ and themselves, never each other; eventpipe/ (the command
line, dev orchestration, loadgen) composes them all and nothing below imports it. Imports inside
functions and under TYPE_CHECKING count: they defer an upward import, they do not remove it."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What each top package may import besides itself.
ALLOWED: dict[str, frozenset[str]] = {
    "pipeline": frozenset(),
    "producers": frozenset({"pipeline"}),
    "consumers": frozenset({"pipeline"}),
    "eventpipe": frozenset({"pipeline", "producers", "consumers"}),
}


def project_imports(source: str) -> set[str]:
    """The dotted names of the project modules a module's text imports, anywhere in it."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            # The project uses absolute imports only; a relative one would escape this check.
            assert node.level == 0, f"relative import of {node.module!r}"
            if node.module:
                names.add(node.module)
    return {name for name in names if name.partition(".")[0] in ALLOWED}


def upward_imports(package: str) -> dict[str, set[str]]:
    """Per module of `package`, the project modules it imports that its layer may not."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        bad = {
            name
            for name in project_imports(path.read_text())
            if name.partition(".")[0] not in ALLOWED[package] | {package}
        }
        if bad:
            found[module] = bad
    return found


def test_the_walk_sees_imports_inside_functions_and_type_checking() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from consumers.worker import Worker\n"
        "def f() -> None:\n    import producers.receiver.app\n    from pipeline import settings\n"
    )
    assert project_imports(source) == {"consumers.worker", "producers.receiver.app", "pipeline"}


def test_the_walk_reads_every_package() -> None:
    # The top layer does import the layers below: a walk that read nothing would pass vacuously.
    assert project_imports((ROOT / "eventpipe" / "commands.py").read_text()) >= {
        "consumers.run",
        "producers.receiver.server",
    }
    assert all((ROOT / package / "__init__.py").is_file() for package in ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_import_runs_up_or_across_the_layers(package: str) -> None:
    assert upward_imports(package) == {}


# Where the top layer's modules lived before they moved up (issue #15). A branch started before the
# move can bring one back in a spawn line (`python -m pipeline.cli`) or a doc; bench/ is not run by CI,
# so only this would notice there.
OLD_PATHS = re.compile(r"\b(pipeline[./](cli|commands|dev)\b|producers[./]loadgen\b)")
SKIPPED_DIRS = {".git", ".venv", ".eventpipe", "results", "node_modules", "__pycache__"}
TEXT_SUFFIXES = {".py", ".md", ".toml", ".yml", ".yaml", ".sh", ".json", ".cfg", ".txt"}


def repository_texts() -> list[Path]:
    found: list[Path] = []
    for directory, subdirs, files in os.walk(ROOT):
        # Pruned before descending: .venv alone holds tens of thousands of files.
        subdirs[:] = [d for d in subdirs if d not in SKIPPED_DIRS and not d.endswith(".egg-info")]
        found += [
            Path(directory) / name
            for name in files
            if Path(name).suffix in TEXT_SUFFIXES or name in ("Dockerfile", "Makefile", "run", "test")
        ]
    return [path for path in found if path != Path(__file__).resolve()]


def test_nothing_names_the_modules_that_moved_up() -> None:
    texts = repository_texts()
    assert ROOT / "Dockerfile" in texts and ROOT / "bench" / "procs.py" in texts
    stale = {
        f"{path.relative_to(ROOT)}:{number}": line.strip()
        for path in texts
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OLD_PATHS.search(line)
    }
    assert stale == {}
