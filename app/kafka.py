"""faust's aiokafka driver with our consumer, and the Kafka partitioner we route by."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aiokafka.partitioner import murmur2
from faust.sensors import Monitor
from faust.transport.drivers import aiokafka as faust_aiokafka

from app.consumer import Consumer, ConsumerThread


@lru_cache(maxsize=65_536)
def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default (Java and aiokafka) partitioner gives a string key."""
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions


class QuietMonitor(Monitor):
    """faust's monitor without its per-message bookkeeping (timestamps, counters by topic
    and stream), which nothing here reads: /metrics has its own counters. Commits, sends
    and table figures are still kept."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any,
                            state: Any = None) -> None:
        pass

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        pass


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


def transport_class(fetch_max_wait_ms: int) -> type[Transport]:
    ConsumerThread.fetch_max_wait_ms = fetch_max_wait_ms
    return Transport
