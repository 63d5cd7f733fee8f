"""Reading customer rows for bulk loads: JSON lines (`schema.rows` records) or CSV."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.domain.intake import load_json
from app.domain.rows import RowLoad, parse_row_load
from app.errors import MalformedEvent

CUSTOMER_COLUMN = "customerId"


def read_rows(path: Path, table: str = "customers") -> Iterator[tuple[int, RowLoad | str]]:
    """(line number, row) or (line number, error text), streaming so a large file is not
    held in memory. `.csv` files need a `customerId` column; other files are JSON lines."""
    if path.suffix.lower() == ".csv":
        yield from _csv_rows(path, table)
    else:
        yield from _jsonl_rows(path, table)


def _jsonl_rows(path: Path, table: str) -> Iterator[tuple[int, RowLoad | str]]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                data = load_json(line)
                if isinstance(data, dict):
                    data.setdefault("table", table)
                yield number, parse_row_load(json.dumps(data).encode())
            except ValueError as exc:
                yield number, f"not valid JSON: {exc}"
            except MalformedEvent as exc:
                yield number, exc.reason


def _csv_rows(path: Path, table: str) -> Iterator[tuple[int, RowLoad | str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if CUSTOMER_COLUMN not in (reader.fieldnames or []):
            yield 1, f"CSV header has no {CUSTOMER_COLUMN!r} column"
            return
        for row in reader:
            number = reader.line_num
            customer = (row.pop(CUSTOMER_COLUMN) or "").strip()
            if not customer:
                yield number, f"empty {CUSTOMER_COLUMN}"
                continue
            yield number, RowLoad(table, customer, {k: _cell(v) for k, v in row.items() if k})


def _cell(text: str | None) -> Any:
    """A CSV cell as a JSON scalar when it reads as one (42, 4.2, true, null), else text;
    an empty cell is null."""
    if text is None or text == "":
        return None
    try:
        value = load_json(text)
    except ValueError:
        return text  # includes NaN and Infinity, which stay text rather than become non-JSON
    return value if isinstance(value, int | float | bool) or value is None else text
