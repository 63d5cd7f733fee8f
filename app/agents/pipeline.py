"""The thin I/O shell around the domain: read a message, call the core, write the results."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any

from faust.types import TP, Message
from pydantic import ValidationError

from app.domain.cooldown import CooldownMark
from app.domain.deadletters import (
    MAX_RECORD_BYTES,
    RecordTooLarge,
    Unstorable,
    action_dead_letter,
    encode,
    row_load_dead_letter,
    short_reason,
)
from app.domain.engine import Evaluation, evaluate, evaluate_scheduled
from app.domain.intake import load_json, parse_cdc_event, parse_event
from app.domain.models import ActionCommand, Event, EventEnvelope, Source
from app.domain.rows import RowLoad, parse_row_load
from app.domain.schema import CUSTOMERS, ColumnTypeError, check_row_values
from app.errors import InvalidDefinition, MalformedEvent
from app.kafka.partitioner import partition_for
from app.kafka.publisher import Publisher
from app.kafka.records import RawRecord
from app.metrics import Metrics, reason_code
from app.registry.catalogs import Catalogs
from app.settings import Settings
from app.state.rows import RowStore
from app.state.tables import Table, cooldown_key, stored

if TYPE_CHECKING:
    from app.kafka.app import TriggerApp
from app.topics import Topics

log = logging.getLogger(__name__)

# An error report on `triggers.errors` names at most this much of a hostile key, and this many errors.
MAX_ID_CHARS = 256
MAX_REPORTED_ERRORS = 50

_EVENTS_COUNTER = {source: f"events.{source.value}" for source in Source}


def _arrival(record: RawRecord) -> datetime:
    return _from_millis(record.timestamp)


@lru_cache(maxsize=4096)
def _from_millis(millis: float) -> datetime:
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

    def __init__(self, app: TriggerApp, settings: Settings, topics: Topics,
                 catalogs: Catalogs, publisher: Publisher, row_store: RowStore, cooldowns: Table,
                 ticks_done: Table, metrics: Metrics,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.settings = settings
        self.publisher = publisher
        self.row_store = row_store
        self.names = topics
        self.catalogs = catalogs
        self.metrics = metrics
        self.rows = row_store.rows
        self.cooldowns = cooldowns
        self.ticks_done = ticks_done
        self.clock = clock
        self.counters: Counter[str] = Counter()
        # Other kinds of re-routed work (e.g. journey events), by envelope "kind".
        self.rerouted_handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {}

        topic = app.raw_topic
        self.sources = {topics.streaming: Source.STREAMING, topics.outcomes: Source.OUTCOME,
                        topics.cdc: Source.CDC, topics.schema: Source.SCHEMA_TABLE}
        self._rows_topic = topics.rows
        self.source_topic = topic(*self.sources, topics.rows)
        self.rerouted_topic = topic(topics.rerouted)
        self.ticks_topic = topic(topics.ticks)
        self.definitions_topic = topic(*topics.definition_topics)

    # -- intake (batches of records, straight from the fetch: see app/kafka/consumer.py) --------

    async def on_source_batch(self, tp: TP, records: Sequence[RawRecord]) -> None:
        """Records of one partition of an event topic or of `schema.rows`, in offset order.

        The hot path: one loop, no coroutine per record, and nothing awaited for the events
        (most of them) that fire nothing."""
        for record in records:
            try:  # one handler for the whole body: free in Python 3.11 until something raises
                work = self._parse(record)
                if not self.owned_here(record, work.customer_id):
                    await self._reroute(work)
                elif isinstance(work, RowLoad):
                    await self._load_row(work, record)
                elif (result := self.evaluate_now(work)) is not None:
                    await self._apply(work, result)
            except MalformedEvent as exc:
                await self.publisher.dead_letter(record, exc.reason)
            except Exception as exc:  # noqa: BLE001 - the safety net: see record_failed
                await self.publisher.record_failed(record, exc)

    async def on_rerouted_batch(self, tp: TP, records: Sequence[RawRecord]) -> None:
        for record in records:
            try:
                await self.on_rerouted_record(record)
            except MalformedEvent as exc:
                await self.publisher.dead_letter(record, exc.reason)
            except Exception as exc:  # noqa: BLE001 - the safety net: see record_failed
                await self.publisher.record_failed(record, exc)

    async def _reroute(self, work: Event | RowLoad) -> None:
        await self.publisher.send(self.names.rerouted, work.customer_id, _envelope(work))
        self.counters["rerouted"] += 1

    async def on_rerouted_record(self, record: RawRecord) -> None:
        """An internal topic is validated like any input: a record that is not an envelope
        this engine writes raises MalformedEvent (and is dead-lettered with the reason)."""
        data = _json_object(record.value, "a rerouted record")
        kind = data.get("kind")
        if isinstance(kind, str) and kind in self.rerouted_handlers:
            await self.rerouted_handlers[kind](data)
            return
        if kind == "row":
            work: Event | RowLoad = _rerouted_row(data.get("row"))
        elif kind == "event":
            try:
                work = EventEnvelope.model_validate(data.get("event")).event()
            except ValidationError as exc:
                raise MalformedEvent(f"invalid rerouted event: {_validation_summary(exc)}") from None
        else:
            raise MalformedEvent(f"unknown rerouted record kind {str(kind)[:64]!r}")
        if not self.owned_here(record, work.customer_id):
            raise MalformedEvent("a rerouted record must be keyed by its customer id, in that id's partition")
        if isinstance(work, RowLoad):
            await self._load_row(work, record)
        else:
            await self._evaluate(work)

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
        result = evaluate(self.catalogs.triggers.index, event, partial(self.row_store.customer, event.customer_id),
                          lambda trigger_id: self._cooldown(trigger_id, event.customer_id),
                          self.clock())
        self.metrics.evaluation_seconds.observe(time.perf_counter() - started)
        if result.budget_exhausted:  # its skipped triggers are condition errors too
            self.counters["evaluation_budget_exhausted"] += 1
        if result.firings or result.condition_errors or result.cooled_down:
            return result
        return None

    async def _apply(self, event: Event, result: Evaluation) -> None:
        """Store the cooldown marks, then emit the firings in order. A firing too large to
        produce is refused first, so its cooldown is not stored either."""
        self._record(event, result)
        firings: list[tuple[ActionCommand, bytes]] = []
        refused: set[str] = set()
        for command in result.firings:
            value = encode(command.to_json())
            if len(value) + len(command.customer_id) > MAX_RECORD_BYTES:
                refused.add(command.trigger_id)
                await self._refuse_firing(command, len(value))
            else:
                firings.append((command, value))
        for trigger_id, mark in result.cooldown_marks.items():
            if trigger_id not in refused:
                self.cooldowns[cooldown_key(trigger_id, event.customer_id)] = mark.to_json()
        for command, value in firings:
            await self._emit(command, value)

    async def _refuse_firing(self, command: ActionCommand, size: int) -> None:
        reason = f"firing is {size} bytes, more than the {MAX_RECORD_BYTES}-byte record limit"
        self.counters["firings_refused"] += 1
        self.metrics.dead_letters.labels(self.names.actions_deadletter, "firing_too_large").inc()
        log.warning("firing refused", extra={"triggerId": command.trigger_id, "firingId": command.firing_id,
                                             "reason": reason})
        await self.publisher.send(self.names.actions_deadletter, command.customer_id, action_dead_letter(
            command.action_type, reason, self.clock().isoformat(), [], command.to_json(), None))

    # -- scheduled triggers ---------------------------------------------------------------

    async def on_tick(self, message: Message) -> None:
        """A tick for one partition: evaluate the trigger for every customer whose row lives
        in that partition, so with any number of workers each customer is visited once."""
        try:
            trigger_id, scheduled_at = _tick(message.value)
        except MalformedEvent as exc:
            await self.publisher.dead_letter(message, exc.reason)
            return
        trigger = self.catalogs.triggers.get(trigger_id)
        done_key = f"{trigger_id}|{message.partition}"
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
        log.info("schedule tick ran", extra={"triggerId": trigger.id, "scheduledAt": scheduled_at.isoformat(),
                                             "partition": message.partition, "customers": visited})

    def _cooldown(self, trigger_id: str, customer_id: str) -> CooldownMark | None:
        mark = stored(self.cooldowns, cooldown_key(trigger_id, customer_id))
        return CooldownMark.from_json(mark) if mark else None

    def _record(self, event: Event, result: Evaluation) -> None:
        for trigger_id, error in result.condition_errors:
            self.counters["condition_errors"] += 1
            self.metrics.condition_errors.labels(trigger_id).inc()
            log.debug("condition error", extra={"triggerId": trigger_id, "eventId": event.id,
                                                "error": error})
        self.counters["cooled_down"] += len(result.cooled_down)

    async def _emit(self, command: ActionCommand, value: bytes) -> None:
        """The action command first, then its record on `triggers.firings`."""
        await self.publisher.send(self.names.action(command.action_type), command.customer_id, value)
        await self.publisher.send(self.names.firings, command.customer_id, value)
        self.counters["firings"] += 1
        self.metrics.firings.labels(command.trigger_id, command.action_type).inc()
        log.debug("trigger fired", extra={"triggerId": command.trigger_id,
                                         "customerId": command.customer_id,
                                         "firingId": command.firing_id,
                                         "action": command.action_type})

    # -- schema-table rows --------------------------------------------------------------

    async def _load_row(self, load: RowLoad, origin: RawRecord) -> None:
        table = self.catalogs.tables.table(load.table)
        try:
            if table is None:
                raise ColumnTypeError(f"unknown schema table {load.table!r}")
            values = check_row_values(table, load.attributes) if load.attributes is not None else None
            await self.row_store.write(load.table, load.customer_id, values)
        except (ColumnTypeError, Unstorable, RecordTooLarge) as exc:
            self.counters["deadlettered"] += 1
            self.metrics.dead_letters.labels(self.names.deadletter, reason_code(str(exc))).inc()
            await self.publisher.send(self.names.deadletter, load.customer_id, row_load_dead_letter(
                str(exc), load.table, load.customer_id, load.attributes, self.clock().isoformat(),
                {"topic": origin.topic, "partition": origin.partition, "offset": origin.offset}))

    # -- definitions (errors are reported by exactly one worker: this agent's) ----------

    async def on_definition_message(self, message: Message) -> None:
        catalog = self.catalogs.by_topic[message.topic]
        if message.key is None:  # every worker ignores it: say so once
            await self._report_definition(message, catalog.kind, None,
                                          ["a definition record needs a key (the definition's id)"])
            return
        if message.value is None:
            return  # a deletion
        key = message.key.decode("utf-8", "replace")
        try:
            catalog.validate(message.value, key)
        except InvalidDefinition as exc:
            # The id is what the worker removed, even if the value names another id.
            await self._report_definition(message, catalog.kind, key, exc.errors)
        except Exception as exc:  # noqa: BLE001 - a validator bug must not stop the reports
            log.error("definition check failed", exc_info=exc, extra={"topic": message.topic,
                                                                       "offset": message.offset})
            await self._report_definition(message, catalog.kind, key, [f"{type(exc).__name__}: {exc}"])

    async def definition_report_failed(self, message: Message, exc: Exception) -> None:
        """A report that could not be made is logged: definitions themselves are not dead-lettered."""
        log.error("definition report failed", exc_info=exc, extra={"topic": message.topic,
                                                                    "offset": message.offset})

    async def _report_definition(self, message: Message, kind: str, key: str | None,
                                 errors: list[str]) -> None:
        item_id = key if key is None or len(key) <= MAX_ID_CHARS else f"{key[:MAX_ID_CHARS]}…"
        errors = [short_reason(e) for e in errors[:MAX_REPORTED_ERRORS]]
        error: dict[str, Any] = {"kind": kind, "id": item_id, "error": short_reason("; ".join(errors)),
                                 "errors": errors, "topic": message.topic, "offset": message.offset,
                                 "at": self.clock().isoformat()}
        if kind == "trigger":
            error["triggerId"] = item_id
        log.warning("invalid definition reported", extra={"kind": kind, "id": item_id})
        await self.publisher.send(self.names.errors, item_id, error)


def tick_event(trigger_id: str, scheduled_at: datetime, customer_id: str) -> Event:
    """The event a scheduled trigger sees: one per tick and customer, so firingIds differ."""
    at = scheduled_at.isoformat()
    return Event(id=f"tick:{trigger_id}:{at}:{customer_id}", type="schedule.tick", customer_id=customer_id,
                 source=Source.SCHEDULED, timestamp=scheduled_at,
                 fields={"scheduledAt": at, "triggerId": trigger_id})


def _row_json(load: RowLoad) -> dict[str, Any]:
    return {"table": load.table, "customer_id": load.customer_id, "attributes": load.attributes}


def _envelope(work: Event | RowLoad) -> bytes:
    if isinstance(work, RowLoad):
        return encode({"kind": "row", "row": _row_json(work)})
    return encode({"kind": "event", "event": work.to_envelope()})


def _json_object(raw: bytes | None, what: str) -> dict[str, Any]:
    try:
        data = load_json(raw) if raw is not None else None
    except (ValueError, RecursionError) as exc:
        raise MalformedEvent(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedEvent(f"{what} is a JSON object")
    return data


def _rerouted_row(row: Any) -> RowLoad:
    if not isinstance(row, dict):
        raise MalformedEvent("a rerouted row load has an object 'row'")
    table, customer_id, attributes = row.get("table"), row.get("customer_id"), row.get("attributes")
    if not isinstance(table, str) or not table or not isinstance(customer_id, str) or not customer_id:
        raise MalformedEvent("a rerouted row load has non-empty text 'table' and 'customer_id'")
    if attributes is not None and not isinstance(attributes, dict):
        raise MalformedEvent("a rerouted row load's 'attributes' is an object or null")
    return RowLoad(table, customer_id, attributes)


def _tick(raw: bytes | None) -> tuple[str, datetime]:
    """`{"triggerId": ..., "scheduledAt": <ISO 8601 with offset>}`, as the Scheduler writes it."""
    tick = _json_object(raw, "a tick")
    trigger_id, scheduled = tick.get("triggerId"), tick.get("scheduledAt")
    if not isinstance(trigger_id, str) or not trigger_id or not isinstance(scheduled, str):
        raise MalformedEvent("a tick has text fields 'triggerId' and 'scheduledAt'")
    try:
        scheduled_at = datetime.fromisoformat(scheduled)
    except ValueError:
        raise MalformedEvent(f"tick field 'scheduledAt' is not ISO 8601: {scheduled[:64]!r}") from None
    if scheduled_at.tzinfo is None:
        raise MalformedEvent("tick field 'scheduledAt' has no time zone")
    return trigger_id, scheduled_at


def _validation_summary(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors()[:10])
