"""The package's import graph: no cycles, and the layers depend one way (read from the source)."""

from __future__ import annotations

import ast
from pathlib import Path

import impetus

ROOT = Path(impetus.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """Module -> the impetus modules it imports anywhere in its body, type-only imports included
    (a cycle through `if TYPE_CHECKING:` is still a cycle to read); a module's own parent
    packages are left out, since importing a submodule imports them anyway."""
    files = {_module_name(f): f for f in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
        graph[name] = {
            m for m in found if m in files and m != name and not name.startswith(m + ".")
        }
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_layers_depend_one_way() -> None:
    graph = _graph()
    assert graph["impetus.protocol"] == set()
    for name, deps in graph.items():
        if name.startswith("impetus.models"):
            assert not {d for d in deps if d.startswith("impetus.engine")}, name
        if name.startswith("impetus.engine"):
            assert not {d for d in deps if d.startswith(("impetus.api", "impetus.jupyter"))}, name
