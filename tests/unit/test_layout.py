"""The package's layers and the direction of its imports (README, "Hacking on taskd").

Every `import taskd...` in the package, at the top of a module or inside a function, may only
point at the importer's own layer or a lower one, and the module graph has no cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "taskd"

# Lowest first. A module belongs to the layer of the longest prefix that names it.
LAYERS: list[tuple[str, ...]] = [
    ("taskd.errors", "taskd"),
    ("taskd.models", "taskd.durations", "taskd.clock", "taskd.faults"),
    (
        "taskd.yamldoc",
        "taskd.schedule",
        "taskd.retry",
        "taskd.slots",
        "taskd.resources",
        "taskd.capacity",
        "taskd.systemd",
        "taskd.logs",
        "taskd.metrics",
    ),
    ("taskd.store", "taskd.cluster", "taskd.live", "taskd.schedule_words"),
    ("taskd.processor",),
    ("taskd.procgroup", "taskd.reaper", "taskd.cgroups", "taskd.processors", "taskd.channels"),
    ("taskd.config", "taskd.crontab"),
    ("taskd.chain", "taskd.alerts", "taskd.dependencies", "taskd.forecast"),
    ("taskd.recorder", "taskd.runner"),
    ("taskd.engine", "taskd.alerter"),
    ("taskd.http",),
    ("taskd.daemon",),
    ("taskd.client",),
    ("taskd.cli", "taskd.__main__", "taskd.install"),
]

# Third-party imports that belong to one place only.
CONFINED = {
    "apscheduler": ("taskd.engine.timer",),
    "aiosqlite": ("taskd.store.sqlite",),
    "asyncpg": ("taskd.cluster.postgres", "taskd.store.postgres"),
    "prometheus_client": ("taskd.metrics",),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, name: str) -> Iterator[str]:
    """Every module `path` imports, absolute, wherever the import statement is."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            yield target
            # `from taskd.store import memory` imports the submodule too.
            yield from (f"{target}.{alias.name}" for alias in node.names)


def layer_of(name: str) -> int:
    best, best_len = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best >= 0, f"{name} is in no layer: add it to LAYERS and to the README"
    return best


def graph() -> dict[str, set[str]]:
    known = modules()
    return {
        name: {target for target in imports(path, name) if target in known and target != name}
        for name, path in known.items()
    }


def test_every_module_has_a_layer() -> None:
    for name in modules():
        layer_of(name)


def test_imports_point_down_or_sideways_never_up() -> None:
    upward = [
        f"{name} (layer {layer_of(name)}) imports {target} (layer {layer_of(target)})"
        for name, targets in graph().items()
        for target in sorted(targets)
        if layer_of(target) > layer_of(name)
    ]
    assert upward == []


def test_the_module_graph_has_no_cycle() -> None:
    edges = graph()
    # A package imports its own submodules by design; a submodule importing its package back
    # (or anything that leads back to it) is the cycle this looks for.
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert cycles == []


@pytest.mark.parametrize("library", sorted(CONFINED))
def test_some_libraries_are_imported_in_one_place_only(library: str) -> None:
    users = sorted(
        name
        for name, path in modules().items()
        if any(target == library or target.startswith(library + ".") for target in imports(path, name))
    )
    assert users == sorted(CONFINED[library])


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The AST walk finds imports inside functions and relative ones, so a lazy upward import
    cannot slip through."""
    source = tmp_path / "taskd" / "store" / "x.py"
    source.parent.mkdir(parents=True)
    source.write_text("def f():\n    from ..engine import Engine\n    import taskd.http.app\n")
    found = set(imports(source, "taskd.store.x"))
    assert {"taskd.engine", "taskd.engine.Engine", "taskd.http.app"} <= found
    assert layer_of("taskd.engine") > layer_of("taskd.store.x")


def _attributes(package: str) -> Iterator[tuple[str, ast.Attribute]]:
    for name, path in modules().items():
        if name == package or name.startswith(package + "."):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Attribute):
                    yield name, node


@pytest.mark.parametrize("package", ["taskd.engine", "taskd.http"])
def test_the_engine_and_the_api_never_ask_whether_the_store_is_shared(package: str) -> None:
    """They talk to whichever coordinator they were given: one node or many is the coordinator's business."""
    asked = [f"{name}: .{node.attr}" for name, node in _attributes(package) if node.attr in ("clustered", "shared")]
    assert asked == []


def test_the_api_calls_the_engine_and_never_reaches_through_it() -> None:
    """The HTTP layer uses the engine's own methods, not its slot pool, run table, coordinator or timer."""
    inner = {"slots", "runs", "membership", "coordinator", "firing", "timer", "store", "_tasks"}
    reached = [
        f"{name}: engine.{node.attr}"
        for name, node in _attributes("taskd.http")
        if node.attr in inner
        and (
            (isinstance(node.value, ast.Name) and node.value.id == "engine")
            or (isinstance(node.value, ast.Attribute) and node.value.attr == "_engine")
        )
    ]
    assert reached == []
