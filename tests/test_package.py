"""The package's shape, checked from its source with `ast`: no module imports a private name (`_x`)
of another module, and the import graph of `lpo_speech/` (lazy imports inside functions included)
has no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PKG = REPO / "lpo_speech"


def modules() -> dict[str, Path]:
    found = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> list[tuple[str, str, int]]:
    """(module imported, name or '', line) for every lpo_speech import in the file, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lpo_speech":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.append((sub, "", node.lineno) if sub in known else (node.module, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] == "lpo_speech"]
    return out


def test_no_private_name_crosses_a_module():
    known = modules()
    bad = [f"{path.relative_to(REPO)}:{line}: from {mod} import {name}"
           for path in known.values() for mod, name, line in imports(path, known) if name.startswith("_")]
    assert not bad, "private names used across modules:\n" + "\n".join(bad)


def test_no_import_cycle():
    known = modules()
    graph = {m: {mod for mod, _, _ in imports(p, known) if mod in known and mod != m} for m, p in known.items()}
    # a package's __init__ is imported with any of its modules; edges into a package are fine unless it imports back
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [node, nxt]) if nxt in stack else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, stack + [node])
        state[node] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
