"""Reading `triggers_config/`: every file checked first, every problem reported with its place."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.cli.row_files import read_rows
from app.domain.definitions import (
    compile_decision_flow,
    compile_definition,
    compile_journey,
    compile_policy_definition,
    compile_schema_table,
)
from app.domain.intake import DuplicateKeys, load_unique_json
from app.domain.rows import RowLoad
from app.errors import InvalidDefinition

# Folder inside a config directory -> how its JSON files are checked, and their id field.
KINDS: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "triggers": (compile_definition, "id"),
    "journeys": (compile_journey, "id"),
    "decisionflows": (compile_decision_flow, "id"),
    "tables": (compile_schema_table, "name"),
    "policies": (compile_policy_definition, "id"),
}
TRIGGERS_DIR = "triggers"
ROWS_DIR = "rows"


@dataclass
class ConfigBundle:
    """Everything found under the given paths, ready to publish only if `errors` is empty."""

    definitions: dict[str, list[tuple[str, dict[str, Any]]]] = field(
        default_factory=lambda: {kind: [] for kind in KINDS})
    rows: list[RowLoad] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def triggers(self) -> list[tuple[str, dict[str, Any]]]:
        return self.definitions["triggers"]


def read_config(paths: list[Path]) -> ConfigBundle:
    """Definitions from `*.json` files (one object or a list) in the folders `triggers/`,
    `journeys/`, `decisionflows/`, `tables/` and `policies/` (a file named directly is a trigger);
    schema-table rows from `*.jsonl` files in `rows/`."""
    bundle = ConfigBundle()
    for path in paths:
        if not path.exists():
            bundle.errors.append(f"{path}: no such file or directory")
        elif path.is_dir():
            _read_dir(path, bundle)
        elif path.suffix in (".jsonl", ".csv"):
            _read_rows(path, bundle)
        else:
            _read_definitions(path, "triggers", bundle)
    for kind in KINDS:
        _check_unique_ids(bundle, kind)
    return bundle


def _read_dir(path: Path, bundle: ConfigBundle) -> None:
    if not any((path / kind).is_dir() for kind in KINDS):
        for file in sorted(path.glob("*.json")):  # a bare folder of trigger files
            _read_definitions(file, "triggers", bundle)
    for kind in KINDS:
        for file in sorted((path / kind).glob("*.json")):
            _read_definitions(file, kind, bundle)
    for pattern in ("*.jsonl", "*.csv"):
        for file in sorted((path / ROWS_DIR).glob(pattern)):
            _read_rows(file, bundle)


def _read_definitions(path: Path, kind: str, bundle: ConfigBundle) -> None:
    compile_, _id_field = KINDS[kind]
    try:
        data = load_unique_json(path.read_text(encoding="utf-8"))
    except DuplicateKeys as exc:  # a repeated key would silently keep its last value
        bundle.errors.extend(f"{path}: {problem}" for problem in exc.problems)
        return
    except (OSError, ValueError) as exc:
        bundle.errors.append(f"{path}: cannot read JSON: {exc}")
        return
    items = data if isinstance(data, list) else [data]
    for position, item in enumerate(items):
        where = f"{path}" + (f"[{position}]" if isinstance(data, list) else "")
        if not isinstance(item, dict):
            bundle.errors.append(f"{where}: a definition is a JSON object")
            continue
        try:
            compile_(item)
        except InvalidDefinition as exc:
            bundle.errors.extend(f"{where}: {error}" for error in exc.errors)
            continue
        bundle.definitions[kind].append((where, item))


def _read_rows(path: Path, bundle: ConfigBundle) -> None:
    try:
        for number, row in read_rows(path):
            if isinstance(row, str):
                bundle.errors.append(f"{path}:{number}: {row}")
            else:
                bundle.rows.append(row)
    except OSError as exc:
        bundle.errors.append(f"{path}: {exc}")


def _check_unique_ids(bundle: ConfigBundle, kind: str) -> None:
    id_field = KINDS[kind][1]
    seen: dict[str, str] = {}
    for where, item in bundle.definitions[kind]:
        item_id = item[id_field]
        if item_id in seen:
            bundle.errors.append(f"{where}: {id_field} {item_id!r} is also defined in {seen[item_id]}")
        seen.setdefault(item_id, where)
