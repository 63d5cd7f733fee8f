"""Every worker's own copy of the definitions, read from their compacted topics start to end."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from mode import Service

from app.domain.decisions import CompiledDecisionFlow
from app.domain.definitions import (
    CompiledTrigger,
    compile_decision_flow,
    compile_definition,
    compile_journey,
    compile_schema_table,
)
from app.domain.journeys import JourneyDefinition
from app.domain.matching import DefinitionIndex
from app.domain.schema import CUSTOMERS, DEFAULT_CUSTOMERS, SchemaTable
from app.end_offsets import caught_up
from app.errors import InvalidDefinition
from app.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

# Definitions change rarely: a change may take this long to arrive, and in exchange this
# consumer (on the worker's event loop) asks the broker 10 times a second, not 100.
DEFINITIONS_FETCH_WAIT_MS = 100


class Catalog(Generic[T]):
    """Definitions of one kind by id, as the latest record per id on their topic says.

    An invalid value removes the id's previous version: the compacted topic keeps only the
    latest value per id, so keeping an older one would make a worker that started before
    the bad write disagree with one started after it.
    """

    def __init__(self, kind: str, compile: Callable[[bytes, str], T]) -> None:
        self.kind = kind
        self._compile = _rejecting_the_unexpected(compile)
        self.items: dict[str, T] = {}
        self.rejected: dict[str, list[str]] = {}
        # When each current version was published (the record's timestamp), if known.
        self.published_at: dict[str, datetime] = {}
        # The value last applied per id, and its errors (None: valid): what `validate` asks
        # about has usually just been applied here, and compiling costs a millisecond.
        self._applied: dict[str, tuple[bytes, list[str] | None]] = {}

    def validate(self, value: bytes, key: str) -> T | None:
        """The compiled definition (None if known valid but since replaced), or
        InvalidDefinition; changes nothing."""
        applied = self._applied.get(key)
        if applied is not None and applied[0] == value:
            if applied[1] is not None:
                raise InvalidDefinition(key, applied[1])
            return self.items.get(key)
        return self._compile(value, key)

    def get(self, item_id: str) -> T | None:
        return self.items.get(item_id)

    def apply(self, key: str, value: bytes | None, published_at: datetime | None = None) -> None:
        if published_at is not None:
            self.published_at[key] = published_at
        if value is None:
            self._remove(key)
            self.rejected.pop(key, None)
            self._applied.pop(key, None)
            log.info("definition deleted", extra={"kind": self.kind, "id": key})
            return
        try:
            item = self._compile(value, key)
        except InvalidDefinition as exc:
            self._remove(key)
            self.rejected[key] = exc.errors
            self._applied[key] = (value, exc.errors)
            log.warning("definition rejected", extra={"kind": self.kind, "id": key, "errors": exc.errors})
            return
        self._put(key, item)
        self.rejected.pop(key, None)
        self._applied[key] = (value, None)
        log.info("definition applied", extra={"kind": self.kind, "id": key})

    def _put(self, key: str, item: T) -> None:
        self.items[key] = item

    def _remove(self, key: str) -> None:
        self.items.pop(key, None)


def _rejecting_the_unexpected(compile: Callable[[bytes, str], T]) -> Callable[[bytes, str], T]:
    """`compile`, with any error but InvalidDefinition turned into one: a definition that
    trips a bug in validation is rejected and reported like any invalid one, instead of
    stopping the reader that every worker's definitions come through."""
    def checked(value: bytes, key: str) -> T:
        try:
            return compile(value, key)
        except InvalidDefinition:
            raise
        except Exception as exc:  # noqa: BLE001 - reported on triggers.errors with the reason
            log.exception("definition validation failed unexpectedly", extra={"id": key[:256]})
            raise InvalidDefinition(key, [f"could not be validated: {type(exc).__name__}: {exc}"[:1000]]) from exc
    return checked


class TriggerCatalog(Catalog[CompiledTrigger]):
    """Triggers, also indexed by (source, eventType) for matching."""

    def __init__(self) -> None:
        super().__init__("trigger", lambda value, key: compile_definition(value, key=key))
        self.index = DefinitionIndex()

    def _put(self, key: str, item: CompiledTrigger) -> None:
        super()._put(key, item)
        self.index.put(item)

    def _remove(self, key: str) -> None:
        super()._remove(key)
        self.index.remove(key)


