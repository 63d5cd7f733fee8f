"""The first offset at or after a time, per topic-partition: Kafka's offsets-for-times, checked
against the records it points at, and found by a binary search over the records' timestamps
when the broker's answer is not right (the embedded Tansu broker answers offset 0, whatever
the time asked). Both assume timestamps that do not decrease within a partition, which is
what offsets-for-times itself means by "the first offset at or after"."""

from __future__ import annotations

import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

PROBE_TIMEOUT_S = 10.0


async def offsets_for_time(bootstrap: list[str], partitions: Iterable[TopicPartition], target_ms: int,
                           begins: dict[TopicPartition, int], ends: dict[TopicPartition, int]
                           ) -> dict[TopicPartition, int]:
    """Per topic-partition, the first offset whose record is dated at or after `target_ms`;
    its end offset when there is none."""
    wanted = list(partitions)
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             fetch_max_wait_ms=50, max_partition_fetch_bytes=64 * 1024)
    await probe.start()
    try:
        answers = await probe.offsets_for_times({tp: target_ms for tp in wanted})
        found = {}
        for tp in wanted:
            answer = answers.get(tp)
            offset = answer.offset if answer is not None else ends[tp]
            probe.assign([tp])
            if not await _right(probe, tp, offset, target_ms, begins[tp], ends[tp]):
                offset = await _search(probe, tp, target_ms, begins[tp], ends[tp])
            found[tp] = offset
        return found
    finally:
        await probe.stop()


async def _right(probe: AIOKafkaConsumer, tp: TopicPartition, offset: int, target_ms: int, begin: int,
                 end: int) -> bool:
    """Whether `offset` is the answer: its record is dated at or after the time, the one
    before it earlier."""
    if offset < begin or offset > end:
        return False
    if offset < end:
        record = await _first_at(probe, tp, offset, end)
        if record is None or record.offset != offset or record.timestamp < target_ms:
            return False
    if offset > begin:
        before = await _first_at(probe, tp, offset - 1, end)
        if before is not None and before.offset == offset - 1 and before.timestamp >= target_ms:
            return False
    return True


async def _search(probe: AIOKafkaConsumer, tp: TopicPartition, target_ms: int, begin: int, end: int) -> int:
    """Binary search: about log2(end - begin) single-record fetches."""
    low, high, best = begin, end, end
    while low < high:
        middle = (low + high) // 2
        record = await _first_at(probe, tp, middle, end)
        if record is None or record.offset >= best:
            high = middle  # no record in [middle, best)
        elif record.timestamp >= target_ms:
            best, high = record.offset, middle
        else:
            low = record.offset + 1
    return best


async def _first_at(probe: AIOKafkaConsumer, tp: TopicPartition, offset: int, end: int) -> ConsumerRecord | None:
    """The first record at or after `offset` (a compacted log may have none at it), None when
    there is none before `end`."""
    if offset >= end:
        return None
    probe.seek(tp, offset)
    deadline = time.monotonic() + PROBE_TIMEOUT_S
    while time.monotonic() < deadline:
        records = (await probe.getmany(tp, timeout_ms=500, max_records=1)).get(tp)
        if records:
            return records[0] if records[0].offset < end else None
        if await probe.position(tp) >= end:
            return None
    raise TimeoutError(f"no record of {tp.topic}[{tp.partition}] at or after offset {offset} within "
                       f"{PROBE_TIMEOUT_S:g} s")
