"""The faust application: built from settings, with its tables, agents and health page."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, cast

import faust
from faust import Stream
from faust.types import TP, EventT, Message, StreamT, TopicT
from faust.web import Request, Response, View

from app.agents.pipeline import Pipeline, RawRecord
from app.agents.scheduler import Scheduler
from app.agents.sinks import Sinks
from app.api import register_api
from app.consumer import BatchHandler, Consumer
from app.domain.secrets import bind_refusal, mask_bootstrap
from app.domain.webhooks import RetryPolicy
from app.kafka import QuietMonitor, transport_class
from app.logs import logging_config
from app.metrics import Metrics
from app.registry import Catalogs, DefinitionsReader
from app.settings import Settings, get_settings
from app.sinks.http import HttpDelivery
from app.topics import Topics, ensure_topics

log = logging.getLogger(__name__)

# The definitions reader polls the broker every 0.5 s; this long without an answer is "down".
BROKER_STALE_S = 10.0


class UnsafeBind(RuntimeError):
    """The HTTP server would listen beyond loopback with no API token configured."""


class TriggerApp(faust.App):
    """faust.App that creates its topics and loads definitions before consuming anything."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(settings.app_id, **kwargs)
        self.settings = settings
        self.names = Topics(settings.topic_prefix)
        self.catalogs = Catalogs(self.names)
        self.registry = DefinitionsReader(settings, self.catalogs.by_topic)
        self.rebalanced_once = False
        # Topics whose records skip faust's streams and go to these handlers a batch at a
        # time (app/consumer.py); they are consumed only while `batch_intake_ready()`.
        self.batch_handlers: dict[str, BatchHandler] = {}
        self.batch_intake_ready: Callable[[], bool] = lambda: True
        self._batch_topics: list[TopicT] = []

    def consume_in_batches(self, channel: TopicT, handler: BatchHandler, ready: Callable[[], bool]) -> None:
        self.batch_handlers.update(dict.fromkeys(channel.topics, handler))
        self.batch_intake_ready = ready
        self._batch_topics.append(channel)

    def on_rebalance_end(self) -> None:
        super().on_rebalance_end()
        self.rebalanced_once = True

    async def on_first_start(self) -> None:
        self._refuse_open_bind()
        await super().on_first_start()
        await ensure_topics(self.settings, self.names)
        for channel in self._batch_topics:
            self.topics.add(channel)  # subscribe, as iterating it in an agent would
        await self.add_runtime_dependency(self.registry)
        if not self.settings.licensed:
            log.warning("triggers are an Enterprise-tier feature: evaluating nothing",
                        extra={"licenseTier": self.settings.license_tier})

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
        return transport_class(self.settings.fetch_max_wait_ms)(self.conf.broker_consumer, self)


