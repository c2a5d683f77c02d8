"""The layering of docs/design.md, enforced: imports only go downwards and never in a circle.

Imports are read from the source (module level and inside functions alike), so a lazy import
that would close a cycle or reach up a layer fails here too.
"""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("webhook_service", "handlers", "jobs")
#: Bottom to top. A module may import its own layer and the ones below it.
LAYERS = {"core": 0, "handlers": 1, "processing": 2, "web": 3, "top": 4}
#: What the two bottom layers may import from outside the project (beside the standard library).
BOTTOM_THIRD_PARTY = {"sqlalchemy", "marshmallow", "orjson"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _project_modules() -> dict[str, Path]:
    found = {"wsgi": ROOT / "wsgi.py"}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "versions" not in path.parts:
                found[_module_name(path)] = path
    return found


MODULES = _project_modules()


def layer_of(module: str) -> str:
    """The layer a project module belongs to (see the drawing in docs/design.md)."""
    parts = module.split(".")
    if parts[0] == "handlers":
        return "handlers"
    if parts[0] == "webhook_service" and len(parts) > 1 and parts[1] in ("core", "processing", "web"):
        return parts[1]
    if module.startswith("webhook_service.migrations"):
        return "processing"
    if module == "webhook_service":
        return "core"
    return "top"  # startup, cli, workers, demo, jobs, wsgi


def imports_of(module: str) -> tuple[set[str], set[str]]:
    """(project modules, top-level third-party names) that `module` imports anywhere in its source."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    project, external = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [f"{node.module}.{alias.name}" for alias in node.names]
            targets = [t if t in MODULES else node.module for t in targets]
        else:
            continue
        for target in targets:
            while target not in MODULES and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in MODULES:
                if target != module:
                    project.add(target)
            else:
                external.add(target.split(".")[0])
    return project, external


@functools.cache
def graph() -> dict[str, set[str]]:
    """Each project module's project imports (built on first use, not when the suite is collected)."""
    return {module: imports_of(module)[0] for module in MODULES}


def test_import_handlers_loads_no_web_queue_or_sentry_code():
    probe = (
        "import sys, handlers; "
        "print(sorted(m for m in ('flask', 'rq', 'redis', 'sentry_sdk') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layers(module):
    mine = LAYERS[layer_of(module)]
    upward = sorted(t for t in graph()[module] if LAYERS[layer_of(t)] > mine)
    assert not upward, f"{module} ({layer_of(module)}) imports a higher layer: {upward}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer_of(m) in ("core", "handlers")))
def test_bottom_layers_use_no_web_queue_or_network_library(module):
    external = imports_of(module)[1] - set(sys.stdlib_module_names) - BOTTOM_THIRD_PARTY
    assert not external, f"{module} imports {sorted(external)}"


def test_no_two_modules_import_each_other():
    # Tarjan's strongly connected components: any component of two or more modules is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph()[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph()):
        if node not in index:
            visit(node)
    assert not cycles, f"modules that import each other: {cycles}"


def test_the_checker_sees_imports_inside_functions():
    # The graph must count lazy imports; cli.py imports the demo inside a command.
    assert "webhook_service.demo" in graph()["webhook_service.cli"]
