"""The last records of a topic, for the console: a short-lived consumer without a group reads
at most `per_partition` records from the end of each partition, within a time limit."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from app.kafka.end_offsets import confirmed_end_offsets

log = logging.getLogger(__name__)

MAX_PER_PARTITION = 5000


@dataclass(frozen=True)
class Recent:
    """One record read: where it is, its Kafka timestamp (ms) and raw key and value."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class RecentRead:
    records: list[Recent]
    # Partitions that hold more records than were read (their oldest records were left out).
    bounded: frozenset[tuple[str, int]]


async def read_recent(bootstrap: list[str], topics: list[str], per_partition: int,
                      timeout: float = 10.0) -> RecentRead:
    """The last `per_partition` records of each partition of `topics` (missing topics have
    none), oldest first within a partition."""
    per_partition = max(1, min(per_partition, MAX_PER_PARTITION))

    def new_consumer() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)

    consumer = new_consumer()
    consumer._fetch_max_wait_ms = 50
    await consumer.start()
    records: list[Recent] = []
    bounded: set[tuple[str, int]] = set()
    try:
        partitions = [TopicPartition(topic, p) for topic in topics
                      for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            return RecentRead([], frozenset())
        consumer.assign(partitions)
        starts = await consumer.beginning_offsets(partitions)
        ends = await confirmed_end_offsets(new_consumer, await consumer.end_offsets(partitions))
        remaining = {}
        for tp in partitions:
            first = max(starts[tp], ends[tp] - per_partition)
            if first > starts[tp]:
                bounded.add((tp.topic, tp.partition))
            if ends[tp] > first:
                consumer.seek(tp, first)
                remaining[tp] = ends[tp]
        async with asyncio.timeout(timeout):
            while remaining:
                batches = await consumer.getmany(*remaining, timeout_ms=200)
                for tp, batch in batches.items():
                    records.extend(Recent(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value)
                                   for r in batch if r.offset < remaining.get(tp, 0))
                for tp in list(remaining):
                    if await consumer.position(tp) >= remaining[tp]:
                        del remaining[tp]
    except (TimeoutError, KafkaError) as exc:
        # What was read is still shown: the console says the list may be short.
        log.warning("recent records not read to the end", extra={"topics": topics, "error": repr(exc)})
        bounded.update((topic, -1) for topic in topics)
    finally:
        await consumer.stop()
    return RecentRead(records, frozenset(bounded))


async def read_one(bootstrap: list[str], topic: str, partition: int, offset: int,
                   timeout: float = 10.0) -> Recent | None:
    """The record at `topic`/`partition`@`offset`, or None when there is none (any more)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    consumer._fetch_max_wait_ms = 50
    await consumer.start()
    try:
        if partition not in (consumer.partitions_for_topic(topic) or ()):
            return None
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        starts = await consumer.beginning_offsets([tp])
        if offset < starts[tp]:
            return None
        consumer.seek(tp, offset)
        async with asyncio.timeout(timeout):
            while True:
                batch = (await consumer.getmany(tp, timeout_ms=200)).get(tp, [])
                for r in batch:
                    if r.offset == offset:
                        return Recent(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value)
                    if r.offset > offset:
                        return None
    except TimeoutError:
        return None
    finally:
        await consumer.stop()
