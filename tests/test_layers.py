"""The package's shape, checked from its source: layers import downward only, no import cycles
(function-local imports included), no module over 400 lines.

Layers, bottom to top::

    base    zerokv.version, zerokv.errors, zerokv.io, zerokv.checks, zerokv.presets
            (small helpers that import nothing of zerokv above them)
    cache   zerokv.cache
    model   zerokv.model
    search  zerokv.search
    rl      zerokv.rl, and zerokv/__init__.py (the public facade: cache, model and search names,
            and ``zerokv.Agent`` from zerokv.rl.agent, imported on its first use)
    bench   zerokv.bench
    cli     zerokv.cli, zerokv.cli_flags, zerokv.__main__

A module may import its own layer and the layers below it. Imports under ``if TYPE_CHECKING:``
count too (a type named from above is still an upward dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "zerokv"
LAYERS = ["base", "cache", "model", "search", "rl", "bench", "cli"]
BASE = {"zerokv.version", "zerokv.errors", "zerokv.io", "zerokv.checks", "zerokv.presets",
        "zerokv.envs"}  # zerokv.envs: gymnasium envs of its own (memory tasks), no zerokv imports
MAX_LINES = 400
LIMITS = {"zerokv.model.world_model": 320}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer(module: str) -> str:
    if module == "zerokv":
        return "rl"
    if module in BASE or any(module.startswith(b + ".") for b in BASE):
        return "base"
    if module in ("zerokv.cli", "zerokv.cli_flags", "zerokv.__main__"):
        return "cli"
    return module.split(".")[1]


def resolve(name: str) -> str | None:
    """The zerokv module ``name`` refers to (a module, or a package for a name inside one)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> set[str]:
    """Every zerokv module ``module`` imports, at any depth of its code."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import module` names the module; `from pkg import name` runs pkg's __init__.
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        for name in names:
            target = resolve(name) if name.startswith("zerokv") else None
            if target and target != module:
                found.add(target)
    return found


GRAPH = {module: imports(module) for module in MODULES}


def test_every_module_is_in_a_layer():
    assert {layer(m) for m in MODULES} <= set(LAYERS)


def test_layers_import_downward_only():
    upward = [f"{m} ({layer(m)}) imports {t} ({layer(t)})" for m, targets in GRAPH.items() for t in sorted(targets)
              if LAYERS.index(layer(t)) > LAYERS.index(layer(m))]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    # A package's __init__ importing its own modules is how a package re-exports; an edge from a
    # module to a package facade above it counts as an edge to every module the facade imports.
    cycles, state = [], {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[module] = "done"

    for module in MODULES:
        if module not in state:
            visit(module, [])
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_size(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= LIMITS.get(module, MAX_LINES), f"{MODULES[module]} has {lines} lines"


def test_the_checker_sees_function_local_imports():
    assert "zerokv.rl.distributed" in GRAPH["zerokv.rl.trainer"]  # imported inside a method
