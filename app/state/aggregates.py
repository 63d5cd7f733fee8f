"""Per-customer windowed aggregates in the `aggregates` table: one record per customer,
{"pos": {...}, "aggs": {"<aggregate id>": [entries]}} (entries: app/domain/windows.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from faust.types import TP

from app.domain import windows
from app.domain.aggregates import CompiledAggregate
from app.domain.definitions import CompiledTrigger
from app.domain.models import Event
from app.domain.positions import Position, already_applied, with_position
from app.kafka.consumer import table_partition
from app.state.tables import Table, owned_partitions, partition_items, stored

AggregateState = Mapping[str, list[list[Any]]]


class AggregateStore:
    def __init__(self, table: Table) -> None:
        self.table = table

    def update(self, event: Event, event_json: Mapping[str, Any], event_ms: int, position: Position | None,
               qualifying: Iterable[CompiledAggregate], in_use: frozenset[str]) -> AggregateState:
        """Count `event` in each aggregate it qualifies for, once (see domain/positions.py),
        and return the customer's state. State of aggregates no trigger uses any more is
        dropped here, at the customer's next event."""
        record = stored(self.table, event.customer_id)
        state: dict[str, list[list[Any]]] = dict(record["aggs"]) if record else {}
        if already_applied(record, position):
            return state
        changed = any(agg_id not in in_use for agg_id in state)
        state = {agg_id: entries for agg_id, entries in state.items() if agg_id in in_use}
        for aggregate in qualifying:
            if aggregate.passes_filters(event_json):
                state[aggregate.id] = windows.add(state.get(aggregate.id), aggregate.fn, aggregate.window_ms,
                                                  event_ms, aggregate.value_of(event_json))
                changed = True
        if changed:
            # Storable as it is: windows.add keeps numbers within what the table codec writes.
            self.table[event.customer_id] = with_position({**(record or {}), "aggs": state}, position)
        return state

    async def drop_unused(self, in_use: frozenset[str], topic: str) -> int:
        """Remove from every local record the state of aggregates no enabled trigger uses
        (after a definition changed or was deleted); returns the records rewritten. A
        customer with later events would drop it then too: this sweep covers those without."""
        rewritten = 0
        for partition in sorted(owned_partitions(self.table)):
            stale = []
            for scanned, (customer_id, record) in enumerate(partition_items(self.table, partition), start=1):
                if isinstance(record, dict) and any(agg_id not in in_use for agg_id in record.get("aggs", {})):
                    stale.append((customer_id, record))
                if scanned % 2_000 == 0:
                    await asyncio.sleep(0)  # a large store must not stall the worker's events
            with table_partition(TP(topic, partition)):
                for customer_id, record in stale:
                    aggs = {agg_id: entries for agg_id, entries in record["aggs"].items() if agg_id in in_use}
                    self.table[customer_id] = {**record, "aggs": aggs}
                    rewritten += 1
            await asyncio.sleep(0)
        return rewritten

    def state(self, customer_id: str) -> AggregateState:
        record = stored(self.table, customer_id)
        return record["aggs"] if record else {}


def values_at(state: AggregateState, at_ms: int) -> Callable[[CompiledTrigger], dict[str, Any]]:
    """`agg.<name>` of a trigger over the windows ending at `at_ms`. Each aggregate is
    computed once however many triggers read it (they share it by id)."""
    computed: dict[str, Any] = {}

    def value(aggregate: CompiledAggregate) -> Any:
        try:
            return computed[aggregate.id]
        except KeyError:
            result = computed[aggregate.id] = windows.value(state.get(aggregate.id), aggregate.fn,
                                                            aggregate.window_ms, at_ms)
            return result

    return lambda trigger: {aggregate.name: value(aggregate) for aggregate in trigger.aggregates}
