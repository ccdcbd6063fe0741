"""The layout rules of README "Layout": no import cycles, imports point down the data path, no private names
imported across modules, no oversized source files, and ruff (lint + format) clean.

Every import counts, also those inside functions: a lazy import that closes a cycle is still a cycle. Importing
``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` first, so a dependency on a module is also one on the
packages above it.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
LIBRARY = "mtrank"
MAX_LINES = 420  # "about 400": a module that grows past it is split by what its parts do


def _modules() -> dict[str, Path]:
    """Every module under src/ by dotted name (packages by their __init__)."""
    mods = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    """The module that ``import name`` / ``from name import x`` loads (``name`` may end in an attribute)."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def _imports(tree: ast.AST) -> list[tuple[str, list[str]]]:
    """(module, names) of every absolute import in a tree, wherever it stands."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module → the project modules it imports (with the packages above them)."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        deps: set[str] = set()
        for module, names in _imports(ast.parse(path.read_text())):
            targets = [_resolve(f"{module}.{n}", mods) for n in names] or [_resolve(module, mods)]
            for target in filter(None, targets):
                parts = target.split(".")
                deps.update(".".join(parts[:k]) for k in range(1, len(parts) + 1) if ".".join(parts[:k]) in mods)
        graph[mod] = {d for d in deps if d != mod and not mod.startswith(d + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in graph:
                    continue
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return found


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The import graph between the library's packages (``mtrank.<package>``)."""
    packages: dict[str, set[str]] = {}
    for mod, deps in graph.items():
        if not mod.startswith(LIBRARY + "."):
            continue
        package = ".".join(mod.split(".")[:2])
        packages.setdefault(package, set()).update(
            ".".join(d.split(".")[:2]) for d in deps if d.startswith(LIBRARY + ".")
        )
        packages[package].discard(package)
    return packages


def test_no_import_cycles_between_packages():
    """The packages form layers (README "Layout"): jobs on top, then validation, online, tuning, ..., data, utils."""
    assert cycles(package_graph(import_graph())) == []


def test_the_library_imports_neither_entry_points_nor_plugins():
    """Imports point down: entry scripts (src/*.py) and the Hydra plugin use the library, never the reverse."""
    upward = {
        mod: sorted(d for d in deps if not d.startswith(LIBRARY))
        for mod, deps in import_graph().items()
        if mod.startswith(LIBRARY)
    }
    assert {m: d for m, d in upward.items() if d} == {}


def test_no_private_names_imported_across_modules():
    offenders = []
    for path in [*SRC.rglob("*.py"), *(ROOT / "scripts").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]:
        for module, names in _imports(ast.parse(path.read_text())):
            if module.startswith((LIBRARY, "hydra_plugins")):
                offenders += [
                    f"{path.relative_to(ROOT)}: {module}.{n}"
                    for n in names
                    if n.startswith("_") and not n.startswith("__")
                ]
    assert offenders == []


def test_no_source_file_is_oversized():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in SRC.rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > MAX_LINES} == {}


def _ruff() -> list[str]:
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("ruff is not installed: it is part of the dev extra (make setup installs it)")
    return [exe]


def test_ruff_lint_is_clean():
    out = subprocess.run(
        [*_ruff(), "check", "--no-cache", "src", "tests", "scripts"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_format_is_clean():
    out = subprocess.run(
        [*_ruff(), "format", "--check", "--no-cache", "src", "tests", "scripts"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
