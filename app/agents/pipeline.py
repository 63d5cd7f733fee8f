"""The thin I/O shell around the domain: read a message, call the core, write the results."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache, partial
from typing import Any, Protocol, cast

from faust.types import TP, AppT, Message, TableT, TopicT

from app.domain.cooldown import CooldownMark
from app.domain.engine import Evaluation, evaluate, evaluate_scheduled
from app.domain.intake import parse_cdc_event, parse_event
from app.domain.models import ActionCommand, Event, EventEnvelope, Source
from app.domain.rows import RowLoad, merge_row, parse_row_load
from app.domain.schema import CUSTOMERS, ColumnTypeError, check_row_values
from app.errors import InvalidDefinition, MalformedEvent
from app.kafka import partition_for
from app.metrics import Metrics, reason_code
from app.registry import Catalogs
from app.settings import Settings
from app.topics import Topics

log = logging.getLogger(__name__)



_EVENTS_COUNTER = {source: f"events.{source.value}" for source in Source}


def row_key(table: str, customer_id: str) -> str:
    """Key in the rows table: every schema table's row for a customer, co-partitioned."""
    return f"{table}|{customer_id}"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


class RawRecord(Protocol):
    """A record as fetched (aiokafka's ConsumerRecord): the timestamp is in milliseconds."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


def _arrival(record: RawRecord) -> datetime:
    return _from_millis(record.timestamp)


@lru_cache(maxsize=4096)
def _from_millis(millis: int) -> datetime:
    # Records fetched together mostly share their millisecond: one conversion serves them all.
    return datetime.fromtimestamp(millis / 1000, tz=UTC)


class Pipeline:
    """Routes each message to the worker that owns its customer and evaluates it there.

    All per-customer state (customer rows, cooldowns) lives in tables partitioned by
    Kafka's default partitioner over the customer id. A message whose key is its customer
    id and which sits in that partition is processed where it is; any other (CDC events
    keyed by primary key, producers with another partitioner) is re-published once to an
    internal topic keyed by customer id, so a customer's state is never split.
    """

    def __init__(self, app: AppT, settings: Settings, topics: Topics,
                 catalogs: Catalogs, rows: TableT[str, Any], cooldowns: TableT[str, Any],
                 ticks_done: TableT[str, Any], metrics: Metrics,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.settings = settings
        self.names = topics
        self.catalogs = catalogs
        self.metrics = metrics
        self.rows = rows
        self.cooldowns = cooldowns
        self.ticks_done = ticks_done
        self.clock = clock
        self.counters: Counter[str] = Counter()
        # Other kinds of re-routed work (e.g. journey events), by envelope "kind".
        self.rerouted_handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {}

        def topic(*names: str) -> TopicT:
            return app.topic(*names, key_serializer="raw", value_serializer="raw")

        self._topic = topic

        self.sources = {topics.streaming: Source.STREAMING, topics.outcomes: Source.OUTCOME,
                        topics.cdc: Source.CDC, topics.schema: Source.SCHEMA_TABLE}
        self._rows_topic = topics.rows
        self.source_topic = topic(*self.sources, topics.rows)
        self.rerouted_topic = topic(topics.rerouted)
        self.ticks_topic = topic(topics.ticks)
        self.definitions_topic = topic(*topics.definition_topics)
        self._app = app

    # -- intake (batches of records, straight from the fetch: see app/consumer.py) --------

    async def on_source_batch(self, tp: TP, records: Sequence[RawRecord]) -> None:
        """Records of one partition of an event topic or of `schema.rows`, in offset order.

        The hot path: one loop, no coroutine per record, and nothing awaited for the events
        (most of them) that fire nothing."""
        for record in records:
            try:
                work = self._parse(record)
            except MalformedEvent as exc:
                await self.dead_letter(record, exc.reason)
                continue
            if not self.owned_here(record, work.customer_id):
                await self._reroute(work)
            elif isinstance(work, RowLoad):
                await self._load_row(work)
            elif (result := self.evaluate_now(work)) is not None:
                await self._apply(work, result)

    async def on_rerouted_batch(self, tp: TP, records: Sequence[RawRecord]) -> None:
        for record in records:
            await self.on_rerouted_record(record)

    async def _reroute(self, work: Event | RowLoad) -> None:
        await self.send(self.names.rerouted, work.customer_id, _envelope(work))
        self.counters["rerouted"] += 1

    async def on_rerouted_record(self, record: RawRecord) -> None:
        data = json.loads(record.value or b"null")
        if data["kind"] in self.rerouted_handlers:
            await self.rerouted_handlers[data["kind"]](data)
        elif data["kind"] == "row":
            await self._process(RowLoad(**data["row"]))
        else:
            await self._process(EventEnvelope.model_validate(data["event"]).event())

    def _parse(self, record: RawRecord) -> Event | RowLoad:
        if record.topic == self._rows_topic:
            return parse_row_load(record.value)
        source = self.sources[record.topic]
        fallback_id = f"{record.topic}-{record.partition}-{record.offset}"
        if source is Source.CDC:
            return parse_cdc_event(record.value, fallback_id, _arrival(record),
                                   self.settings.cdc_customer_column)
        return parse_event(record.value, source, fallback_id, _arrival(record))

    def owned_here(self, record: RawRecord | Message, customer_id: str) -> bool:
        key = record.key.decode("utf-8", "replace") if isinstance(record.key, bytes) else record.key
        return key == customer_id and record.partition == partition_for(
            customer_id, self.settings.partitions)

    async def _process(self, work: Event | RowLoad) -> None:
        if isinstance(work, RowLoad):
            await self._load_row(work)
        else:
            await self._evaluate(work)

    # -- evaluation ---------------------------------------------------------------------

    async def _evaluate(self, event: Event) -> None:
        result = self.evaluate_now(event)
        if result is not None:
            await self._apply(event, result)

    def evaluate_now(self, event: Event) -> Evaluation | None:
        """The decision for one event, without I/O; None when no trigger could match."""
        self.counters[_EVENTS_COUNTER[event.source]] += 1
        self.metrics.events_in.inc(event.source)
        if not self.catalogs.triggers.index.candidates(event.source, event.type):
            return None  # most events match no trigger: skip the state reads entirely
        started = time.perf_counter()
        result = evaluate(self.catalogs.triggers.index, event, partial(self.customer, event.customer_id),
                          lambda trigger_id: self._cooldown(trigger_id, event.customer_id),
                          self.clock())
        self.metrics.evaluation_seconds.observe(time.perf_counter() - started)
        if result.firings or result.condition_errors or result.cooled_down:
            return result
        return None

    async def _apply(self, event: Event, result: Evaluation) -> None:
        """Store the cooldown marks, then emit the firings in order."""
        self._record(event, result)
        for trigger_id, mark in result.cooldown_marks.items():
            self.cooldowns[_cooldown_key(trigger_id, event.customer_id)] = mark.to_json()
        for command in result.firings:
            await self._emit(command)

    # -- scheduled triggers ---------------------------------------------------------------

    async def on_tick(self, message: Message) -> None:
        """A tick for one partition: evaluate the trigger for every customer whose row lives
        in that partition, so with any number of workers each customer is visited once."""
        tick = json.loads(message.value or b"null")
        trigger = self.catalogs.triggers.get(tick["triggerId"])
        scheduled_at = datetime.fromisoformat(tick["scheduledAt"])
        done_key = f"{tick['triggerId']}|{message.partition}"
        last = self.ticks_done.get(done_key)
        if trigger is None or trigger.definition.source is not Source.SCHEDULED or (
                last is not None and datetime.fromisoformat(last) >= scheduled_at):
            return  # deleted or changed meanwhile, or this tick already ran (a re-published tick)
        visited = 0
        prefix = f"{CUSTOMERS}|"
        # Walk the local store lazily, yielding now and then, so a large audience neither
        # loads into memory at once nor starves event processing.
        for scanned, (key, row) in enumerate(self.rows.items(), start=1):
            if scanned % 500 == 0:
                await asyncio.sleep(0)
            customer_id = key[len(prefix):] if key.startswith(prefix) else None
            if customer_id is None or partition_for(customer_id, self.settings.partitions) != message.partition:
                continue
            event = tick_event(trigger.id, scheduled_at, customer_id)
            result = evaluate_scheduled(trigger, event, row, partial(self._cooldown, customer_id=customer_id),
                                        self.clock())
            await self._apply(event, result)
            visited += 1
        self.ticks_done[done_key] = scheduled_at.isoformat()
        log.info("schedule tick ran", extra={"triggerId": trigger.id, "scheduledAt": tick["scheduledAt"],
                                             "partition": message.partition, "customers": visited})

    def customer(self, customer_id: str) -> dict[str, Any] | None:
        row: dict[str, Any] | None = stored(self.rows, row_key(CUSTOMERS, customer_id))
        return row

    def _cooldown(self, trigger_id: str, customer_id: str) -> CooldownMark | None:
        mark = stored(self.cooldowns, _cooldown_key(trigger_id, customer_id))
        return CooldownMark.from_json(mark) if mark else None

    def _record(self, event: Event, result: Evaluation) -> None:
        for trigger_id, error in result.condition_errors:
            self.counters["condition_errors"] += 1
            self.metrics.condition_errors.labels(trigger_id).inc()
            log.debug("condition error", extra={"triggerId": trigger_id, "eventId": event.id,
                                                "error": error})
        self.counters["cooled_down"] += len(result.cooled_down)

    async def _emit(self, command: ActionCommand) -> None:
        """The action command first, then its record on `triggers.firings`."""
        value = command.to_json()
        await self.send(self.names.action(command.action_type), command.customer_id, value)
        await self.send(self.names.firings, command.customer_id, value)
        self.counters["firings"] += 1
        self.metrics.firings.labels(command.trigger_id, command.action_type).inc()
        log.debug("trigger fired", extra={"triggerId": command.trigger_id,
                                         "customerId": command.customer_id,
                                         "firingId": command.firing_id,
                                         "action": command.action_type})

    # -- schema-table rows --------------------------------------------------------------

    async def _load_row(self, load: RowLoad) -> None:
        table = self.catalogs.tables.table(load.table)
        try:
            if table is None:
                raise ColumnTypeError(f"unknown schema table {load.table!r}")
            values = check_row_values(table, load.attributes) if load.attributes is not None else None
        except ColumnTypeError as exc:
            self.metrics.dead_letters.labels(self.names.deadletter, reason_code(str(exc))).inc()
            await self.send(self.names.deadletter, load.customer_id, {
                "reason": str(exc), "load": _row_json(load), "at": self.clock().isoformat()})
            return
        await self.write_row(load.table, load.customer_id, values)

    async def write_row(self, table: str, customer_id: str, values: dict[str, Any] | None,
                        depth: int = 0, firing_id: str | None = None) -> dict[str, Any] | None:
        """Merge `values` into the row (None deletes it) and publish the change on
        `events.schema`; returns the change, or None when nothing changed."""
        key = row_key(table, customer_id)
        change = merge_row(table, customer_id, stored(self.rows, key), values)
        if change is None:
            return None
        if change.after is None:
            self.rows.pop(key, None)
        else:
            self.rows[key] = change.after
        record = {**change.to_json(), "depth": depth}
        if firing_id:
            record["firingId"] = firing_id
        await self.send(self.names.schema, customer_id, record)
        return record

    # -- definitions (errors are reported by exactly one worker: this agent's) ----------

    async def on_definition_message(self, message: Message) -> None:
        if message.value is None or message.key is None:
            return
        key = message.key.decode("utf-8", "replace")
        catalog = self.catalogs.by_topic[message.topic]
        try:
            catalog.validate(message.value, key)
        except InvalidDefinition as exc:
            item_id = key  # what the worker removed, even if the value names another id
            error = {"kind": catalog.kind, "id": item_id, "error": "; ".join(exc.errors),
                     "errors": exc.errors, "topic": message.topic, "offset": message.offset,
                     "at": self.clock().isoformat()}
            if catalog.kind == "trigger":
                error["triggerId"] = item_id
            log.warning("invalid definition reported", extra={"kind": catalog.kind, "id": item_id})
            await self.send(self.names.errors, item_id, error)

    # -- output -------------------------------------------------------------------------

    async def dead_letter(self, message: RawRecord | Message, reason: str) -> None:
        raw = message.value or b""
        key = message.key.decode("utf-8", "replace") if message.key else None
        self.counters["deadlettered"] += 1
        self.metrics.dead_letters.labels(self.names.deadletter, reason_code(reason)).inc()
        log.warning("event dead-lettered", extra={"topic": message.topic,
                                                  "partition": message.partition,
                                                  "offset": message.offset, "reason": reason})
        await self.send(self.names.deadletter, key, {
            "reason": reason,
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
            "key": key,
            "value": raw.decode("utf-8", "replace"),
            "valueBase64": base64.b64encode(raw).decode(),
            "at": self.clock().isoformat(),
        })

    async def send(self, topic: str, key: str | None, value: Any) -> None:
        """Hand a record to the producer; the consumer flushes the producer before it commits
        an offset, so a crash cannot commit past an event whose output was not written.
        (Straight to the producer: faust's Topic.send adds several layers per record.)"""
        delivery = await self._app.producer.send(
            topic, key.encode() if key is not None else None,
            value if isinstance(value, bytes) else _dumps(value), None, None, None)
        cast(asyncio.Future[Any], delivery).add_done_callback(_log_failed_delivery)


def _log_failed_delivery(delivery: asyncio.Future[Any]) -> None:
    if not delivery.cancelled() and delivery.exception() is not None:
        log.error("a record could not be written", extra={"error": repr(delivery.exception())})


def stored(table: TableT[str, Any], key: str) -> Any:
    """A table's value or None, in one store read (`table.get` reads twice: contains, then get)."""
    try:
        return table.data[key]
    except KeyError:
        return None


def tick_event(trigger_id: str, scheduled_at: datetime, customer_id: str) -> Event:
    """The event a scheduled trigger sees: one per tick and customer, so firingIds differ."""
    at = scheduled_at.isoformat()
    return Event(id=f"tick:{trigger_id}:{at}:{customer_id}", type="schedule.tick", customer_id=customer_id,
                 source=Source.SCHEDULED, timestamp=scheduled_at,
                 fields={"scheduledAt": at, "triggerId": trigger_id})


def _cooldown_key(trigger_id: str, customer_id: str) -> str:
    # Trigger ids cannot contain "|", so the key is unambiguous.
    return f"{trigger_id}|{customer_id}"


def _row_json(load: RowLoad) -> dict[str, Any]:
    return {"table": load.table, "customer_id": load.customer_id, "attributes": load.attributes}


def _envelope(work: Event | RowLoad) -> bytes:
    if isinstance(work, RowLoad):
        return _dumps({"kind": "row", "row": _row_json(work)})
    return _dumps({"kind": "event", "event": work.to_envelope()})
