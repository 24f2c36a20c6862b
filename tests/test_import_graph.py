"""Dependencies point one way: no import circles, and each layer imports only lower ones.

The graph is read from the source (no module is imported): every ``import`` of a
gpupool module counts, including those inside functions. A lazy import keeps
start-up fast but is still a dependency, and a circle made only of lazy imports
(scheduler.accounts -> service -> lifecycle -> accounts, once) is still a
circle. Imports under ``if TYPE_CHECKING:`` only name types and do not count.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import gpupool

ROOT = Path(gpupool.__file__).parent
# model <- accounting <- policies <- scheduler <- service/API <- simulations, cli
LOWER = {
    "gpupool.accounting": ("gpupool.model", "gpupool.limits", "gpupool.files", "gpupool.located"),
    "gpupool.policies": (
        "gpupool.model",
        "gpupool.limits",
        "gpupool.files",
        "gpupool.located",
        "gpupool.safe_text",
        "gpupool.accounting",
    ),
}


STATEMENTS = (ast.stmt, ast.excepthandler, ast.match_case)


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found, todo = [], [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        todo.extend(
            child  # imports are statements: expressions need no visit
            for child in ast.iter_child_nodes(node)
            if isinstance(child, STATEMENTS) and not _type_checking_only(child)
        )
    return found


def _dependencies(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    wanted = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            wanted.update(a.name for a in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        # `from pkg import mod` depends on pkg.mod; `from mod import name` on mod
        for alias in node.names:
            wanted.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in wanted if m in modules and m != name}


@functools.cache
def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _dependencies(name, path, modules) for name, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_is_part_of_an_import_circle():
    assert circles(import_graph()) == []


def test_accounting_and_policies_import_only_lower_layers():
    graph = import_graph()
    wrong = {
        (name, dep)
        for layer, allowed in LOWER.items()
        for name, deps in graph.items()
        if name.startswith(layer)
        for dep in deps
        if not dep.startswith((layer, *allowed)) and dep != "gpupool"
    }
    assert wrong == set()


def test_the_circle_finder_finds_circles_made_of_lazy_imports(tmp_path):
    """The check can fail: the circle this test was written against, rebuilt."""
    source = {
        "accounts": "def add():\n    from pkg import service\n",
        "service": "from pkg import lifecycle\n",
        "lifecycle": "def end():\n    from pkg.accounts import charge\n",
        "clock": "if TYPE_CHECKING:\n    from pkg import service\n",
    }
    modules = {f"pkg.{n}": tmp_path / f"{n}.py" for n in source}
    modules["pkg"] = tmp_path / "__init__.py"
    for name, text in source.items():
        (tmp_path / f"{name}.py").write_text(text)
    (tmp_path / "__init__.py").write_text("")
    graph = {name: _dependencies(name, path, modules) for name, path in modules.items()}
    assert circles(graph) == [["pkg.accounts", "pkg.lifecycle", "pkg.service"]]
    assert graph["pkg.clock"] == set()
