"""relkit's stages depend downward only: the import graph between its top-level modules and
packages has no cycle. Every import counts, at a module's top or inside a function."""
import ast
from pathlib import Path

import relkit

SOURCE = Path(relkit.__file__).parent


def _module_name(path: Path, root: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def _node(name: str, package: str, nodes: set[str]) -> str | None:
    """The graph node a dotted module name belongs to: `relkit.judge.core` -> `relkit.judge`; None
    for the root package itself and for anything outside it."""
    parts = name.split(".")
    if parts[0] != package or len(parts) < 2:
        return None
    node = f"{package}.{parts[1]}"
    return node if node in nodes else None


def import_graph(root: Path, package: str = "relkit") -> dict[str, set[str]]:
    """node -> the nodes it imports, where a node is a top-level module or package of `package`
    (whose sources are under `root`). The root `__init__.py` only re-exports: it is no node."""
    nodes = {f"{package}.{p.stem}" for p in root.glob("*.py") if p.stem != "__init__"}
    nodes |= {f"{package}.{p.name}" for p in root.iterdir() if (p / "__init__.py").is_file()}
    graph: dict[str, set[str]] = {n: set() for n in nodes}
    for path in sorted(root.rglob("*.py")):
        if path == root / "__init__.py":
            continue
        module = _module_name(path, root, package)
        source = _node(module, package, nodes)
        is_package = path.name == "__init__.py"
        for stmt in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(stmt, ast.Import):
                targets = [alias.name for alias in stmt.names]
            elif isinstance(stmt, ast.ImportFrom):
                if stmt.level:   # relative: from the module's package, one level up per extra dot
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[:len(base) - (stmt.level - 1)]
                    target = ".".join(base + ([stmt.module] if stmt.module else []))
                else:
                    target = stmt.module
                # `from relkit import metrics` imports the module relkit.metrics
                targets = [target] + [f"{target}.{alias.name}" for alias in stmt.names]
            for target in targets:
                node = _node(target, package, nodes)
                if node is not None and node != source:
                    graph[source].add(node)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a path whose last node is its first) per strongly connected component of more than
    one node, found with Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:
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
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(graph, component) for component in components]


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """The shortest cycle through the component's first node (by name), by breadth-first search."""
    start = min(component)
    parent = {start: None}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while parent[path[-1]] is not None:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if w not in parent:
                    parent[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"{sorted(component)} is no strongly connected component")


def test_no_import_cycle_between_relkit_modules():
    cycles = find_cycles(import_graph(SOURCE))
    assert not cycles, "import cycles between relkit's modules:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root / "pkg"


def test_the_graph_counts_imports_in_functions_and_relative_ones(tmp_path):
    root = _write(tmp_path, {
        "pkg/__init__.py": "from pkg.stage import run\n",             # the root re-exports: no node
        "pkg/low.py": "import json\n",
        "pkg/stage/__init__.py": "from .core import run\n",
        "pkg/stage/core.py": "from ..low import x\n\ndef run():\n    from pkg import other\n",
        "pkg/stage/sub/deep.py": "from ... import low\nfrom . import sibling\n",
        "pkg/other.py": "import pkg.stage.core as c\n",
    })
    graph = import_graph(root, "pkg")
    assert graph == {"pkg.low": set(), "pkg.stage": {"pkg.low", "pkg.other"}, "pkg.other": {"pkg.stage"}}
    assert find_cycles(graph) == [["pkg.other", "pkg.stage", "pkg.other"]]


def test_a_cycle_is_named_from_end_to_end():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
