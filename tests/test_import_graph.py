"""The babelprune package has no import cycle among its own modules, and its packages keep to their floors.

Every import statement counts, those inside functions included, since a
function-level import only hides a cycle until the function runs. An edge
goes to the module an import names: `from babelprune.prune import storage`
names the submodule `babelprune.prune.storage`, `from babelprune.prune
import thing` names the package `babelprune.prune` (its __init__). Importing
`a.b.c` also runs the __init__ of `a.b` first, so that is an edge too, unless
`a.b` is a package of the importing module itself (Python has started it
before the importer). Cycles through a package __init__ are found that way.
Only imports under `if TYPE_CHECKING:` are left out: they never run.

The same graph checks the floor plan of docs/architecture.md: each top-level
package (or module) of babelprune sits on a floor, imports only from its own
floor or below (no exception), and no two packages import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import babelprune

PACKAGE_ROOT = Path(babelprune.__file__).parent


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package under `root`."""
    modules = {}
    for file in sorted(root.rglob("*.py")):
        parts = list(file.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = file
    return modules


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a `from ... import` names before its imported names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _with_packages_run(target: str, module: str, is_package: bool) -> set[str]:
    """`target` and the packages whose __init__ importing it runs from `module` (not `module`'s own packages)."""
    own = module.split(".") if is_package else module.split(".")[:-1]
    own_packages = {".".join(own[:i]) for i in range(1, len(own) + 1)}
    parts = target.split(".")
    outer = {".".join(parts[:i]) for i in range(1, len(parts))}
    return {target} | (outer - own_packages)


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"
        or isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _run_time_nodes(tree: ast.AST):
    """Every node of `tree` except the bodies of `if TYPE_CHECKING:` blocks."""
    pending = [tree]
    while pending:
        node = pending.pop()
        yield node
        if _is_type_checking(node):
            pending.extend(node.orelse)
        else:
            pending.extend(ast.iter_child_nodes(node))


def imported_modules(module: str, file: Path, known: set[str]) -> set[str]:
    """The package modules that `module` imports, or whose __init__ it runs, anywhere in its source."""
    is_package = file.name == "__init__.py"
    targets: set[str] = set()
    for node in _run_time_nodes(ast.parse(file.read_text(encoding="utf-8"), str(file))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, module, is_package)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                targets.add(submodule if submodule in known else source)
    run = set().union(*(_with_packages_run(target, module, is_package) for target in targets))
    return {target for target in run if target in known and target != module}


def import_graph(root: Path = PACKAGE_ROOT) -> dict[str, set[str]]:
    files = module_files(root)
    known = set(files)
    return {module: imported_modules(module, file, known) for module, file in files.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan), each as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_within(graph, component) for component in components]


