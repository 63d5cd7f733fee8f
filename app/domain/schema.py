"""Schema tables: typed columns, and checking the values an update_attribute action writes."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from app.domain import limits
from app.domain.models import ID_PATTERN, Contract, FieldName

ColumnType = Literal["string", "number", "boolean", "timestamp"]
CUSTOMERS = "customers"
# The tables' codec (orjson) and most readers stop at 64 bits: a larger integer would parse,
# pass a type check, and then fail when the row is written.
MIN_INT, MAX_INT = -(2**63), 2**63 - 1


class SchemaTable(Contract):
    """`schema.tables` / `triggers_config/tables/*.json`: `{"name", "columns", "allowUnknownColumns"}`."""

    name: str = Field(pattern=ID_PATTERN)
    columns: dict[FieldName, ColumnType] = Field(default_factory=dict, max_length=limits.MAX_COLUMNS)
    allow_unknown_columns: bool = Field(default=False, alias="allowUnknownColumns", strict=True)


# Until a definition for `customers` is published, it takes any column: rows loaded before
# anyone described the table must keep working.
DEFAULT_CUSTOMERS = SchemaTable.model_validate({"name": CUSTOMERS, "allowUnknownColumns": True})


class ColumnTypeError(ValueError):
    """A value does not fit its column; the whole update is refused."""


def check_row_values(table: SchemaTable, values: dict[str, Any]) -> dict[str, Any]:
    """The values as stored (timestamps as ISO 8601 text), or ColumnTypeError naming each problem."""
    stored: dict[str, Any] = {}
    problems: list[str] = []
    for column, value in values.items():
        column_type = table.columns.get(column)
        if column_type is None and not table.allow_unknown_columns:
            problems.append(f"table {table.name!r} has no column {column!r}")
            continue
        try:
            stored[column] = _coerce(column_type, value) if column_type else _json_value(value)
        except ColumnTypeError as exc:
            problems.append(f"column {column!r}: {exc}")
    if problems:
        raise ColumnTypeError("; ".join(problems))
    return stored


def _coerce(column_type: ColumnType, value: Any) -> Any:
    if value is None:
        return None  # any column may be cleared
    if column_type == "string" and isinstance(value, str):
        return value
    if column_type == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return _number(value)
    if column_type == "boolean" and isinstance(value, bool):
        return value
    if column_type == "timestamp":
        if isinstance(value, datetime) and value.tzinfo is not None:
            return value.isoformat()
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise ColumnTypeError(f"{value!r} is not an ISO 8601 timestamp") from None
            if parsed.tzinfo is not None:
                return parsed.isoformat()
        raise ColumnTypeError(f"expected a timestamp with a time zone, got {value!r}")
    raise ColumnTypeError(f"expected {column_type}, got {type(value).__name__} {value!r}")


def _json_value(value: Any) -> Any:
    """Any JSON value, nested ones included; times become ISO 8601 text."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _number(value)
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: _json_value(item) for key, item in value.items()}
    raise ColumnTypeError(f"{type(value).__name__} cannot be stored")


def _number(value: int | float) -> int | float:
    if isinstance(value, float) and not math.isfinite(value):
        raise ColumnTypeError(f"{value!r} is not a finite number")
    if isinstance(value, int) and not MIN_INT <= value <= MAX_INT:
        raise ColumnTypeError(f"a {value.bit_length()}-bit integer is outside the signed 64-bit range")
    return value
