"""The partition Kafka's default partitioner gives a key: how every customer's state is placed."""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2


@lru_cache(maxsize=65_536)
def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default (Java and aiokafka) partitioner gives a string key."""
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions
