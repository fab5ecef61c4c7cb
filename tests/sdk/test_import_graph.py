"""The package's import graph: no cycle among ymir_exc modules, and the SDK never imports upward.

Every ``import`` / ``from ... import`` in every module under ymir_exc counts, at the top level or
inside a function (a function-level import is still a dependency, only a later one). An edge
goes to the module named (``from ymir_exc import env`` -> ``ymir_exc.env``); the parent
package's ``__init__``, which Python runs first, is not counted as a dependency of each import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ymir_exc

PKG = Path(ymir_exc.__file__).resolve().parent
#: modules of the host side; the executor-side SDK (everything else) must not import them
UPWARD = ("ymir_exc.harness", "ymir_exc.cli")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py")) if "samples" not in p.parts}


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The ymir_exc module ``name`` is, or lies in (``ymir_exc.env.EnvConfig`` -> ``ymir_exc.env``)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(mod: str, path: Path, known: dict[str, Path]) -> set[str]:
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # ``from pkg import sub`` depends on the submodule; ``from mod import name`` on mod
            names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix for a in node.names]
        for n in names:
            target = _resolve(n, known)
            if target and target != mod:
                out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {m: _imports(m, p, known) for m, p in known.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None (iterative DFS, three colours)."""
    state: dict[str, int] = {}
    for root in sorted(graph):
        if state.get(root):
            continue
        stack: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        state[root] = 1
        while stack:
            node, todo = stack[-1]
            if not todo:
                state[node] = 2
                stack.pop()
                continue
            nxt = todo.pop()
            if state.get(nxt) == 1:
                path = [n for n, _ in stack]
                return path[path.index(nxt) :] + [nxt]
            if not state.get(nxt):
                state[nxt] = 1
                stack.append((nxt, sorted(graph.get(nxt, ()))))
    return None


def test_the_graph_sees_top_level_and_function_level_imports():
    graph = _graph()
    assert "ymir_exc.formats.annotations" in graph["ymir_exc.dataset_reader"]  # top level
    assert "ymir_exc.harness.files" in graph["ymir_exc.harness.datasets"]  # inside a function
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_ymir_exc_modules():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_sdk_modules_never_import_the_harness_or_the_cli():
    bad = {
        m: sorted(t for t in targets if t.startswith(UPWARD))
        for m, targets in _graph().items()
        if not m.startswith(UPWARD)
    }
    assert {m: t for m, t in bad.items() if t} == {}
