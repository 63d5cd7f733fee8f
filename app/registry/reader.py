"""The definitions topics read into the catalogs, outside any consumer group, start to end."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from mode import Service

from app.domain.versions import actor_of_headers
from app.kafka.end_offsets import caught_up
from app.registry.catalogs import Catalog
from app.settings import Settings

log = logging.getLogger(__name__)

# Definitions change rarely: a change may take this long to arrive, and in exchange this
# consumer (on the worker's event loop) asks the broker 10 times a second, not 100.
DEFINITIONS_FETCH_WAIT_MS = 100


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
        self._end_offsets = await rewind(self._consumer, self.catalogs)
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
                                      datetime.fromtimestamp(record.timestamp / 1000, tz=UTC),
                                      record.offset, actor_of_headers(record.headers))
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
        if not await at_end(self._consumer, self._end_offsets):
            return
        self.loaded.set()
        log.info("definitions loaded", extra={
            catalog.kind: len(catalog.items) for catalog in self.catalogs.values()})


async def read_compacted(settings: Settings, topic: str) -> dict[str, bytes | None]:
    """The latest value per key of a compacted topic, read once from start to end (for commands)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_list, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    latest: dict[str, bytes | None] = {}
    try:
        ends = await rewind(consumer, [topic])
        while not await at_end(consumer, ends):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    if record.key is not None:
                        latest[record.key.decode("utf-8", "replace")] = record.value
    finally:
        await consumer.stop()
    return latest


async def rewind(consumer: AIOKafkaConsumer, topics: Iterable[str]) -> dict[TopicPartition, int]:
    """Assign every partition of `topics` to `consumer` from its start; their end offsets now."""
    partitions = [TopicPartition(topic, p) for topic in topics for p in consumer.partitions_for_topic(topic) or {0}]
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    return dict(await consumer.end_offsets(partitions))


async def at_end(consumer: AIOKafkaConsumer, ends: Mapping[TopicPartition, int]) -> bool:
    """True once `consumer` has read every partition up to its end offset in `ends`."""
    for tp, end in ends.items():
        if not caught_up(consumer, tp, end, await consumer.position(tp)):
            return False
    return True
