"""How the tables are read and keyed. Every key starts from a customer id's partition: the
tables are co-partitioned with the event topics by customer id."""

from __future__ import annotations

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
