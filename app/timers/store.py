"""The timers table and its in-memory due index.

The table (key: customer id, value: app/domain/timers.py's record) is the truth: it has a
changelog, so it survives kill -9 and empty data directories and moves with its partition.
The index (per partition, a heap of (due ms, customer id), one entry per pending firing) only
says where to look: it is rebuilt from the local store after every rebalance, once the tables
are recovered, and an entry whose firing is gone (fired, cancelled) is skipped when it comes up.
DueIndex is that index for any changelogged table whose records fall due (the deliveries
table, app/actions/delivery/store.py, uses it too), in lanes: a partition, or finer."""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Hashable, Iterable
from typing import Any, Generic, TypeVar

from app.domain import timers
from app.state.tables import Table, owned_partitions, partition_items, stored

log = logging.getLogger(__name__)

# Rebuilding the index yields to the event loop once per this many customers.
_RECORDS_PER_YIELD = 2_000


Lane = TypeVar("Lane", bound=Hashable)


class DueIndex(Generic[Lane]):
    """Per lane, a heap of (due ms, key) over one table's records; `entries` says which lanes
    and due times a stored record has. Only (due ms, key) is held in memory, whatever the size
    of the records: the table is the truth, an entry only says where to look."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.heaps: dict[Lane, list[tuple[int, str]]] = {}
        self.generation: int | None = None  # the consumer generation the index was built for

    def entries(self, partition: int, key: str, record: Any) -> Iterable[tuple[Lane, int]]:
        raise NotImplementedError

    def push(self, lane: Lane, due_ms: int, key: str) -> None:
        heapq.heappush(self.heaps.setdefault(lane, []), (due_ms, key))

    def next_due(self, lane: Lane) -> int | None:
        heap = self.heaps.get(lane)
        return heap[0][0] if heap else None

    def pop_due(self, lane: Lane, until_ms: int) -> list[str]:
        """The keys with an entry due at or before `until_ms` (each once)."""
        heap = self.heaps.get(lane)
        keys: dict[str, None] = {}
        while heap and heap[0][0] <= until_ms:
            keys[heapq.heappop(heap)[1]] = None
        return list(keys)

    def pop_one(self, lane: Lane, until_ms: int) -> str | None:
        heap = self.heaps.get(lane)
        if heap and heap[0][0] <= until_ms:
            return heapq.heappop(heap)[1]
        return None

    @property
    def pending(self) -> int:
        """Index entries (including stale ones not yet skipped)."""
        return sum(len(heap) for heap in self.heaps.values())

    def due_count(self, now_ms: int) -> int:
        return sum(1 for heap in self.heaps.values() for due, _ in heap if due <= now_ms)

    async def refresh(self, generation: int) -> bool:
        """Rebuild the index if it was built for another consumer generation (a rebalance
        happened since); True when it did."""
        if self.generation == generation:
            return False
        await self.rebuild(generation)
        return True

    async def rebuild(self, generation: int) -> None:
        """Index every partition this worker owns, from the recovered local store. Every
        rebalance revokes all partitions (faust's eager protocol), and a partition may have
        been another worker's meanwhile: nothing of the old index is kept."""
        self.generation = None
        self.heaps = {}  # entries pushed while the store is read land here, and are kept
        started = time.perf_counter()
        loaded: dict[Lane, list[tuple[int, str]]] = {}
        for partition in sorted(owned_partitions(self.table)):
            for n, (key, record) in enumerate(partition_items(self.table, partition), start=1):
                for lane, due_ms in self.entries(partition, key, record):
                    loaded.setdefault(lane, []).append((due_ms, key))
                if n % _RECORDS_PER_YIELD == 0:
                    await asyncio.sleep(0)
        for lane, heap in self.heaps.items():
            loaded.setdefault(lane, []).extend(heap)  # an entry twice is harmless: see pop_due
        for heap in loaded.values():
            heapq.heapify(heap)
        self.heaps = loaded
        self.generation = generation
        log.info("index rebuilt", extra={"table": getattr(self.table, "name", "?"), "lanes": len(self.heaps),
                                         "pending": self.pending,
                                         "seconds": round(time.perf_counter() - started, 3)})


class TimerStore(DueIndex[int]):
    """Lanes are partitions; keys are customer ids."""

    def record(self, customer_id: str) -> timers.Record | None:
        record: timers.Record | None = stored(self.table, customer_id)
        return record

    def write(self, customer_id: str, record: timers.Record) -> None:
        """Store the record (within the customer's partition's table context)."""
        self.table[customer_id] = record

    def index(self, partition: int, firings: list[timers.PendingFiring]) -> None:
        for firing in firings:
            self.push(partition, firing.due_ms, firing.customer_id)

    def entries(self, partition: int, key: str, record: Any) -> Iterable[tuple[int, int]]:
        return ((partition, int(entry["dueMs"])) for entry in _entries(record))


def _entries(record: Any) -> list[Any]:
    return record.get("pending", []) if isinstance(record, dict) else []
