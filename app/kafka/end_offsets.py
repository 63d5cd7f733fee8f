"""A partition's end offset, confirmed by a fetch.

Tansu, the embedded broker, answers ListOffsets(latest) with the base offset of the
partition's last record batch plus one: when that batch holds several records (a producer
that batched them), the answer is short by all but the first. The high watermark in its
fetch responses is right. Whatever reads a topic "up to its end" would stop early: faust's
table recovery then restores a customer row or a cooldown without its latest change. So
every end offset read here is raised to the high watermark a fetch reports, a no-op on
brokers that answer ListOffsets correctly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

log = logging.getLogger(__name__)

# The fetch answers as soon as the (existing) record before the reported end is there.
CONFIRM_FETCH_WAIT_MS = 10


def caught_up(consumer: AIOKafkaConsumer, tp: TopicPartition, end: int, position: int) -> bool:
    """True if `position` is at or past `tp`'s end, for a consumer that fetches `tp`."""
    return position >= max(end, consumer.highwater(tp) or 0)


async def confirmed_end_offsets(new_consumer: Callable[[], AIOKafkaConsumer],
                                ends: Mapping[TopicPartition, int],
                                timeout: float = 10.0) -> dict[TopicPartition, int]:
    """`ends` (from ListOffsets) raised to the high watermark a fetch from the last reported
    record returns, read by a consumer without a group that `new_consumer` makes."""
    confirmed = dict(ends)
    # An empty partition reports 0. Plain aiokafka partitions: faust's TP compares equal.
    nonempty = [TopicPartition(tp.topic, tp.partition) for tp, end in ends.items() if end > 0]
    if not nonempty:
        return confirmed
    consumer = new_consumer()
    consumer._fetch_max_wait_ms = CONFIRM_FETCH_WAIT_MS
    fetched: dict[TopicPartition, int] = {}
    try:
        await consumer.start()
        consumer.assign(nonempty)
        for tp in nonempty:
            consumer.seek(tp, ends[tp] - 1)
        async with asyncio.timeout(timeout):
            while len(fetched) < len(nonempty):
                await consumer.getmany(timeout_ms=100)
                fetched.update((tp, hw) for tp in nonempty if (hw := consumer.highwater(tp)) is not None)
    except (TimeoutError, KafkaError) as exc:
        # What faust would have used: no worse than without this check.
        log.warning("end offsets not confirmed by a fetch; using the broker's", extra={
            "error": repr(exc), "partitions": [f"{tp.topic}/{tp.partition}" for tp in nonempty
                                               if tp not in fetched]})
    finally:
        await consumer.stop()
    for tp, highwater in fetched.items():
        confirmed[tp] = max(ends[tp], highwater)
    return confirmed
