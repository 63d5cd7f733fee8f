"""The batch handlers of the event topics, `schema.rows` and the rerouted topic: parse each
record, handle it where its customer lives, re-publish it once keyed by customer id otherwise."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache

from faust.types import TP

from app.domain.intake import json_object, parse_cdc_event, parse_event
from app.domain.internal_records import envelope, rerouted_work
from app.domain.models import Event, Source
from app.domain.rows import RowLoad, parse_row_load
from app.errors import MalformedEvent
from app.evaluation.evaluator import Evaluator
from app.evaluation.timed import TimedEvaluation
from app.experiments.tracker import ConversionTracker
from app.intake.routing import ReroutedHandler, owned_here
from app.intake.row_loads import RowLoads
from app.kafka.publisher import Publisher
from app.kafka.records import RawRecord
from app.settings import Settings
from app.topics import Topics


@lru_cache(maxsize=4096)
def _from_millis(millis: float) -> datetime:
    # Records fetched together mostly share their millisecond: one conversion serves them all.
    return datetime.fromtimestamp(millis / 1000, tz=UTC)


class SourceIntake:
    """All per-customer state (rows, cooldowns) lives in tables partitioned by Kafka's default
    partitioner over the customer id. A record keyed by its customer id in that partition is
    handled where it is; any other (CDC events keyed by primary key, producers with another
    partitioner) is re-published once to the rerouted topic, so a customer's state is never split."""

    def __init__(self, settings: Settings, topics: Topics, evaluator: Evaluator, timed: TimedEvaluation,
                 row_loads: RowLoads, publisher: Publisher,
                 conversions: ConversionTracker | None = None) -> None:
        self.topics = topics
        self.evaluator = evaluator
        self.timed = timed
        self.row_loads = row_loads
        self.publisher = publisher
        self.conversions = conversions
        self.partitions = settings.partitions
        self.cdc_customer_column = settings.cdc_customer_column
        self.sources = {topics.streaming: Source.STREAMING, topics.outcomes: Source.OUTCOME,
                        topics.cdc: Source.CDC, topics.schema: Source.SCHEMA_TABLE}
        self.rows_topic = topics.rows
        # What on_source_batch reads; the rerouted topic is `topics.rerouted`.
        self.source_topics = [*self.sources, self.rows_topic]
        self._rerouted_handlers: dict[str, ReroutedHandler] = {}
        self.counters: Counter[str] = Counter()

    def register_rerouted(self, kind: str, handler: ReroutedHandler) -> None:
        """Envelopes of `kind` on the rerouted topic go to `handler` (e.g. journey events)."""
        self._rerouted_handlers[kind] = handler

    async def on_source_batch(self, tp: TP, records: Sequence[RawRecord]) -> None:
        """Records of one partition of an event topic or of `schema.rows`, in offset order
        (straight from the fetch: see app/kafka/consumer.py).

        The hot path: one loop, no coroutine per record, and nothing awaited for the events
        (most of them) that fire nothing."""
        partitions = self.partitions
        evaluate_now, apply = self.evaluator.evaluate_now, self.evaluator.apply
        timed = self.timed if self.timed.active else None
        # Events of a conversion's type reach the conversion tracker whether or not they match a
        # trigger; the check is a dict lookup, and nothing at all without experiments.
        conversions = self.conversions if self.conversions is not None and self.conversions.active else None
        for record in records:
            try:  # one handler for the whole body: free in Python 3.11 until something raises
                work = self._parse(record)
                if not owned_here(record, work.customer_id, partitions):
                    await self._reroute(work)
                elif isinstance(work, RowLoad):
                    await self.row_loads.load(work, record)
                elif timed is not None:  # shows the event to the conversion tracker itself
                    await timed.handle(tp, work, (record.topic, record.offset))
                else:
                    if conversions is not None and conversions.wants(work):
                        await conversions.on_event(work)
                    if (result := evaluate_now(work)) is not None:
                        await apply(work, result)
            except MalformedEvent as exc:
                await self.publisher.dead_letter(record, exc.reason)
            except Exception as exc:  # noqa: BLE001 - the safety net: see Publisher.record_failed
                await self.publisher.record_failed(record, exc)

    async def on_rerouted_batch(self, tp: TP, records: Sequence[RawRecord]) -> None:
        for record in records:
            try:
                await self.on_rerouted_record(record)
            except MalformedEvent as exc:
                await self.publisher.dead_letter(record, exc.reason)
            except Exception as exc:  # noqa: BLE001 - the safety net: see Publisher.record_failed
                await self.publisher.record_failed(record, exc)

    async def on_rerouted_record(self, record: RawRecord) -> None:
        """An internal topic is validated like any input: a record that is not an envelope
        this engine writes raises MalformedEvent (and is dead-lettered with the reason)."""
        data = json_object(record.value, "a rerouted record")
        kind = data.get("kind")
        if isinstance(kind, str) and kind in self._rerouted_handlers:
            await self._rerouted_handlers[kind](data)
            return
        work = rerouted_work(data)
        if not owned_here(record, work.customer_id, self.partitions):
            raise MalformedEvent("a rerouted record must be keyed by its customer id, in that id's partition")
        if isinstance(work, RowLoad):
            await self.row_loads.load(work, record)
            return
        if self.timed.active:
            await self.timed.handle(TP(record.topic, record.partition), work, (record.topic, record.offset))
            return
        if self.conversions is not None and self.conversions.wants(work):
            await self.conversions.on_event(work)
        await self.evaluator.evaluate(work)

    async def _reroute(self, work: Event | RowLoad) -> None:
        await self.publisher.send(self.topics.rerouted, work.customer_id, envelope(work))
        self.counters["rerouted"] += 1

    def _parse(self, record: RawRecord) -> Event | RowLoad:
        if record.topic == self.rows_topic:
            return parse_row_load(record.value)
        source = self.sources[record.topic]
        fallback_id = f"{record.topic}-{record.partition}-{record.offset}"
        if source is Source.CDC:
            return parse_cdc_event(record.value, fallback_id, _from_millis(record.timestamp),
                                   self.cdc_customer_column)
        return parse_event(record.value, source, fallback_id, _from_millis(record.timestamp))
