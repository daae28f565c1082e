"""The package layers, read from the source with ``ast`` (nothing is imported).

    cli/  ui/                      on top: nothing below imports them, and ui never imports cli
    strategy/ evaluate/ predict export ... train/ runs data/ ... plan registry    the engine

Nodes are the subpackages (``tl_studio.train``) and the top-level modules
(``tl_studio.plan``); an edge is any import between two of them, relative
imports resolved and imports inside functions included (they run too).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tl_studio"
ROOT = "tl_studio"
ON_TOP = ("tl_studio.ui", "tl_studio.cli")
ENTRY = ("tl_studio.__main__",)  # ``python -m tl_studio``: the command line's entry point, above everything
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _node(module: str) -> str:
    """The layer a module belongs to: ``tl_studio.train.loop`` -> ``tl_studio.train``."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _imports(module: str, path: Path) -> list[tuple[str, int, list[str]]]:
    """(absolute module imported, line, names imported from it) for every import in the file."""
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                # a package's own __init__ is level 1 from itself; a module's is its parent
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, node.lineno, [a.name for a in node.names]))
    return [(t, line, names) for t, line, names in out if t == ROOT or t.startswith(ROOT + ".")]


def _edges() -> dict[tuple[str, str], list[str]]:
    """(from node, to node) -> where: "module:line imports target" for each such import."""
    edges: dict[tuple[str, str], list[str]] = {}
    for module, path in MODULES.items():
        for target, line, names in _imports(module, path):
            targets = [target]
            if target in (ROOT, *MODULES) and names:
                # ``from tl_studio.train import loop`` imports the submodule tl_studio.train.loop
                targets = [f"{target}.{n}" if f"{target}.{n}" in MODULES else target for n in names]
            for t in targets:
                a, b = _node(module), _node(t)
                if a != b and b != ROOT:
                    edges.setdefault((a, b), []).append(f"{module}:{line} imports {t}")
    return edges


def _cycles(edges) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
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
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_parser_sees_the_package():
    assert {"tl_studio.train", "tl_studio.cli", "tl_studio.ui", "tl_studio.plan", "tl_studio.runs"} <= {
        _node(m) for m in MODULES
    }
    edges = _edges()
    assert ("tl_studio.cli", "tl_studio.train") in edges  # function-level imports count


def _shortest_cycle(edges, comp: list[str]) -> list[str]:
    """One shortest cycle through the first node of a strongly connected component."""
    start = comp[0]
    inside = set(comp)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for (a, b) in sorted(edges):
            if a != v or b not in inside:
                continue
            if b == start:
                return paths[v] + [start]
            if b not in paths:
                paths[b] = paths[v] + [b]
                queue.append(b)
    return comp  # not reached: a component always closes on itself


def test_no_import_cycle_between_packages():
    edges = _edges()
    problems = []
    for comp in _cycles(edges):
        cycle = _shortest_cycle(edges, comp)
        steps = [f"  {a} -> {b}: {edges[(a, b)][0]}" for a, b in zip(cycle, cycle[1:])]
        problems.append(f"import cycle ({len(comp)} packages tangled: {', '.join(comp)}):\n" + "\n".join(steps))
    assert not problems, "\n".join(problems)


def test_the_engine_never_imports_the_ui_or_the_cli():
    bad = [
        f"{a} -> {b}: {w}"
        for (a, b), where in sorted(_edges().items())
        for w in where
        if b in ON_TOP and a not in ON_TOP + ENTRY
    ]
    assert not bad, "the engine imports a layer above it:\n" + "\n".join(bad)


def test_the_ui_never_imports_the_cli():
    where = _edges().get(("tl_studio.ui", "tl_studio.cli"), [])
    assert not where, "the CLI is on top of the UI, not below it:\n" + "\n".join(where)


def test_nothing_imports_a_name_re_exported_by_the_root_package():
    """``tl_studio/__init__.py`` is for users; inside the package, import the module that defines a name."""
    bad = []
    for module, path in MODULES.items():
        if module == ROOT:
            continue
        for target, line, names in _imports(module, path):
            if target != ROOT:
                continue
            if not names:
                bad.append(f"{module}:{line} imports the root package {ROOT}")
            bad += [f"{module}:{line} imports {n} from {ROOT}" for n in names if f"{ROOT}.{n}" not in MODULES]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module):
    n = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{MODULES[module].relative_to(PACKAGE.parent)} has {n} lines (at most {MAX_LINES})"
