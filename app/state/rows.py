"""Customer rows: read for conditions, merged by row loads and `update_attribute`, each change
published on `events.schema`."""

from __future__ import annotations

from typing import Any

from app.domain.deadletters import check_storable
from app.domain.encoding import encode
from app.domain.rows import merge_row
from app.domain.schema import CUSTOMERS
from app.kafka.publisher import Publisher, check_size
from app.state.tables import Table, row_key, stored


class RowStore:
    def __init__(self, rows: Table, publisher: Publisher) -> None:
        self.rows = rows
        self.publisher = publisher

    def customer(self, customer_id: str) -> dict[str, Any] | None:
        """The customer's `customers` row, or None."""
        row: dict[str, Any] | None = stored(self.rows, row_key(CUSTOMERS, customer_id))
        return row

    async def write(self, table: str, customer_id: str, values: dict[str, Any] | None,
                    depth: int = 0, firing_id: str | None = None) -> dict[str, Any] | None:
        """Merge `values` into the row (None deletes it) and publish the change on
        `events.schema`; returns the change, or None when nothing changed.

        Raises Unstorable or RecordTooLarge, having changed nothing, when the row could not
        be written to the table or the change could not be published."""
        key = row_key(table, customer_id)
        change = merge_row(table, customer_id, stored(self.rows, key), values)
        if change is None:
            return None
        record = {**change.to_json(), "depth": depth}
        if firing_id:
            record["firingId"] = firing_id
        # Checked before the table is touched: a refused change must leave no half-written state.
        value = encode(record)
        schema_topic = self.publisher.topics.schema
        check_size(schema_topic, customer_id.encode(), value)
        if change.after is None:
            self.rows.pop(key, None)
        else:
            check_storable(change.after)
            self.rows[key] = change.after
        await self.publisher.send(schema_topic, customer_id, value)
        return record
