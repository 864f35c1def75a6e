"""The project's import graph: no cycles, and the packages depend one way.

Every `import` and `from … import` is read from the source with `ast`, wherever it sits
(module level, inside a function, under `if TYPE_CHECKING:`), so a cycle held open by a
function-local import is still a cycle here. Packages: probation -> devices -> alerts ->
geofence, all -> db; geofence and db import nothing of ours; the benches and the simulator
(`bench/`, `simulator/`, when present) are used only by the CLI.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("probation", "devices", "alerts", "geofence", "db")
TOOLS = ("bench", "simulator")

#: What each product package may import besides itself.
ALLOWED: dict[str, frozenset[str]] = {
    "probation": frozenset({"devices", "alerts", "geofence", "db"}),
    "devices": frozenset({"alerts", "geofence", "db"}),
    "alerts": frozenset({"geofence", "db"}),
    "geofence": frozenset(),
    "db": frozenset(),
}
#: Modules (and their submodules) that may import the benches and the simulator.
TOOL_USERS = ("probation.cli",)


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages under `root`."""
    found: dict[str, Path] = {}
    for package in PRODUCT + TOOLS:
        base = root / package
        if not (base / "__init__.py").is_file():
            continue
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _targets(node: ast.AST, module: str, is_package: bool, known: set[str]) -> Iterable[str]:
    """The project modules one import statement names."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield from _deepest(alias.name, known)
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = module.split(".")
            anchor = anchor if is_package else anchor[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            candidate = f"{base}.{alias.name}"
            if candidate in known:
                yield candidate
            else:
                yield from _deepest(base, known)


def _deepest(name: str, known: set[str]) -> Iterable[str]:
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in known:
            yield prefix
            return


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the project modules it imports (anywhere in its source)."""
    files = module_files(root)
    known = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        edges = {
            target
            for node in ast.walk(tree)
            for target in _targets(node, name, is_package, known)
            if target != name
        }
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
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
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def direction_violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports against the package direction, as `importer -> imported`."""
    bad: list[str] = []
    for module, targets in sorted(graph.items()):
        package = module.split(".")[0]
        for target in sorted(targets):
            other = target.split(".")[0]
            if other == package:
                continue
            if other in TOOLS:
                ok = package in TOOLS or any(
                    module == user or module.startswith(user + ".") for user in TOOL_USERS
                )
            else:
                ok = package in TOOLS or other in ALLOWED[package]
            if not ok:
                bad.append(f"{module} -> {target}")
    return bad


def test_the_graph_covers_the_project() -> None:
    graph = import_graph(ROOT)
    assert {"probation.app", "probation.api", "probation.deps", "devices.ingest",
            "alerts.service", "geofence.geometry", "db.engine"} <= set(graph)
    # a function-local import is an edge: the CLI imports the app inside its commands
    assert "probation.app" in graph["probation.cli"] or any(
        "probation.app" in targets for name, targets in graph.items()
        if name.startswith("probation.cli.")
    )


def test_no_module_imports_another_in_a_cycle() -> None:
    assert cycles(import_graph(ROOT)) == []


def test_packages_import_one_way() -> None:
    assert direction_violations(import_graph(ROOT)) == []


def test_a_cycle_through_a_function_local_import_is_found(tmp_path: Path) -> None:
    pkg = tmp_path / "probation"
    (pkg / "api").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "app.py").write_text("def create():\n    from probation.api import install\n")
    (pkg / "api" / "__init__.py").write_text("from . import users\ndef install(): ...\n")
    (pkg / "api" / "users.py").write_text("def f():\n    from probation import app\n")
    (pkg / "deps.py").write_text("import probation.app\n")
    assert cycles(import_graph(tmp_path)) == [["probation.api", "probation.api.users",
                                               "probation.app"]]


def test_an_import_against_the_direction_is_found(tmp_path: Path) -> None:
    for package, source in {"geofence": "import devices.ingest\n",
                            "devices": "from alerts import models\n"}.items():
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(source)
    (tmp_path / "devices" / "ingest.py").write_text("")
    (tmp_path / "alerts").mkdir()
    (tmp_path / "alerts" / "__init__.py").write_text("")
    (tmp_path / "alerts" / "models.py").write_text("")
    assert direction_violations(import_graph(tmp_path)) == ["geofence -> devices.ingest"]