def build_app(settings: Settings) -> TriggerApp:
    app = TriggerApp(
        settings,
        broker=settings.broker_urls,
        store="rocksdb://",
        datadir=str(settings.data_dir),
        web_port=settings.web_port,
        web_bind=settings.web_host,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        table_standby_replicas=settings.standby_replicas,
        broker_session_timeout=settings.session_timeout_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        consumer_auto_offset_reset="earliest",
        recovery_consistency_check=settings.recovery_consistency_check,
        Monitor=QuietMonitor,
        logging_config=logging_config(settings.log_format == "json"),
        autodiscover=["app.cli.commands"],
        origin="app.main",
    )
    rows = app.Table("rows", default=None, partitions=settings.partitions)
    cooldowns = app.Table("cooldowns", default=None, partitions=settings.partitions)
    ticks_done = app.Table("ticks", default=None, partitions=settings.partitions)
    metrics = Metrics()
    pipeline = Pipeline(app, settings, app.names, app.catalogs, rows, cooldowns, ticks_done, metrics)
    scheduler = Scheduler(app.catalogs.triggers, pipeline.ticks_topic, settings.partitions,
                          timedelta(minutes=settings.schedule_catch_up_minutes), pipeline.clock)
    performed = app.Table("performed", default=None, partitions=settings.partitions)
    enrollments = app.Table("enrollments", default=None, partitions=settings.partitions)
    http = HttpDelivery(
        RetryPolicy(max_attempts=settings.webhook_max_attempts, base_delay_s=settings.webhook_base_delay_s,
                    max_delay_s=settings.webhook_max_delay_s),
        timeout_s=settings.webhook_timeout_s, allow_private=settings.allow_private_urls)
    sinks = Sinks(app, settings, app.names, app.catalogs, pipeline, performed, enrollments, http,
                  pipeline.clock)

    async def gate() -> None:
        """Wait until every definition is loaded; unlicensed, wait forever: consuming
        nothing means no event is lost once the licence is fixed."""
        if not settings.licensed:
            await asyncio.Future()
        await app.registry.wait_loaded()

    def handed_over(message: Message) -> None:
        """Only a message an agent was handed may count as processed (see app/consumer.py)."""
        cast(Consumer, app.consumer).mark_handled(message)

    def agent(channel: TopicT, name: str, handle: Callable[[Message], Awaitable[None]]) -> None:
        async def run(stream: StreamT[bytes]) -> None:
            await gate()
            async for event in stream.events():
                handed_over(event.message)
                try:
                    await handle(event.message)
                except Exception as exc:  # noqa: BLE001 - one record must not stop the agent
                    await pipeline.record_failed(event.message, exc)
        app.agent(channel, name=name)(run)

    def manually_acked_agent(channel: TopicT, name: str,
                             handle: Callable[[EventT[bytes]], Awaitable[None]]) -> None:
        # HTTP deliveries run in their own tasks and acknowledge their message when done.
        async def run(stream: StreamT[bytes]) -> None:
            await gate()
            async for event in cast(Stream[bytes], stream).noack().events():
                handed_over(event.message)
                await handle(event)
        app.agent(channel, name=name)(run)

    startup_frozen = False

    def intake_ready() -> bool:
        nonlocal startup_frozen
        ready = settings.licensed and app.registry.loaded.is_set()
        if ready and not startup_frozen:
            # What was built while starting (modules, definitions) lives as long as the worker:
            # out of the collector's sight, its full collections stop walking it again and
            # again, pauses that showed in the latency tail.
            gc.collect()
            gc.freeze()
            startup_frozen = True
        return ready

    app.consume_in_batches(pipeline.source_topic, pipeline.on_source_batch, intake_ready)
    app.consume_in_batches(pipeline.rerouted_topic, pipeline.on_rerouted_batch, intake_ready)
    app.consume_in_batches(sinks.topics["enroll_journey"], one_by_one(sinks.on_enroll_journey), intake_ready)
    app.consume_in_batches(sinks.topics["update_attribute"], one_by_one(sinks.on_update_attribute), intake_ready)
    app.consume_in_batches(sinks.journey_events_topic, one_by_one(sinks.on_journey_event), intake_ready)
    agent(pipeline.ticks_topic, "schedule-ticks", pipeline.on_tick)
    manually_acked_agent(sinks.topics["webhook"], "sink-webhook", sinks.on_webhook)
    manually_acked_agent(sinks.topics["fire_recommend"], "sink-fire-recommend", sinks.on_fire_recommend)

    @app.agent(pipeline.definitions_topic, name="definition-errors")
    async def definition_errors(stream: StreamT[bytes]) -> None:
        # Not gated: invalid definitions are reported even by an unlicensed worker.
        async for event in stream.events():
            handed_over(event.message)
            try:
                await pipeline.on_definition_message(event.message)
            except Exception:  # noqa: BLE001 - one record must not stop the reports
                log.exception("definition report failed", extra={"topic": event.message.topic,
                                                                 "offset": event.message.offset})

    @app.timer(interval=1.0, on_leader=True)  # type: ignore[untyped-decorator]
    async def schedule_clock() -> None:
        if app.registry.loaded.is_set() and settings.licensed:
            await scheduler.publish_due_ticks()

    @app.page("/health")
    async def health(view: View, request: Request) -> Response:
        return view.json(health_report(app, pipeline, sinks))

    register_api(app, pipeline, sinks, metrics)

    app.pipeline = pipeline  # type: ignore[attr-defined]
    return app


def one_by_one(handle: Callable[[RawRecord], Awaitable[None]]) -> BatchHandler:
    async def handle_batch(tp: TP, records: Sequence[RawRecord]) -> None:
        for record in records:
            await handle(record)
    return handle_batch


def health_report(app: TriggerApp, pipeline: Pipeline, sinks: Sinks) -> dict[str, Any]:
    streaming = app.names.streaming
    assigned = sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == streaming)
    loaded = app.registry.loaded.is_set()
    settled = app.rebalanced_once and not app.rebalancing and not app.in_recovery
    status = "ok" if loaded and settled else "starting"
    if not app.settings.licensed:
        status = "unlicensed"
    answered = app.registry.broker_answered_at
    return {
        "status": status,
        "broker": {"bootstrapServers": mask_bootstrap(app.settings.kafka_bootstrap_servers),
                   "connected": answered is not None and time.monotonic() - answered < BROKER_STALE_S},
        "licenseTier": app.settings.license_tier,
        "reason": None if app.settings.licensed else
        "triggers are an Enterprise-tier feature; set TRIGGERS_LICENSE_TIER=enterprise",
        "definitionsLoaded": loaded,
        "definitions": len(app.catalogs.triggers.items),
        "definitionsOffset": app.registry.applied_offsets[app.names.definitions],
        "rejectedDefinitions": sorted(app.catalogs.triggers.rejected),
        "catalogs": {catalog.kind: {"count": len(catalog.items), "rejected": sorted(catalog.rejected),
                                    "offset": app.registry.applied_offsets[topic]}
                     for topic, catalog in app.catalogs.by_topic.items()},
        "assignedPartitions": assigned,
        "rebalancing": bool(app.rebalancing),
        "recovering": bool(app.in_recovery),
        "counters": dict(pipeline.counters + sinks.counters),
        "deliveries": sinks.backlog(),
        "consumer": {"fetchMaxWaitMs": cast(Consumer, app.consumer).fetch_wait_in_use_ms()},
    }


app = build_app(get_settings())
