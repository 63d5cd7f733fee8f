"""Reading `triggers_config/`: every file checked first, every problem reported with its place."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.domain.definitions import compile_definition
from app.domain.rows import RowLoad, parse_row_load
from app.errors import InvalidDefinition, MalformedEvent

# Folder name inside a config directory -> what its files hold.
TRIGGERS_DIR = "triggers"
ROWS_DIR = "rows"


@dataclass
class ConfigBundle:
    """Everything found under the given paths, ready to publish only if `errors` is empty."""

    triggers: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    rows: list[RowLoad] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def read_config(paths: list[Path]) -> ConfigBundle:
    """Triggers from `*.json` files (one object or a list) in a `triggers/` folder or named
    directly; schema-table rows from `*.jsonl` files in a `rows/` folder."""
    bundle = ConfigBundle()
    for path in paths:
        if not path.exists():
            bundle.errors.append(f"{path}: no such file or directory")
        elif path.is_dir():
            _read_dir(path, bundle)
        elif path.suffix == ".jsonl":
            _read_rows(path, bundle)
        else:
            _read_triggers(path, bundle)
    _check_unique_ids(bundle)
    return bundle


def _read_dir(path: Path, bundle: ConfigBundle) -> None:
    triggers_dir = path / TRIGGERS_DIR if (path / TRIGGERS_DIR).is_dir() else path
    for file in sorted(triggers_dir.glob("*.json")):
        _read_triggers(file, bundle)
    for file in sorted((path / ROWS_DIR).glob("*.jsonl")):
        _read_rows(file, bundle)


def _read_triggers(path: Path, bundle: ConfigBundle) -> None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
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
            compile_definition(item)
        except InvalidDefinition as exc:
            bundle.errors.extend(f"{where}: {error}" for error in exc.errors)
            continue
        bundle.triggers.append((where, item))


def _read_rows(path: Path, bundle: ConfigBundle) -> None:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        bundle.errors.append(f"{path}: {exc}")
        return
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            bundle.rows.append(parse_row_load(line.encode()))
        except MalformedEvent as exc:
            bundle.errors.append(f"{path}:{number}: {exc.reason}")


def _check_unique_ids(bundle: ConfigBundle) -> None:
    seen: dict[str, str] = {}
    for where, item in bundle.triggers:
        trigger_id = item["id"]
        if trigger_id in seen:
            bundle.errors.append(f"{where}: id {trigger_id!r} is also defined in {seen[trigger_id]}")
        seen.setdefault(trigger_id, where)
