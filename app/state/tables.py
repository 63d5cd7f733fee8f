"""How the tables are read and keyed. Every key starts from a customer id's partition: the
tables are co-partitioned with the event topics by customer id."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from faust.types import TableT

# A faust Table (in fast tests, a dict whose `data` is itself).
Table = TableT[str, Any]


def stored(table: Table, key: str) -> Any:
    """A table's value or None, in one store read (`table.get` reads twice: contains, then get)."""
    try:
        return table.data[key]
    except KeyError:
        return None


def row_key(table: str, customer_id: str) -> str:
    """Key in the rows table: every schema table's row for a customer, co-partitioned."""
    return f"{table}|{customer_id}"


def cooldown_key(trigger_id: str, customer_id: str) -> str:
    # Trigger ids cannot contain "|", so the key is unambiguous.
    return f"{trigger_id}|{customer_id}"


def performed_key(action_type: str, customer_id: str) -> str:
    """Key of a customer's performed-firings log of one action type."""
    return f"{action_type}|{customer_id}"


def partition_items(table: Table, partition: int) -> Iterator[tuple[Any, Any]]:
    """The (key, value) pairs of one partition of the local store, decoded: faust's RocksDB
    store keeps one database per partition (its `_db_for_partition`, pinned in
    tests/adapters/test_framework_internals.py). Used to rebuild in-memory indexes after
    recovery without reading the other partitions."""
    store = table.data
    for key, value in store._visible_items(store._db_for_partition(partition)):  # type: ignore[attr-defined]
        yield store._decode_key(key), store._decode_value(value)  # type: ignore[attr-defined]


def owned_partitions(table: Table) -> set[int]:
    """The partitions of `table` this worker is active for (not standby)."""
    topic = table.changelog_topic.get_topic_name()
    return {tp.partition for tp in table.app.assignor.assigned_actives() if tp.topic == topic}