class TableCatalog(Catalog[SchemaTable]):
    def __init__(self) -> None:
        super().__init__("schema_table", compile_schema_table)

    def table(self, name: str) -> SchemaTable | None:
        found = self.items.get(name)
        return found if found is not None or name != CUSTOMERS else DEFAULT_CUSTOMERS


def journey_catalog() -> Catalog[JourneyDefinition]:
    return Catalog("journey", compile_journey)


def decision_flow_catalog() -> Catalog[CompiledDecisionFlow]:
    return Catalog("decision_flow", compile_decision_flow)


class DefinitionsReader(Service):
    """Tails the definitions topics outside any consumer group, so every worker sees every
    definition whatever partitions it owns (a faust GlobalTable hung with several workers).

    `loaded` is set once every topic has been read up to the end offsets seen at start, so
    no event is evaluated against a half-loaded set of definitions.
    """

    def __init__(self, settings: Settings, catalogs: dict[str, Catalog[Any]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.catalogs = catalogs
        self.loaded = asyncio.Event()
        # Offset of the last record applied, per topic: shows that a definition someone
        # published has reached this worker.
        self.applied_offsets: dict[str, int] = {topic: -1 for topic in catalogs}
        self._consumer: AIOKafkaConsumer | None = None
        self._end_offsets: dict[TopicPartition, int] = {}
        # Monotonic time the broker last answered a metadata request: the worker's view of it.
        self.broker_answered_at: float | None = None

    async def on_start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_list,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=DEFINITIONS_FETCH_WAIT_MS,
        )
        await self._consumer.start()
        partitions = [TopicPartition(topic, p) for topic in self.catalogs
                      for p in self._consumer.partitions_for_topic(topic) or {0}]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        self._end_offsets = await self._consumer.end_offsets(partitions)
        self.add_future(self._tail())

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def wait_loaded(self) -> None:
        await self.loaded.wait()

    async def _tail(self) -> None:
        assert self._consumer is not None
        await self._mark_loaded_if_caught_up()
        while not self.should_stop:
            batches = await self._consumer.getmany(timeout_ms=500)
            await self._check_broker()
            for tp, records in batches.items():
                catalog = self.catalogs[tp.topic]
                for record in records:
                    if record.key is None:
                        log.warning("definition without a key ignored", extra={"topic": tp.topic})
                    else:
                        catalog.apply(record.key.decode("utf-8", "replace"), record.value,
                                      datetime.fromtimestamp(record.timestamp / 1000, tz=UTC))
                    self.applied_offsets[tp.topic] = max(self.applied_offsets[tp.topic], record.offset)
            await self._mark_loaded_if_caught_up()

    async def _check_broker(self) -> None:
        # getmany() returns empty on a dead broker too; a metadata request every few
        # seconds tells /health whether the broker actually answers.
        if self._consumer is None or (self.broker_answered_at and time.monotonic() - self.broker_answered_at < 3):
            return
        try:
            await asyncio.wait_for(self._consumer.topics(), timeout=3)
            self.broker_answered_at = time.monotonic()
        except (TimeoutError, KafkaError):
            pass

    async def _mark_loaded_if_caught_up(self) -> None:
        if self.loaded.is_set() or self._consumer is None:
            return
        for tp, end in self._end_offsets.items():
            if not caught_up(self._consumer, tp, end, await self._consumer.position(tp)):
                return
        self.loaded.set()
        log.info("definitions loaded", extra={
            catalog.kind: len(catalog.items) for catalog in self.catalogs.values()})


class Catalogs:
    """All kinds of definitions a worker knows, and the topic each comes from."""

    def __init__(self, topics: Any) -> None:
        self.triggers = TriggerCatalog()
        self.journeys = journey_catalog()
        self.decision_flows = decision_flow_catalog()
        self.tables = TableCatalog()
        self.by_topic: dict[str, Catalog[Any]] = {
            topics.definitions: self.triggers,
            topics.journey_definitions: self.journeys,
            topics.decision_flow_definitions: self.decision_flows,
            topics.table_definitions: self.tables,
        }


async def read_compacted(settings: Settings, topic: str) -> dict[str, bytes | None]:
    """The latest value per key of a compacted topic, read once from start to end (for commands)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_list, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    latest: dict[str, bytes | None] = {}
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or {0}]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        while not all([caught_up(consumer, tp, end, await consumer.position(tp)) for tp, end in ends.items()]):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    if record.key is not None:
                        latest[record.key.decode("utf-8", "replace")] = record.value
    finally:
        await consumer.stop()
    return latest
