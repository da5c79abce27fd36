"""The package's layers, read from its own source: who may import whom, and no cycles.

Every import is counted, including those inside functions and under TYPE_CHECKING, so a cycle
cannot hide in a function body.
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "convai_async"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """Every module (ours or not) that ``name`` imports, anywhere in its source."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # ``from . import protocol`` imports a module, not a name
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def our_imports(name: str) -> set[str]:
    return {m for m in imports_of(name) if m in MODULES and m != name}


def test_the_import_graph_has_no_cycle() -> None:
    graph = {name: our_imports(name) - {"convai_async"} for name in MODULES}
    # a package's __init__ re-exports its modules; only the modules' own edges can cycle
    for name in MODULES:
        if MODULES[name].name == "__init__.py":
            graph[name] = set()
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as cycle:
        pytest.fail(f"import cycle: {' -> '.join(cycle.args[1])}")


def importers_of(prefix: str) -> set[str]:
    return {
        name
        for name in MODULES
        if any(m == prefix or m.startswith(prefix + ".") for m in imports_of(name))
    }


def test_only_the_transport_uses_aiohttps_client_and_the_fake_its_server() -> None:
    users = {
        name for name in importers_of("aiohttp") if not name.startswith("convai_async.testing")
    }
    assert users <= {"convai_async._engine.transport", "convai_async.client"}
    # client.py names aiohttp only for the caller's own ClientSession and TraceConfig types


def test_the_wire_layer_is_pure() -> None:
    for name in MODULES:
        if name.startswith("convai_async._wire"):
            assert not imports_of(name) & {"aiohttp", "asyncio", "time", "socket"}, name


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        (
            "convai_async._wire",
            ("convai_async._engine", "convai_async.client", "convai_async.bulk"),
        ),
        ("convai_async._engine", ("convai_async.client", "convai_async.bulk", "convai_async.cli")),
        ("convai_async.resources", ("convai_async.client", "convai_async.bulk")),
        ("convai_async.bulk", ("convai_async.client", "convai_async.cli")),
    ],
)
def test_layers_import_only_downwards(layer: str, forbidden: tuple[str, ...]) -> None:
    for name in MODULES:
        if name == layer or name.startswith(layer + "."):
            bad = {m for m in our_imports(name) if m.startswith(forbidden)}
            assert not bad, f"{name} imports {bad}"


def test_the_cli_uses_only_the_public_api() -> None:
    for name in MODULES:
        if name == "convai_async.cli" or name.startswith(
            ("convai_async.cli.", "convai_async.testing")
        ):
            private = {
                m
                for m in our_imports(name)
                if any(part.startswith("_") for part in m.split(".")[1:])
                and not m.startswith(("convai_async.cli", "convai_async.testing"))
                and m != "convai_async._version"
            }
            assert not private, f"{name} imports private modules {private}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_each_module_is_small_and_says_its_job(name: str) -> None:
    source = MODULES[name].read_text(encoding="utf-8")
    assert len(source.splitlines()) <= MAX_LINES, f"{name} is over {MAX_LINES} lines"
    docstring = ast.get_docstring(ast.parse(source))
    assert docstring, f"{name} has no docstring"
    assert docstring.splitlines()[0].strip(), f"{name}'s docstring has no first line"
