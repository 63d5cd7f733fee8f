"""Faust's aiokafka driver with a configurable consumer fetch wait, and the Kafka partitioner we route by."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import aiokafka
from aiokafka.partitioner import murmur2
from faust.transport.drivers import aiokafka as faust_aiokafka


@lru_cache(maxsize=65_536)
def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default (Java and aiokafka) partitioner gives a string key."""
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    # faust hard-codes fetch_max_wait_ms=1500. Brokers that hold a fetch until that wait
    # expires (Tansu does) would then add up to 1.5 s to every event's latency.
    fetch_max_wait_ms: int = 1500

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


def transport_class(fetch_max_wait_ms: int) -> type[Transport]:
    _ConsumerThread.fetch_max_wait_ms = fetch_max_wait_ms
    return Transport
