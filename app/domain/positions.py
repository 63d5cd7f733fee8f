"""Which input records a stored per-customer record already reflects.

A record of state (timers, aggregates) carries `pos`: the offset of the last record of each
topic whose effects it holds. At-least-once delivery hands a record to the worker again after
a crash; its effects must not be applied twice (a second count, a second schedule)."""

from __future__ import annotations

from typing import Any

Position = tuple[str, int]  # (topic, offset) of the record being handled


def already_applied(record: dict[str, Any] | None, position: Position | None) -> bool:
    if record is None or position is None:
        return False
    seen = record.get("pos", {}).get(position[0])
    return seen is not None and position[1] <= seen


def with_position(record: dict[str, Any], position: Position | None) -> dict[str, Any]:
    """`record` (changed in place) marked as holding the effects of `position`."""
    if position is not None:
        record["pos"] = {**record.get("pos", {}), position[0]: position[1]}
    return record
