"""rr's layering, read from the source: no import circle, and the core never imports contrib.

The import graph is built with ``ast`` from every module under ``rr/``, counting
every import statement wherever it stands: at the top, inside a function (a
"lazy" import is still a dependency), and under ``if TYPE_CHECKING:`` (a type
that needs the other module is a dependency too). An edge goes to the module
the statement names: ``from rr import dispatch`` → ``rr.dispatch`` (a
submodule), ``from rr.request import Request`` → ``rr.request``, ``from rr
import ClientGone`` → ``rr`` (a name from the package's ``__init__``). The
implicit import of parent packages (``rr/__init__`` runs before any
``rr.x``) is not an edge: it would put every module on a circle through the
public API module, which is a re-export, not a layer.

The checker is tested on a planted package too, so it is known to be able to fail.
"""

from __future__ import annotations

import ast
from pathlib import Path

RR = Path(__file__).resolve().parents[2] / "rr"


def module_names(root: Path) -> dict[str, Path]:
    """``{"rr.http1.conn": path, "rr": path/__init__.py, ...}`` for the package at ``root``."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of a (possibly relative) ``from`` import's module."""
    if not level:
        return target or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def imports_of(module: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every import in ``path`` that names a module in ``known``."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name
                while name and name not in known:  # "import rr.http1.codec" names that module
                    name = name.rpartition(".")[0]
                if name:
                    out.append((name, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:
                    out.append((sub, node.lineno))
                elif base in known:
                    out.append((base, node.lineno))
    return out


def import_graph(root: Path) -> dict[str, dict[str, int]]:
    """module → {imported module: first line importing it}, within the package at ``root``."""
    names = module_names(root)
    known = set(names)
    graph: dict[str, dict[str, int]] = {}
    for module, path in names.items():
        edges: dict[str, int] = {}
        for target, line in imports_of(module, path, known):
            if target != module:
                edges.setdefault(target, line)
        graph[module] = edges
    return graph


def circles(graph: dict[str, dict[str, int]]) -> list[tuple[list[str], list[str]]]:
    """Each strongly connected component with a circle (Tarjan): its members, and one closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, {})):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [(comp, _circle_through(graph, comp)) for comp in components]


def _circle_through(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """A shortest closed path from the component's first module back to itself, inside it."""
    start = component[0]
    members = set(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node]):
                if nxt == start:
                    return [*paths[node], start]
                if nxt in members and nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no circle through {start} in {component}")  # a component always has one


def describe(graph: dict[str, dict[str, int]], circle: list[str]) -> str:
    steps = [f"{a} (line {graph[a][b]})" for a, b in zip(circle, circle[1:], strict=False)]
    return " → ".join([*steps, circle[-1]])


def contrib_imports(graph: dict[str, dict[str, int]], package: str = "rr") -> list[str]:
    """Imports of ``<package>.contrib`` from modules outside it."""
    contrib = f"{package}.contrib"
    return [
        f"{module} imports {target} (line {line})"
        for module, edges in sorted(graph.items())
        if module != contrib and not module.startswith(contrib + ".")
        for target, line in sorted(edges.items())
        if target == contrib or target.startswith(contrib + ".")
    ]


# -- rr itself -------------------------------------------------------------------------


def test_rr_has_no_import_circle():
    graph = import_graph(RR)
    found = circles(graph)
    assert not found, "import circles in rr/:\n" + "\n".join(
        f"{describe(graph, circle)}  (on circles together: {', '.join(members)})" for members, circle in found)


# The `rr` command is the outermost layer, an application of rr like any user's: nothing
# imports it, and it serves WSGI apps through rr.contrib.wsgi.
APPLICATIONS = ("rr.cli", "rr.__main__")


def test_only_rr_contrib_imports_rr_contrib():
    graph = import_graph(RR)
    found = [line for line in contrib_imports(graph) if not line.startswith(tuple(a + " " for a in APPLICATIONS))]
    assert not found, "the core imports contrib:\n" + "\n".join(found)


def test_nothing_in_rr_imports_the_command_line():
    graph = import_graph(RR)
    found = [f"{module} imports {target}" for module, edges in graph.items() for target in edges
             if target in APPLICATIONS and module not in APPLICATIONS]
    assert not found, found


# -- the checker can fail ----------------------------------------------------------------


def _plant(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_the_walker_finds_a_circle_through_lazy_type_checking_and_relative_imports(tmp_path):
    pkg = _plant(tmp_path, {
        "pkg/__init__.py": "from pkg import a\n",
        "pkg/a.py": "def f():\n    from pkg.sub import b\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..c import X\n",
        "pkg/c.py": "import pkg.a\n",
        "pkg/leaf.py": "import os\nfrom pkg.contrib import tool\n",
        "pkg/contrib/__init__.py": "",
        "pkg/contrib/tool.py": "from pkg import c\n",
    })
    graph = import_graph(pkg)
    assert graph["pkg"] == {"pkg.a": 1}
    assert graph["pkg.sub.b"] == {"pkg.c": 3}
    found = circles(graph)
    assert found == [(["pkg.a", "pkg.c", "pkg.sub.b"], ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"])], found
    assert describe(graph, found[0][1]) == "pkg.a (line 2) → pkg.sub.b (line 3) → pkg.c (line 1) → pkg.a"
    assert contrib_imports(graph, "pkg") == ["pkg.leaf imports pkg.contrib.tool (line 2)"]


def test_the_walker_finds_no_circle_in_a_layered_package(tmp_path):
    pkg = _plant(tmp_path, {
        "pkg/__init__.py": "from pkg import top\n",
        "pkg/top.py": "from pkg import low\nfrom pkg.low import thing\n",
        "pkg/low.py": "thing = 1\n",
    })
    graph = import_graph(pkg)
    assert circles(graph) == [] and contrib_imports(graph, "pkg") == []
