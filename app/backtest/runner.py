"""A backtest's reading: the source topics' records in a time range (Kafka's offsets-for-times),
assigned to a consumer of no group, fed to app/domain/backtest.py in the order a worker would
handle them. Nothing is produced anywhere."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from app.backtest.offsets import offsets_for_time
from app.domain.backtest import Backtest, event_types_read, may_matter, reads_customer, relevant_needles
from app.domain.definitions import CompiledTrigger
from app.domain.intake import load_json, parse_cdc_event, parse_event
from app.domain.models import ActionCommand, Event, Source
from app.domain.schema import CUSTOMERS
from app.domain.timers import to_millis
from app.errors import MalformedEvent
from app.kafka.end_offsets import confirmed_end_offsets
from app.registry.reader import at_end, rewind
from app.settings import Settings
from app.topics import Topics

# POST /triggers/backtest reads at most this many events (its default and its maximum).
MAX_EVENTS_HTTP = 1_000_000
# Customer rows loaded for conditions that read `customer`; beyond, customers see no row.
MAX_ROWS = 1_000_000
# Records handled between two yields to the event loop (a worker's HTTP backtest shares it).
YIELD_EVERY = 1_000
# A topic-partition waiting for the others of its partition number stops fetching beyond this.
MAX_BUFFERED = 20_000
FETCH_RECORDS = 5_000

Progress = Callable[[int], None]


@dataclass
class Outcome:
    report: dict[str, Any]
    total: int  # records in the range, over every topic-partition read
    interrupted: bool
    rows: str  # how customer rows were found, for the text report
    details: dict[str, int]  # counts the JSON report leaves out: cancelled, droppedAtDue, malformed


@lru_cache(maxsize=4096)
def _from_millis(millis: float) -> datetime:
    return datetime.fromtimestamp(millis / 1000, tz=UTC)


def source_topics(topics: Topics, trigger: CompiledTrigger) -> dict[str, Source]:
    """The topics a worker would read the trigger's events, aggregates and cancel events from."""
    names = {Source.STREAMING: topics.streaming, Source.OUTCOME: topics.outcomes, Source.CDC: topics.cdc,
             Source.SCHEMA_TABLE: topics.schema}
    return {names[source]: source for source in event_types_read(trigger) if source in names}


async def run_backtest(settings: Settings, topics: Topics, trigger: CompiledTrigger, start: datetime,
                       end: datetime, max_events: int = 0, on_total: Progress | None = None,
                       on_progress: Progress | None = None,
                       should_stop: Callable[[], bool] = lambda: False,
                       on_firing: Callable[[ActionCommand], None] | None = None) -> Outcome:
    """Decide `trigger` over [start, end). `max_events` 0: no limit. `on_progress` gets the
    records handled since its last call; `should_stop` ends the run early (its report is
    partial, `interrupted`)."""
    started = time.perf_counter()
    rows, rows_note = await _customer_rows(settings, trigger)
    start_ms, end_ms = to_millis(start), to_millis(end)
    backtest = Backtest(trigger, start_ms, end_ms, rows.get, on_firing)
    reader = _RangeReader(settings, source_topics(topics, backtest.trigger), backtest, max_events)
    await reader.open(start_ms, end_ms)
    try:
        if on_total is not None:
            on_total(reader.total)
        interrupted = await reader.read(on_progress, should_stop)
    finally:
        await reader.close()
    backtest.finish(complete=not (interrupted or reader.truncated))
    report = backtest.report(reader.handled, reader.truncated, time.perf_counter() - started)
    details = {name: backtest.counts[name] for name in ("scheduled", "cancelled", "droppedAtDue", "droppedPending",
                                                          "malformed", "conditionErrors")}
    return Outcome(report, reader.total, interrupted, rows_note, details)