def _cycle_within(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A readable cycle a -> b -> ... -> a inside one strongly connected component (breadth-first)."""
    start = min(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & component):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if target not in parents:
                    parents[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle in component {sorted(component)}")


def test_graph_sees_function_level_and_relative_imports(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from pkg.sub import b\n")
    (package / "sub" / "__init__.py").write_text("from .b import thing\n")
    (package / "sub" / "b.py").write_text("import pkg.a\nthing = 1\n")
    graph = import_graph(package)
    assert graph == {"pkg": set(), "pkg.a": {"pkg.sub", "pkg.sub.b"}, "pkg.sub": {"pkg.sub.b"}, "pkg.sub.b": {"pkg.a"}}
    assert find_cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.a"]]


def test_type_checking_imports_are_left_out(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("import typing\nif typing.TYPE_CHECKING:\n    from pkg.b import y\nelse:\n    import pkg.c\n")
    (package / "b.py").write_text("from pkg.a import x\n")
    (package / "c.py").write_text("")
    graph = import_graph(package)
    assert graph["pkg.a"] == {"pkg.c"} and graph["pkg.b"] == {"pkg.a"}


def test_cycle_through_an_outer_package_init_is_found(tmp_path):
    # pkg.b imports pkg.sub.a, which runs pkg.sub's __init__, which imports pkg.b back.
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "b.py").write_text("from pkg.sub.a import x\n")
    (package / "sub" / "__init__.py").write_text("from pkg.b import x\n")
    (package / "sub" / "a.py").write_text("from pkg.sub.c import x\n")  # own package: no edge to pkg.sub
    (package / "sub" / "c.py").write_text("x = 1\n")
    graph = import_graph(package)
    assert graph["pkg.sub.a"] == {"pkg.sub.c"}
    assert graph["pkg.b"] == {"pkg.sub", "pkg.sub.a"}
    assert find_cycles(graph) == [["pkg.b", "pkg.sub", "pkg.b"]]


def test_cycle_through_a_package_init_is_found(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from pkg.a import f\n")
    (package / "a.py").write_text("from pkg import f\n")
    assert find_cycles(import_graph(package)) == [["pkg", "pkg.a", "pkg"]]


def test_babelprune_has_no_import_cycle():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


# The floor plan, bottom first (docs/architecture.md). "__init__" is the package babelprune itself.
FLOORS: list[tuple[str, ...]] = [
    ("errors", "choices", "progress", "outputs", "names", "version"),
    ("cache", "configfile", "devices"),
    ("records",),  # above cache: a record's `save` writes atomically with cache.atomic_write_text
    ("data", "models"),
    ("formats",),
    ("evaluate",),
    ("prune",),
    ("finetune",),
    ("shrink",),  # the search behind `babelprune shrink`; the verb passes in how candidates are built and scored
    ("flags", "api"),
    ("sweep",),
    ("report",),
    ("demo", "__init__"),
    ("cli",),
]

def package_of(module: str) -> str:
    """The top-level package or module of `module` within its root package ("__init__" for the root itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def floor_numbers(floors: list[tuple[str, ...]]) -> dict[str, int]:
    return {package: number for number, packages in enumerate(floors) for package in packages}


def climbing_edges(graph: dict[str, set[str]], floors: list[tuple[str, ...]]) -> set[tuple[str, str]]:
    """Every import (importer, imported) whose imported module lies on a higher floor than its importer."""
    floor = floor_numbers(floors)
    return {
        (module, target)
        for module, targets in graph.items()
        for target in targets
        if floor[package_of(target)] > floor[package_of(module)]
    }


def mutual_packages(graph: dict[str, set[str]], leave_out: set[tuple[str, str]] = frozenset()) -> set[tuple[str, str]]:
    """The pairs of packages (sorted) that import each other, edges in `leave_out` not counted."""
    edges = {
        (package_of(module), package_of(target))
        for module, targets in graph.items()
        for target in targets
        if (module, target) not in leave_out and package_of(module) != package_of(target)
    }
    return {tuple(sorted(edge)) for edge in edges if edge[::-1] in edges}


def test_floor_checker_on_a_hand_made_graph():
    floors = [("low",), ("high", "side")]
    graph = {
        "pkg": set(),
        "pkg.low.a": {"pkg.high.b"},  # climbs: low is below high
        "pkg.high.b": {"pkg.low.a", "pkg.side"},  # legal: down a floor, and across its own floor
        "pkg.side": {"pkg.high"},
        "pkg.high": {"pkg.side"},  # legal floors, but high and side import each other
    }
    assert climbing_edges(graph, floors) == {("pkg.low.a", "pkg.high.b")}
    assert mutual_packages(graph) == {("high", "low"), ("high", "side")}
    assert mutual_packages(graph, leave_out={("pkg.low.a", "pkg.high.b")}) == {("high", "side")}


def test_every_babelprune_package_has_a_floor():
    packages = {package_of(module) for module in import_graph()}
    floors = set(floor_numbers(FLOORS))
    assert packages == floors, f"without a floor: {sorted(packages - floors)}; no such package: {sorted(floors - packages)}"


def test_no_babelprune_import_climbs():
    climbing = sorted(climbing_edges(import_graph(), FLOORS))
    assert not climbing, "imports that climb to a higher floor (import downward: move the shared piece to the lower "
    "package, or pass it in): " + "; ".join(f"{a} -> {b}" for a, b in climbing)


def test_no_two_babelprune_packages_import_each_other():
    pairs = mutual_packages(import_graph())
    assert not pairs, "packages that import each other: " + "; ".join(f"{a} <-> {b}" for a, b in sorted(pairs))


def test_records_load_without_torch():
    # The records sit at the bottom so that reading a result or a store needs no model code: every
    # record, RunRecord and the GMP schedule included, imports without torch or the pruning package.
    import subprocess
    import sys

    code = (
        "import sys, babelprune.records as records\n"
        "for name in records.__all__: getattr(records, name)\n"
        "heavy = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('babelprune.prune', 'babelprune.report')))\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
