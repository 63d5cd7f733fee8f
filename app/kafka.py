"""Faust's aiokafka driver with a configurable consumer fetch wait, and the Kafka partitioner we route by."""

from __future__ import annotations

import weakref
from functools import lru_cache
from typing import Any

import aiokafka
from aiokafka.partitioner import murmur2
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import Message
from faust.types.tuples import ack_lock


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


class Consumer(faust_aiokafka.Consumer):
    """faust's consumer, minus one way it loses messages around a rebalance.

    When a rebalance begins, a faust stream that has already taken a message off its
    queue skips it (flow suspended, or the message is from the previous generation) and
    *acknowledges* it; the commit made while partitions are revoked then moves past a
    message nobody processed, and the next owner starts after it. Agents mark the
    messages they were handed (`mark_handled`); the acknowledgement of a message that was
    never handed to an agent is not counted, so its offset stays uncommitted and the
    message is read again after the rebalance.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._handled: weakref.WeakSet[Message] = weakref.WeakSet()

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def mark_handled(self, message: Message) -> None:
        self._handled.add(message)

    def ack(self, message: Message) -> bool:
        if message in self._handled or not self._skipped_by_rebalance(message):
            return bool(super().ack(message))
        with ack_lock:  # settled, so waiting for empty streams ends, but not committable
            message.acked = True
            self._unacked_messages.discard(message)
        return False

    def _skipped_by_rebalance(self, message: Message) -> bool:
        return (not self.app.flow_control.is_active()
                or message.generation_id != self.app.consumer_generation_id)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


def transport_class(fetch_max_wait_ms: int) -> type[Transport]:
    _ConsumerThread.fetch_max_wait_ms = fetch_max_wait_ms
    return Transport