class _RangeReader:
    def __init__(self, settings: Settings, sources: dict[str, Source], backtest: Backtest, max_events: int) -> None:
        self.settings = settings
        self.sources = sources
        self.backtest = backtest
        self.max_events = max_events
        self.needles = {topic: relevant_needles(backtest.trigger, source) for topic, source in sources.items()}
        self.topic_order = {topic: n for n, topic in enumerate(sorted(sources))}
        self.consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_list, group_id=None,
                                         enable_auto_commit=False, fetch_max_wait_ms=100,
                                         client_id="triggers-backtest")
        self.ranges: dict[TopicPartition, tuple[int, int]] = {}
        self.buffers: dict[TopicPartition, deque[ConsumerRecord]] = {}
        self.finished: set[TopicPartition] = set()
        self.groups: dict[int, list[TopicPartition]] = {}
        self.paused: set[TopicPartition] = set()
        self.total = self.handled = 0
        self.truncated = False

    async def open(self, start_ms: int, end_ms: int) -> None:
        """Each topic-partition's range: from the first offset at or after `start` to the first
        at or after `end` (its end offset when there is none), and the consumer assigned to it."""
        consumer = self.consumer
        await consumer.start()
        known = await consumer.topics()
        partitions = [TopicPartition(topic, p) for topic in self.sources if topic in known
                      for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            return
        begins = await consumer.beginning_offsets(partitions)
        bootstrap = self.settings.bootstrap_list
        ends = await confirmed_end_offsets(
            lambda: AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False),
            await consumer.end_offsets(partitions))
        firsts = await offsets_for_time(bootstrap, partitions, start_ms, begins, ends)
        lasts = await offsets_for_time(bootstrap, partitions, end_ms, begins, ends)
        for tp in partitions:
            first, last = firsts[tp], lasts[tp]
            if first < last:
                self.ranges[tp] = (first, last)
                self.buffers[tp] = deque()
                self.groups.setdefault(tp.partition, []).append(tp)
        self.total = sum(last - first for first, last in self.ranges.values())
        if self.ranges:
            consumer.assign(list(self.ranges))
            for tp, (first, _last) in self.ranges.items():
                consumer.seek(tp, first)

    async def close(self) -> None:
        await self.consumer.stop()

    async def read(self, on_progress: Progress | None, should_stop: Callable[[], bool]) -> bool:
        """Read every range to its end (or to max_events); True when `should_stop` ended it."""
        reported = 0
        while len(self.finished) < len(self.ranges) and not self.truncated:
            if should_stop():
                return True
            batches = await self.consumer.getmany(timeout_ms=200, max_records=FETCH_RECORDS)
            for tp, records in batches.items():
                last = self.ranges[tp][1]
                self.buffers[tp].extend(record for record in records if record.offset < last)
            for tp in self.ranges:
                if tp not in self.finished and await self.consumer.position(tp) >= self.ranges[tp][1]:
                    self.finished.add(tp)
            for group in self.groups.values():
                if await self._drain(group, should_stop) or self.truncated:
                    break
                self._flow(group)
            if on_progress is not None and self.handled > reported:
                on_progress(self.handled - reported)
                reported = self.handled
        return should_stop()

    async def _drain(self, group: list[TopicPartition], should_stop: Callable[[], bool]) -> bool:
        """Handle the buffered records of one partition number in timestamp order across its
        topics, as far as every unfinished topic-partition has records buffered (one that
        has none yet may still hold an earlier one)."""
        buffers = self.buffers
        since_yield = 0
        while True:
            waiting = [tp for tp in group if not buffers[tp] and tp not in self.finished]
            ready = [tp for tp in group if buffers[tp]]
            if waiting or not ready:
                return False
            tp = ready[0] if len(ready) == 1 else min(
                ready, key=lambda t: (buffers[t][0].timestamp, self.topic_order[t.topic], buffers[t][0].offset))
            # One topic-partition ready alone: its run of records goes in one pass.
            run = len(buffers[tp]) if len(ready) == 1 and len(group) == 1 else 1
            for _ in range(run):
                self._handle(tp, buffers[tp].popleft())
                since_yield += 1
                if self.max_events and self.handled >= self.max_events:
                    self.truncated = True
                    return False
                if since_yield >= YIELD_EVERY:
                    since_yield = 0
                    await asyncio.sleep(0)
                    if should_stop():
                        return True

    def _flow(self, group: list[TopicPartition]) -> None:
        """Bound the buffers: a topic-partition far ahead of its partition's others pauses."""
        for tp in group:
            size = len(self.buffers[tp])
            if size > MAX_BUFFERED and tp not in self.paused:
                self.consumer.pause(tp)
                self.paused.add(tp)
            elif size < MAX_BUFFERED // 4 and tp in self.paused:
                self.consumer.resume(tp)
                self.paused.discard(tp)

    def _handle(self, tp: TopicPartition, record: ConsumerRecord) -> None:
        self.handled += 1
        backtest = self.backtest
        if not may_matter(record.value, self.needles[tp.topic]):
            backtest.advance(tp.partition, record.timestamp)  # its time, without parsing it
            return
        try:
            event = self._parse(tp, record)
        except MalformedEvent:
            backtest.counts["malformed"] += 1  # a worker dead-letters it
            backtest.advance(tp.partition, record.timestamp)
            return
        backtest.handle(tp.partition, event)

    def _parse(self, tp: TopicPartition, record: ConsumerRecord) -> Event:
        source = self.sources[tp.topic]
        fallback_id = f"{tp.topic}-{tp.partition}-{record.offset}"  # as the worker names it
        arrival = _from_millis(record.timestamp)
        if source is Source.CDC:
            return parse_cdc_event(record.value, fallback_id, arrival, self.settings.cdc_customer_column)
        return parse_event(record.value, source, fallback_id, arrival)


async def _customer_rows(settings: Settings, trigger: CompiledTrigger) -> tuple[dict[str, Any], str]:
    """Today's `customers` rows, from the rows table's changelog, when a condition reads
    `customer`; none otherwise (the trigger does not need them)."""
    if not reads_customer(trigger):
        return {}, "not needed (no condition reads customer)"
    topic = f"{settings.app_id}-rows-changelog"
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_list, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    rows: dict[str, Any] = {}
    full = False
    try:
        if topic not in await consumer.topics():
            return {}, f"none: {topic} does not exist (conditions see customer as missing)"
        ends = await rewind(consumer, [topic])
        prefix = f"{CUSTOMERS}|"
        while not full and not await at_end(consumer, ends):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    key = load_json(record.key) if record.key else None
                    if not isinstance(key, str) or not key.startswith(prefix):
                        continue
                    customer_id = key[len(prefix):]
                    if record.value is None:
                        rows.pop(customer_id, None)
                    elif customer_id in rows or len(rows) < MAX_ROWS:
                        rows[customer_id] = load_json(record.value)
                    else:
                        full = True
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
    if full:
        return rows, f"today's, first {MAX_ROWS:,} customers only (the rest see no row)"
    return rows, f"today's ({len(rows):,} customers, read from {topic})"
