"""The faust application: creates its topics, loads definitions before consuming anything,
and runs handlers on batch topics and on faust agents with one safety net."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import faust
from faust import Stream
from faust.types import TP, EventT, Message, StreamT, TopicT

from app.domain.secrets import bind_refusal
from app.kafka.consumer import BatchHandler, Consumer, ConsumerConfig
from app.kafka.records import RawRecord
from app.kafka.transport import Transport
from app.registry.catalogs import Catalogs
from app.registry.reader import DefinitionsReader
from app.settings import Settings
from app.topics import Topics, ensure_topics

log = logging.getLogger(__name__)

OnFailure = Callable[[Message, Exception], Awaitable[None]]


class UnsafeBind(RuntimeError):
    """The HTTP server would listen beyond loopback with no API token configured."""


class TriggerApp(faust.App):
    """faust.App that creates its topics and loads definitions before consuming anything."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(settings.app_id, **kwargs)
        self.settings = settings
        self.topic_names = Topics(settings.topic_prefix)
        self.catalogs = Catalogs(self.topic_names)
        self.registry = DefinitionsReader(settings, self.catalogs.by_topic)
        self.rebalanced_once = False
        # Read by app/kafka/consumer.py: batch topics skip faust's streams, and are consumed
        # only once the worker may evaluate (definitions loaded, licensed).
        self.consumer_config = ConsumerConfig(ready=self.may_evaluate,
                                              fetch_max_wait_ms=settings.fetch_max_wait_ms)
        self._batch_channels: list[TopicT] = []

    def raw_topic(self, *names: str) -> TopicT:
        """A faust topic of raw bytes: the engine parses and validates every record itself."""
        return self.topic(*names, key_serializer="raw", value_serializer="raw")

    def may_evaluate(self) -> bool:
        return self.settings.licensed and self.registry.loaded.is_set()

    # -- consuming -------------------------------------------------------------------------

    def consume_in_batches(self, channel: TopicT, handler: BatchHandler) -> None:
        """`channel`'s records go straight from the fetch to `handler`, a partition's batch at
        a time (app/kafka/consumer.py), once the worker may evaluate."""
        self.consumer_config.batch_handlers.update(dict.fromkeys(channel.topics, handler))
        self._batch_channels.append(channel)

    def consume_each(self, channel: TopicT, name: str, handle: Callable[[Message], Awaitable[None]],
                     on_failure: OnFailure, gated: bool = True) -> None:
        """A faust agent handing each message to `handle`; an exception from one message goes
        to `on_failure` (a dead letter) and the next is handled. `gated`: only once the worker
        may evaluate (an unlicensed worker consumes nothing, so nothing is lost)."""
        async def run(stream: StreamT[bytes]) -> None:
            if gated:
                await self._gate()
            async for event in stream.events():
                self._handed_over(event.message)
                try:
                    await handle(event.message)
                except Exception as exc:  # noqa: BLE001 - one record must not stop the agent
                    await on_failure(event.message, exc)
        self.agent(channel, name=name)(run)

    def consume_acking_itself(self, channel: TopicT, name: str,
                              handle: Callable[[EventT[bytes]], Awaitable[None]]) -> None:
        """A gated agent whose handler acknowledges each event itself, when its work (an HTTP
        delivery in a task of its own) has ended."""
        async def run(stream: StreamT[bytes]) -> None:
            await self._gate()
            async for event in cast(Stream[bytes], stream).noack().events():
                self._handed_over(event.message)
                await handle(event)
        self.agent(channel, name=name)(run)

    async def _gate(self) -> None:
        """Wait until every definition is loaded; unlicensed, wait forever: consuming
        nothing means no event is lost once the licence is fixed."""
        if not self.settings.licensed:
            await asyncio.Future()
        await self.registry.wait_loaded()

    def _handed_over(self, message: Message) -> None:
        """Only a message an agent was handed may count as processed (see app/kafka/consumer.py)."""
        cast(Consumer, self.consumer).mark_handled(message)

    # -- lifecycle ---------------------------------------------------------------------------

    def on_rebalance_end(self) -> None:
        super().on_rebalance_end()
        self.rebalanced_once = True

    async def on_first_start(self) -> None:
        self._refuse_open_bind()
        await super().on_first_start()
        await ensure_topics(self.settings, self.topic_names)
        for channel in self._batch_channels:
            self.topics.add(channel)  # subscribe, as iterating it in an agent would
        await self.add_runtime_dependency(self.registry)
        self.add_future(self._freeze_startup_objects())
        if not self.settings.licensed:
            log.warning("triggers are an Enterprise-tier feature: evaluating nothing",
                        extra={"licenseTier": self.settings.license_tier})

    def settled(self) -> bool:
        """Joined the group, partitions assigned, tables recovered, no rebalance under way."""
        return self.rebalanced_once and not self.rebalancing and not self.in_recovery

    async def _freeze_startup_objects(self) -> None:
        # What was built while starting (modules, definitions, the consumer, recovered tables'
        # machinery) lives as long as the worker: out of the collector's sight, its full
        # collections stop walking it again and again, pauses that showed in the latency tail
        # and cost throughput. So: once the worker is ready to take events, not before.
        await self.registry.wait_loaded()
        while not self.settled():
            await asyncio.sleep(0.1)
        gc.collect()
        gc.freeze()
        log.info("startup objects frozen", extra={"objects": gc.get_freeze_count()})

    def _refuse_open_bind(self) -> None:
        """Before anything binds or connects: no token, no HTTP beyond this machine. Checked
        here rather than in Settings, because the CLI commands read the same settings but
        serve nothing, and `faust worker --web-bind` may override TRIGGERS_WEB_HOST."""
        if not self.conf.web_enabled:
            return
        tokens = self.settings.api_tokens
        refusal = bind_refusal(self.conf.web_bind, tokens)
        if refusal is not None:
            log.critical(refusal)
            raise UnsafeBind(refusal)  # the worker stops, exit status 1
        log.info("HTTP API", extra={"bind": self.conf.web_bind, "port": self.conf.web_port,
                                    "tokens": [token.name for token in tokens] or None,
                                    "auth": "bearer token" if tokens else "none (loopback only)"})

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)


def one_by_one(handle: Callable[[RawRecord], Awaitable[None]]) -> BatchHandler:
    """A batch handler that hands each record of the batch to `handle` in turn."""
    async def handle_batch(tp: TP, records: Sequence[RawRecord]) -> None:
        for record in records:
            await handle(record)
    return handle_batch
