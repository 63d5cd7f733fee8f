"""faust's aiokafka driver with our consumer, and the Kafka partitioner we route by."""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2
from faust.transport.drivers import aiokafka as faust_aiokafka

from app.consumer import Consumer, ConsumerThread


@lru_cache(maxsize=65_536)
def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default (Java and aiokafka) partitioner gives a string key."""
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


def transport_class(fetch_max_wait_ms: int) -> type[Transport]:
    ConsumerThread.fetch_max_wait_ms = fetch_max_wait_ms
    return Transport
