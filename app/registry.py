"""Every worker's own copy of the trigger definitions, read from the compacted topic start to end."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from mode import Service

from app.domain.definitions import compile_definition
from app.domain.matching import DefinitionIndex
from app.errors import InvalidDefinition
from app.settings import Settings

log = logging.getLogger(__name__)


class DefinitionRegistry(Service):
    """Tails `triggers.definitions` outside any consumer group, so every worker sees every
    definition whatever partitions it owns (a faust GlobalTable hung with several workers).

    `ready` is set once the topic has been read up to the end offsets seen at start, so
    no event is evaluated against a half-loaded set of definitions.
    """

    def __init__(self, settings: Settings, topic: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.topic = topic
        self.index = DefinitionIndex()
        self.rejected: dict[str, list[str]] = {}
        self.loaded = asyncio.Event()
        # Offset of the last record applied (single-partition topic): lets an operator or a
        # test see that a definition it published has reached this worker.
        self.applied_offset = -1
        self._consumer: AIOKafkaConsumer | None = None

    async def on_start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_list,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=max(self.settings.fetch_max_wait_ms, 10),
        )
        await self._consumer.start()
        partitions = [TopicPartition(self.topic, p)
                      for p in self._consumer.partitions_for_topic(self.topic) or {0}]
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
            for records in batches.values():
                for record in records:
                    key = record.key.decode("utf-8", "replace") if record.key else None
                    self.apply(key, record.value)
                    self.applied_offset = max(self.applied_offset, record.offset)
            await self._mark_loaded_if_caught_up()

    async def _mark_loaded_if_caught_up(self) -> None:
        if self.loaded.is_set() or self._consumer is None:
            return
        for tp, end in self._end_offsets.items():
            if await self._consumer.position(tp) < end:
                return
        self.loaded.set()
        log.info("definitions loaded", extra={"definitions": len(self.index),
                                             "rejected": len(self.rejected)})

    def apply(self, key: str | None, value: bytes | None) -> None:
        """Apply one record. An invalid value removes the id's previous version: the
        compacted topic keeps only the latest value per id, so keeping an older one would
        make a worker that started before the bad write disagree with one started after."""
        if key is None:
            log.warning("definition without a key ignored")
            return
        if value is None:
            self.index.remove(key)
            self.rejected.pop(key, None)
            log.info("definition deleted", extra={"triggerId": key})
            return
        try:
            trigger = compile_definition(value, key=key)
        except InvalidDefinition as exc:
            self.index.remove(key)
            self.rejected[key] = exc.errors
            log.warning("definition rejected", extra={"triggerId": key, "errors": exc.errors})
            return
        self.index.put(trigger)
        self.rejected.pop(key, None)
        log.info("definition applied", extra={"triggerId": key,
                                             "enabled": trigger.definition.enabled})
