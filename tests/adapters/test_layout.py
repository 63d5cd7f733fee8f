"""The layout's rules, checked on the source: no import cycles, the domain imports no I/O,
nothing but app.main imports the composition root, and importing app.main builds nothing."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"
IO_LIBRARIES = {"faust", "mode", "aiokafka", "httpx", "rocksdict", "aiohttp"}


def module_name(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path) -> set[str]:
    """Modules `path` imports when it runs (imports under `if TYPE_CHECKING:` left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = {module_name(p): p for p in APP.rglob("*.py")}
GRAPH = {name: {m for m in runtime_imports(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def test_there_are_no_import_cycles() -> None:
    def cycle_from(start: str) -> list[str] | None:
        stack: list[tuple[str, list[str]]] = [(start, [start])]
        seen: set[str] = set()
        while stack:
            node, trail = stack.pop()
            for target in GRAPH[node]:
                if target == start:
                    return [*trail, start]
                if target not in seen:
                    seen.add(target)
                    stack.append((target, [*trail, target]))
        return None

    cycles = [cycle for name in sorted(GRAPH) if (cycle := cycle_from(name))]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:5])


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("app.domain")))
def test_the_domain_imports_no_io_and_nothing_of_the_shell(name: str) -> None:
    imported = runtime_imports(MODULES[name])
    shell = sorted(m for m in imported if m.startswith("app.") and not m.startswith(("app.domain", "app.errors")))
    io = sorted(m for m in imported if m.split(".")[0] in IO_LIBRARIES)
    assert not shell and not io, f"{name} imports {shell + io}"


def test_only_app_main_imports_the_composition_root() -> None:
    importers = sorted(name for name, targets in GRAPH.items() if "app.wiring" in targets)
    assert importers == ["app.main"]


def test_importing_app_main_builds_nothing_and_reads_no_settings() -> None:
    probe = ("import sys, app.main, app.cli.commands\n"
             "import app.settings\n"
             "assert app.settings.get_settings.cache_info().currsize == 0, 'settings were read'\n"
             "assert app.main._app.cache_info().currsize == 0, 'the app was built'\n")
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=APP.parent)


def test_every_action_type_has_one_performer_and_a_topic() -> None:
    from app.actions import PERFORMERS
    from app.domain.models import ACTION_TYPES
    from app.topics import Topics

    assert sorted(p.action_type for p in PERFORMERS) == sorted(ACTION_TYPES)
    assert {Topics().action(t) for t in ACTION_TYPES} <= {spec.name for spec in Topics().specs()}
