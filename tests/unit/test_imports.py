"""The package's import structure: light modules stay light, and no module imports itself back.

``import scout_tasks.cron`` (the cron evaluator a console or a script uses)
must not load Celery or kombu: the app behind ``scout_tasks.app`` is loaded
on first use. And no two modules import each other, directly or around a
circle, counting imports inside functions too (a lazy import is still a
dependency; hiding a circle in a function only moves the surprise).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import scout_tasks

PACKAGE = Path(scout_tasks.__file__).parent


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(result.stdout.split())


def test_importing_cron_loads_no_celery_or_kombu() -> None:
    loaded = _loaded_after("import scout_tasks.cron")

    assert "scout_tasks.cron" in loaded
    heavy = sorted(m for m in loaded if m.split(".")[0] in ("celery", "kombu", "amqp"))
    assert heavy == []
    assert "scout_tasks.celery_app" not in loaded


def test_the_app_is_still_found_as_scout_tasks_app() -> None:
    # What `celery -A scout_tasks` does: import the package, read its `app`.
    loaded = _loaded_after("import scout_tasks; assert type(scout_tasks.app).__name__ == 'Celery'")

    assert "scout_tasks.celery_app" in loaded


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _in_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """The scout_tasks modules ``path`` imports anywhere in its body (not for typing only)."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if _in_type_checking(node, parents):
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pkg import mod` imports mod (running pkg's __init__, which is
            # not an edge, as above); `from mod import Name` imports mod.
            named = [f"{base}.{alias.name}" for alias in node.names]
            targets = [t for t in named if t in modules] or [base]
        for target in targets:
            # `from scout_tasks import db` names a module; `from x import Func` names x.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts}
    modules = set(paths)
    graph = {name: _imports(path, name, modules) for name, path in paths.items()}
    # Importing a submodule runs its package's __init__, which is not an edge
    # of the import graph we care about (the package root only names the app).
    for edges in graph.values():
        edges.discard("scout_tasks")
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_lazy_imports() -> None:
    graph = import_graph()

    # celery_app imports scout_tasks.db inside a signal handler.
    assert "scout_tasks.db" in graph["scout_tasks.celery_app"]
    assert "scout_tasks.celery_app" in graph["scout_tasks.tasks"]


def test_no_import_cycle_in_scout_tasks() -> None:
    assert find_cycle(import_graph()) is None


@pytest.mark.parametrize(
    "module", ["scout_tasks.dev.postgres", "scout_tasks.dev.binaries", "scout_tasks.dev.tempdirs"]
)
def test_only_dev_imports_the_postgres_process(module: str) -> None:
    graph = import_graph()

    importers = sorted(m for m, edges in graph.items() if module in edges)
    assert importers and all(m.startswith("scout_tasks.dev.") for m in importers), importers


ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"
# Package roots with no code of their own: importing them costs nothing.
NEUTRAL = {"scout_tasks", "scout_tasks.dev"}


def documented_layers() -> dict[str, int]:
    """docs/architecture.md's numbered layer list: module (or package) name -> layer."""
    text = ARCHITECTURE.read_text()
    section = text.split("## Modules", 1)[1]
    layers: dict[str, int] = {}
    for number, line in re.findall(r"^(\d+)\. (.+)$", section, flags=re.MULTILINE):
        for name in re.findall(r"`([a-z_.]+)`", line):
            layers[f"scout_tasks.{name}"] = int(number)
    return layers


def _layer_of(module: str, layers: dict[str, int]) -> int | None:
    owners = [n for n in layers if module == n or module.startswith(f"{n}.")]
    return layers[max(owners, key=len)] if owners else None


def test_every_module_has_a_documented_layer() -> None:
    layers = documented_layers()

    missing = sorted(m for m in import_graph() if m not in NEUTRAL and _layer_of(m, layers) is None)
    assert missing == [], f"add these to the layers in {ARCHITECTURE.name}: {missing}"


def test_imports_go_down_the_documented_layers() -> None:
    layers = documented_layers()

    upward = []
    for module, edges in import_graph().items():
        here = _layer_of(module, layers)
        for target in edges - NEUTRAL:
            there = _layer_of(target, layers)
            if here is not None and there is not None and there > here:
                upward.append(f"{module} (layer {here}) imports {target} (layer {there})")
    assert upward == []
