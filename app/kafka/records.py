"""What a handler is given for each fetched record."""

from __future__ import annotations

from typing import Protocol


class RawRecord(Protocol):
    """A record as fetched (aiokafka's ConsumerRecord, or faust's Message): the timestamp is
    in milliseconds (seconds for a Message, whose handlers do not read it), key and value are the bytes as produced."""

    topic: str
    partition: int
    offset: int
    timestamp: float
    key: bytes | None
    value: bytes | None
