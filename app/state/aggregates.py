"""Per-customer windowed aggregates in the `aggregates` table: one record per customer,
{"pos": {...}, "aggs": {"<aggregate id>": [entries]}} (entries: app/domain/windows.py)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from app.domain import windows
from app.domain.aggregates import CompiledAggregate
from app.domain.definitions import CompiledTrigger
from app.domain.models import Event
from app.domain.positions import Position, already_applied, with_position
from app.state.tables import Table, stored

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

    def state(self, customer_id: str) -> AggregateState:
        record = stored(self.table, customer_id)
        return record["aggs"] if record else {}


def values_at(trigger: CompiledTrigger, state: AggregateState, at_ms: int) -> dict[str, Any]:
    """`agg.<name>` of `trigger` over the windows ending at `at_ms`."""
    return {aggregate.name: windows.value(state.get(aggregate.id), aggregate.fn, aggregate.window_ms, at_ms)
            for aggregate in trigger.aggregates}
