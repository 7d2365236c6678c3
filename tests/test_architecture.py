"""The package's shape, checked from its source (ARCHITECTURE.md): no import cycle, imports that point one
way only — from a layer to itself or the layers below it — and no module over ~600 lines without a reason.

The import graph is read from the AST of every module under src/initlab: every ``import`` and ``from``
statement, absolute or relative, at module level or inside a function (a lazy import is still an
import). ``from pkg import name`` is an edge to the module ``pkg.name`` when that is a module, else to
``pkg`` itself. Imports under ``if TYPE_CHECKING:`` never run, so they are left out of the cycle check,
but they must still respect the layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "initlab"

#: The layers, lowest first; a module belongs to the layer of the longest prefix that names it.
LAYERS: list[tuple[str, ...]] = [
    ("initlab._version",),
    ("initlab.initializers",),
    ("initlab.distributed",),
    ("initlab.theory",),
    ("initlab.plan",),
    ("initlab.inspect",),
    ("initlab.experiments",),
    ("initlab.cli", "initlab"),
]
MAX_LINES = 600
#: A module longer than MAX_LINES says why in its docstring, on a line that starts with this.
ONE_IDEA = "One idea:"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str) -> list[tuple[str, int, bool]]:
    """(imported module inside initlab, line, type-checking only) for every import statement of ``name``."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    package = name if _is_package(name) else name.rpartition(".")[0]
    found: list[tuple[str, int, bool]] = []

    def target(dotted: str) -> str | None:
        # the deepest module of the package that ``dotted`` names (``import a.b.c`` imports all three)
        while dotted and dotted not in MODULES:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    def visit(node: ast.AST, typing_only: bool) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, typing_only)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "initlab" or alias.name.startswith("initlab."):
                    found.append((target(alias.name), node.lineno, typing_only))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == "initlab" or module.startswith("initlab."):
                for alias in node.names:
                    sub = f"{module}.{alias.name}"
                    found.append((sub if sub in MODULES else target(module), node.lineno, typing_only))
        for child in ast.iter_child_nodes(node):
            visit(child, typing_only)

    visit(tree, False)
    return [(t, line, typing_only) for t, line, typing_only in found if t is not None]


IMPORTS = {name: _imports(name) for name in MODULES}


def _layer(name: str) -> int:
    best, layer = -1, None
    for k, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and len(p) > best:
                best, layer = len(p), k
    assert layer is not None, f"{name} belongs to no layer: add it to LAYERS and to ARCHITECTURE.md"
    return layer


def _cycles(graph: dict[str, set[str]]) -> list[tuple[list[str], list[str]]]:
    """The strongly connected components with a cycle (Tarjan): each as (one cycle through it, its modules)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
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
            if len(comp) > 1 or v in graph[v]:
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)

    cycles = []
    for comp in components:
        members = set(comp)
        start = min(comp)
        # a shortest way back to the start inside the component (breadth first)
        paths = {start: [start]}
        frontier = [start]
        cycle = None
        while frontier and cycle is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & members):
                    if w == start:
                        cycle = [*paths[v], start]
                        break
                    if w not in paths:
                        paths[w] = [*paths[v], w]
                        nxt.append(w)
                if cycle:
                    break
            frontier = nxt
        cycles.append((cycle or sorted(comp), sorted(comp)))
    return cycles


def test_the_walker_sees_the_package():
    # a sanity check on the graph itself: if these fail, the checks below would pass vacuously
    assert {"initlab", "initlab.cli", "initlab.initializers.base", "initlab.inspect.run"} <= set(MODULES)
    assert "initlab.initializers.description" in {t for t, _, _ in IMPORTS["initlab.initializers.base"]}
    lazy = [t for t, _, _ in IMPORTS["initlab.inspect.findings"]]
    assert "initlab.plan.build" in lazy  # an import inside a function counts


def test_no_import_cycles():
    graph = {name: {t for t, _, typing_only in IMPORTS[name] if not typing_only and t != name} for name in MODULES}
    cycles = _cycles(graph)
    assert not cycles, "import cycles inside initlab:\n" + "\n".join(
        f"  {' -> '.join(c)}" + (f"  (one tangle: {', '.join(m)})" if len(m) > len(c) - 1 else "")
        for c, m in cycles
    )


def test_imports_point_down_the_layers():
    bad = [
        f"  {name} (layer {_layer(name)}) imports {t} (layer {_layer(t)}) at line {line}"
        for name, imports in IMPORTS.items()
        for t, line, _ in imports
        if _layer(t) > _layer(name)
    ]
    assert not bad, "imports from a higher layer (ARCHITECTURE.md: lower layers never import higher ones):\n" + "\n".join(bad)


def test_modules_do_not_import_their_own_package():
    # ``from . import x`` is fine when x is a sibling module; importing a name from the package's own
    # __init__ would only work by import order
    bad = [
        f"  {name} imports its package {t} at line {line}"
        for name, imports in IMPORTS.items()
        for t, line, _ in imports
        if not _is_package(name) and name.startswith(t + ".") and _is_package(t)
    ]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_size(name):
    path = MODULES[name]
    text = path.read_text(encoding="utf-8")
    lines = text.count("\n")
    if lines <= MAX_LINES:
        return
    doc = ast.get_docstring(ast.parse(text)) or ""
    assert any(line.strip().startswith(ONE_IDEA) for line in doc.splitlines()), (
        f"{path.relative_to(SRC.parent)} has {lines} lines (> {MAX_LINES}); split it along its seams, or say why "
        f"it is one idea in its docstring on a line starting with {ONE_IDEA!r}"
    )
