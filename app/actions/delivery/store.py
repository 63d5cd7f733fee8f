"""The deliveries table (waiting deliveries, keyed `<customerId>|<firingId>`) and its due index.

The table has a changelog and is co-partitioned with the actions topics (a delivery is written
in the partition its command was read from), so a waiting delivery survives kill -9 and moves
with its partition. The index holds only (due ms, key) per lane (partition, endpoint): one
endpoint's parked deliveries are found without scanning another's."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from app.domain.delivery import WaitingDelivery, delivery_key
from app.state.tables import stored
from app.timers.store import DueIndex

Lane = tuple[int, str]  # (partition, endpoint)


class DeliveryStore(DueIndex[Lane]):
    def get(self, key: str) -> WaitingDelivery | None:
        data = stored(self.table, key)
        return WaitingDelivery.from_json(data) if isinstance(data, dict) else None

    def contains(self, customer_id: str, firing_id: str) -> bool:
        return stored(self.table, delivery_key(customer_id, firing_id)) is not None

    def write(self, waiting: WaitingDelivery) -> None:
        """Store it (within its partition's table context); not indexed: see `index`."""
        self.table[waiting.key] = waiting.to_json()

    def index(self, partition: int, waiting: WaitingDelivery) -> None:
        self.push(lane(partition, waiting.endpoint), waiting.due_ms, waiting.key)

    def remove(self, key: str) -> None:
        if stored(self.table, key) is not None:
            del self.table[key]

    def entries(self, partition: int, key: str, record: Any) -> Iterable[tuple[Lane, int]]:
        if isinstance(record, dict) and "dueMs" in record:
            return [(lane(partition, str(record["endpoint"])), int(record["dueMs"]))]
        return []


def lane(partition: int, endpoint: str) -> Lane:
    # Interned: every entry of an endpoint shares one string.
    return partition, sys.intern(endpoint)
