# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The shape of the tree: no import cycle between the collection's Python files, no oversized file under plugins/."""

from __future__ import annotations

import ast
import pathlib
import typing as t

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
PREFIX = "ansible_collections.burrow.ssh."
# "About 500 lines" for a file that holds one idea; plugin files carry their long DOCUMENTATION, which is not code.
MAX_CODE_LINES = 550


def collection_files() -> dict[str, pathlib.Path]:
    files = {}
    for path in sorted((REPO / "plugins").rglob("*.py")):
        relative = path.relative_to(REPO).with_suffix("")
        name = PREFIX + ".".join(relative.parts)
        files[name.removesuffix(".__init__")] = path
    return files


def imports_of(path: pathlib.Path, known: t.Collection[str]) -> set[str]:
    """The collection modules a file imports at module level or in functions (both can close a cycle at run time)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    # Imports under `if TYPE_CHECKING:` never run: a cycle declared that way (with its comment) is allowed.
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for statement in node.body
        for inner in ast.walk(statement)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PREFIX):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith(PREFIX))
    return {name for name in found if name in known}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_between_the_collection_files() -> None:
    files = collection_files()
    graph = {name: imports_of(path, files) - {name} for name, path in files.items()}
    assert sum(len(targets) for targets in graph.values()) > 50, "the import graph looks empty: the walker is broken"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(name.removeprefix(PREFIX) for name in cycle or [])


def code_lines(path: pathlib.Path) -> int:
    """Lines of a file outside its module-level string constants (DOCUMENTATION, EXAMPLES, RETURN, docstrings)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    total = len(path.read_text(encoding="utf-8").splitlines())
    for node in tree.body:
        value = node.value if isinstance(node, (ast.Assign, ast.Expr)) else None
        if isinstance(value, ast.Constant) and isinstance(value.value, str) and node.end_lineno is not None:
            total -= node.end_lineno - node.lineno + 1
    return total


@pytest.mark.parametrize("path", sorted((REPO / "plugins").rglob("*.py")), ids=lambda path: str(path.relative_to(REPO)))
def test_no_oversized_file(path: pathlib.Path) -> None:
    assert code_lines(path) <= MAX_CODE_LINES, f"{path.relative_to(REPO)} has {code_lines(path)} lines of code: split it along its ideas"


def test_test_files_have_unique_names() -> None:
    """pytest imports test files by basename (no __init__.py): two files of one name stop the whole collection."""
    names = [path.name for path in sorted((REPO / "tests").rglob("test_*.py")) if "output" not in path.parts]
    assert len(names) > 20, "no test files found: the walk is broken"
    assert sorted({name for name in names if names.count(name) > 1}) == []
