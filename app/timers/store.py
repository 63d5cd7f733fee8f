"""The timers table and its in-memory due index.

The table (key: customer id, value: app/domain/timers.py's record) is the truth: it has a
changelog, so it survives kill -9 and empty data directories and moves with its partition.
The index (per partition, a heap of (due ms, customer id), one entry per pending firing) only
says where to look: it is rebuilt from the local store after every rebalance, once the tables
are recovered, and an entry whose firing is gone (fired, cancelled) is skipped when it comes up."""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from typing import Any

from app.domain import timers
from app.state.tables import Table, owned_partitions, partition_items, stored

log = logging.getLogger(__name__)

# Rebuilding the index yields to the event loop once per this many customers.
_RECORDS_PER_YIELD = 2_000


class TimerStore:
    def __init__(self, table: Table) -> None:
        self.table = table
        self.heaps: dict[int, list[tuple[int, str]]] = {}
        self.generation: int | None = None  # the consumer generation the index was built for

    def record(self, customer_id: str) -> timers.Record | None:
        record: timers.Record | None = stored(self.table, customer_id)
        return record

    def write(self, customer_id: str, record: timers.Record) -> None:
        """Store the record (within the customer's partition's table context)."""
        self.table[customer_id] = record

    def index(self, partition: int, firings: list[timers.PendingFiring]) -> None:
        heap = self.heaps.setdefault(partition, [])
        for firing in firings:
            heapq.heappush(heap, (firing.due_ms, firing.customer_id))

    def next_due(self, partition: int) -> int | None:
        heap = self.heaps.get(partition)
        return heap[0][0] if heap else None

    def pop_due(self, partition: int, until_ms: int) -> list[str]:
        """The customers with a firing due at or before `until_ms` (each once)."""
        heap = self.heaps.get(partition)
        customers: dict[str, None] = {}
        while heap and heap[0][0] <= until_ms:
            customers[heapq.heappop(heap)[1]] = None
        return list(customers)

    @property
    def pending(self) -> int:
        """Index entries (pending firings, and fired or cancelled ones not yet skipped)."""
        return sum(len(heap) for heap in self.heaps.values())

    async def rebuild(self, generation: int) -> None:
        """Index every partition this worker owns, from the recovered local store. Every
        rebalance revokes all partitions (faust's eager protocol), and a partition may have
        been another worker's meanwhile: nothing of the old index is kept."""
        self.generation = None
        self.heaps = {}
        started = time.perf_counter()
        for partition in sorted(owned_partitions(self.table)):
            self.heaps[partition] = []  # firings scheduled while the store is read land here
            loaded = await _load(self.table, partition)
            loaded.extend(self.heaps[partition])  # an entry twice is harmless: see pop_due
            heapq.heapify(loaded)
            self.heaps[partition] = loaded
        self.generation = generation
        log.info("timers indexed", extra={"partitions": sorted(self.heaps), "pending": self.pending,
                                          "seconds": round(time.perf_counter() - started, 3)})


async def _load(table: Table, partition: int) -> list[tuple[int, str]]:
    heap: list[tuple[int, str]] = []
    for n, (customer_id, record) in enumerate(partition_items(table, partition), start=1):
        heap.extend((int(entry["dueMs"]), customer_id) for entry in _entries(record))
        if n % _RECORDS_PER_YIELD == 0:
            await asyncio.sleep(0)
    heapq.heapify(heap)
    return heap


def _entries(record: Any) -> list[Any]:
    return record.get("pending", []) if isinstance(record, dict) else []
