"""Where a record is handled: here when it is keyed by its customer id and sits in that id's
partition (the partition of the customer's state); anywhere else it is re-published once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from faust.types import Message

from app.kafka.partitioner import partition_for
from app.kafka.records import RawRecord

# Handles one kind of envelope on the rerouted topic (e.g. journey events, registered by their
# module); raises MalformedEvent for an envelope this engine did not write.
ReroutedHandler = Callable[[dict[str, Any]], Awaitable[None]]


def owned_here(record: RawRecord | Message, customer_id: str, partitions: int) -> bool:
    key = record.key.decode("utf-8", "replace") if isinstance(record.key, bytes) else record.key
    return key == customer_id and record.partition == partition_for(customer_id, partitions)
