"""The import graph of the core: no cycle, and the run path never reaches for the workshop.

The graph is read from the source with :mod:`ast`: every ``import`` and ``from ... import``
of a module, at module level and inside functions alike (a function-level import is a
dependency too, only a later one), except those under ``if TYPE_CHECKING:``, which never
run. Importing ``a.b.c`` runs the package ``a.b`` first, so such an import depends on the
package as well, unless the importing module lies inside that package (then the package is
already being imported).
"""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "mlipft_core"
PACKAGE = "mlipft_core"
WORKSHOP = f"{PACKAGE}.workshop"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def core_modules() -> dict[str, Path]:
    """Every module of the core by its dotted name."""
    return {_module_name(p): p for p in sorted(CORE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of a module that can run (``TYPE_CHECKING`` blocks left out)."""
    found: list[ast.Import | ast.ImportFrom] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return found


def _targets(name: str, is_package: bool, node: ast.Import | ast.ImportFrom,
             modules: set[str]) -> set[str]:
    """The core modules one import statement of module ``name`` loads."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in modules}
    if node.level:
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    subs = {f"{source}.{a.name}" for a in node.names} & modules  # ``from pkg import mod``
    names_only = len(subs) < len(node.names)  # some name is the package's own attribute
    return subs | ({source} if source in modules and names_only else set())


def import_graph() -> dict[str, set[str]]:
    """Module -> the core modules it imports (with the packages those imports run)."""
    mods = core_modules()
    names = set(mods)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        deps: set[str] = set()
        for node in _imports(tree):
            for target in _targets(name, path.name == "__init__.py", node, names):
                parts = target.split(".")
                for i in range(2, len(parts) + 1):  # the packages on the way run first
                    step = ".".join(parts[:i])
                    inside = name == step or name.startswith(step + ".")
                    if step in names and (step == target or not inside):
                        deps.add(step)
        deps.discard(name)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    out.append(sorted(group))
    return out


def _path_between(graph: dict[str, set[str]], start: str, goal: str) -> list[str] | None:
    """One chain of imports from ``start`` to ``goal`` (breadth first), for the message."""
    seen = {start: None}
    todo = [start]
    while todo:
        node = todo.pop(0)
        for child in sorted(graph.get(node, ())):
            if child not in seen:
                seen[child] = node
                if child == goal:
                    chain = [child]
                    while seen[chain[-1]] is not None:
                        chain.append(seen[chain[-1]])
                    return chain[::-1]
                todo.append(child)
    return None


def test_the_core_has_no_import_cycle():
    graph = import_graph()
    found = cycles(graph)
    shown = []
    for group in found:
        a = group[0]
        b = next(m for m in group if m != a)
        there, back = _path_between(graph, a, b), _path_between(graph, b, a)
        shown.append(" -> ".join((there or [a, b]) + (back or [b, a])[1:]))
    assert not found, "import cycles:\n" + "\n".join(shown)


def test_the_run_path_never_imports_the_workshop():
    graph = import_graph()
    run_path = [m for m in graph if m == f"{PACKAGE}.workspace" or m == f"{PACKAGE}.jobs"
                or m.startswith(f"{PACKAGE}.jobs.")]
    assert f"{PACKAGE}.jobs.records" in run_path and len(run_path) > 3
    reach = {m: _path_between(graph, m, WORKSHOP) for m in run_path}
    bad = {m: " -> ".join(chain) for m, chain in reach.items() if chain}
    assert not bad, "the run path reaches the workshop:\n" + "\n".join(bad.values())


def test_the_run_path_does_not_know_the_workshop():
    """Not even by name: no module of ``jobs`` nor ``workspace`` names the workshop or its
    configuration file (a module loaded by name would escape the import graph)."""
    def text(path: Path) -> str:
        return path.read_text().lower()

    mods = core_modules()
    named = [str(path.relative_to(CORE.parent)) for name, path in mods.items()
             if (name == f"{PACKAGE}.workspace" or name.startswith(f"{PACKAGE}.jobs"))
             and "workshop" in text(path)]
    assert not named, f"modules of the run path that name the workshop: {named}"


def test_the_graph_reader_sees_what_python_runs(tmp_path):
    """The reader itself: relative imports, function-level imports, ``from pkg import
    submodule``, the package an import runs, and TYPE_CHECKING blocks."""
    graph = import_graph()
    assert f"{PACKAGE}.workspace" in graph[f"{PACKAGE}.jobs.records"]
    assert f"{PACKAGE}.errors" in graph[f"{PACKAGE}.workspace"]  # imported at module level
    assert f"{PACKAGE}.jobs" not in graph[f"{PACKAGE}.jobs.records"]  # its own package
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x\n"
                     "def f():\n    from .jobs import records\n")
    got = [_targets(f"{PACKAGE}.study", False, n, {f"{PACKAGE}.jobs", f"{PACKAGE}.jobs.records",
                                                    "x"}) for n in _imports(tree)]
    assert {f"{PACKAGE}.jobs.records"} in got and {"x"} not in got
    tree = ast.parse("from . import records, settle\n")
    (node,) = _imports(tree)
    assert _targets(f"{PACKAGE}.jobs.local", False, node, {f"{PACKAGE}.jobs",
                                                           f"{PACKAGE}.jobs.records"}) == {
        f"{PACKAGE}.jobs", f"{PACKAGE}.jobs.records"}


#: The demo generator is a script of many steps, run by hand; every other core module stays
#: small enough to read in one sitting.
SIZE_EXEMPT = {"mlipft_core.demo.generate"}
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 500, 80


def test_core_modules_and_functions_stay_small():
    too_long = []
    for name, path in core_modules().items():
        if name in SIZE_EXEMPT:
            continue
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name}: {lines} lines")
    assert too_long == []
