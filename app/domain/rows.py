"""Schema-table rows: applying a load or an update, and describing the change as an event."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.domain.intake import load_json
from app.errors import MalformedEvent


@dataclass(frozen=True)
class RowChange:
    """One row change, published on `events.schema` as a `schema_table` event."""

    table: str
    customer_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    @property
    def operation(self) -> str:
        if self.before is None:
            return "insert"
        return "delete" if self.after is None else "update"

    @property
    def changed(self) -> list[str]:
        before, after = self.before or {}, self.after or {}
        return sorted(k for k in before.keys() | after.keys() if before.get(k, _ABSENT) != after.get(k, _ABSENT))

    def to_json(self) -> dict[str, Any]:
        return {
            "type": f"{self.table}.{self.operation}",
            "customerId": self.customer_id,
            "table": self.table,
            "before": self.before,
            "after": self.after,
            "changed": self.changed,
        }


_ABSENT = object()


def merge_row(table: str, customer_id: str, before: dict[str, Any] | None,
              attributes: dict[str, Any] | None) -> RowChange | None:
    """Merge `attributes` into the row (None deletes it); None when nothing would change."""
    after = None if attributes is None else {**(before or {}), **attributes}
    if after is not None:
        after.setdefault("customerId", customer_id)
    if after == before:
        return None
    return RowChange(table, customer_id, before, after)


@dataclass(frozen=True)
class RowLoad:
    """A request on `schema.rows`: merge `attributes` into a row, or delete it."""

    table: str
    customer_id: str
    attributes: dict[str, Any] | None


def parse_row_load(raw: bytes | None) -> RowLoad:
    """`{"table": "customers", "customerId": "c-42", "attributes": {...}}`, or `"delete": true`."""
    try:
        data = load_json(raw) if raw is not None else None
    except (ValueError, RecursionError) as exc:
        raise MalformedEvent(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedEvent("a row load is a JSON object with table, customerId and attributes")
    table, customer_id = data.get("table", "customers"), data.get("customerId")
    if not isinstance(table, str) or not table:
        raise MalformedEvent("field 'table' must be a non-empty string")
    if not isinstance(customer_id, str) or not customer_id:
        raise MalformedEvent("field 'customerId' must be a non-empty string")
    if data.get("delete") is True:
        return RowLoad(table, customer_id, None)
    attributes = data.get("attributes")
    if not isinstance(attributes, dict):
        raise MalformedEvent("field 'attributes' must be an object (or set \"delete\": true)")
    return RowLoad(table, customer_id, attributes)
