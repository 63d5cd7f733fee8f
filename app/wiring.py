"""The composition root: settings -> app -> tables -> services -> consumers -> web. It wires;
every decision lives in the modules it wires."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import cast

from faust.types import Message

from app.actions import PERFORMERS
from app.actions.deadletters import ActionDeadLetters
from app.actions.delivery.dispatch import Dispatcher, now_ms, slot_limits
from app.actions.delivery.http import HttpDelivery
from app.actions.delivery.limits import OriginLimits
from app.actions.delivery.store import DeliveryStore
from app.actions.endpoint_health import EndpointHealth
from app.actions.journey_events import JourneyEvents
from app.actions.performer import ActionServices
from app.actions.sink import Sink
from app.domain.journey_events import REROUTED_KIND
from app.domain.timers import to_millis
from app.evaluation.evaluator import Evaluator
from app.evaluation.timed import TimedEvaluation
from app.experiments.tracker import ConversionTracker
from app.intake.row_loads import RowLoads
from app.intake.sources import SourceIntake
from app.kafka.app import TriggerApp, one_by_one
from app.kafka.consumer import Consumer
from app.kafka.publisher import Publisher
from app.kafka.transport import QuietMonitor
from app.logs import logging_config
from app.metrics import Metrics
from app.policies.gate import ContactGate
from app.registry.audit import DefinitionAudit
from app.registry.reports import DefinitionReports
from app.scheduling.clock import ScheduleClock
from app.scheduling.ticks import ScheduledTicks
from app.settings import Settings
from app.state.aggregates import AggregateStore
from app.state.enrollments import EnrollmentStore
from app.state.performed import PerformedLog
from app.state.rows import RowStore
from app.timers.event_time import EventTime
from app.timers.pending import PendingFirings
from app.timers.service import Timers
from app.timers.store import TimerStore
from app.web.activity import register_console_api
from app.web.api import register_api
from app.web.console import register_console
from app.web.health import register_health

MB = 1024 * 1024
SMALL_MEMTABLES = {"write_buffer_size": 4 * MB, "max_write_buffer_number": 2, "block_cache_size": 16 * MB}


def build(settings: Settings) -> TriggerApp:
    app = new_app(settings)
    metrics = Metrics()
    tables = {name: app.Table(name, default=None, partitions=settings.partitions)
              for name in ("rows", "cooldowns", "ticks", "performed", "enrollments", "journey_history")}
    # Timers and aggregates may hold millions of small records: RocksDB's default memtables
    # (64 MB, three per partition and table) would hold them all in memory before a flush.
    tables.update({name: app.Table(name, default=None, partitions=settings.partitions, options=SMALL_MEMTABLES)
                   for name in ("timers", "aggregates", "contacts", "deliveries", "experiments")})
    clock = utc_now
    publisher = Publisher(lambda: app.producer, app.topic_names, metrics, clock)
    row_store = RowStore(tables["rows"], publisher)

    # -- intake and evaluation ---------------------------------------------------------------
    topics = app.topic_names
    timer_store = TimerStore(tables["timers"])
    pending = PendingFirings(topics, app.catalogs.triggers, timer_store, publisher, metrics, clock)
    gate = ContactGate(topics, app.catalogs, tables["contacts"], pending, row_store, publisher, metrics,
                       settings.partitions, clock)
    # Experiments' open conversion windows, per customer (app/experiments/tracker.py).
    conversions = ConversionTracker(topics, app.catalogs.triggers, tables["experiments"], publisher, clock)
    evaluator = Evaluator(topics, app.catalogs.triggers, publisher, row_store, tables["cooldowns"], metrics, clock,
                          gate, conversions)
    row_loads = RowLoads(topics, app.catalogs.tables, row_store, publisher, metrics, clock)

    # -- timers and aggregates (docs/timers.md) -------------------------------------------------
    aggregates = AggregateStore(tables["aggregates"])
    event_time = EventTime([topics.streaming, topics.cdc, topics.outcomes, topics.schema, topics.rerouted],
                           lambda tp: cast(Consumer, app.consumer).caught_up(tp))
    timers = Timers(topics, app.catalogs.triggers, pending, event_time, evaluator, row_store, aggregates,
                    metrics, clock)
    timed = TimedEvaluation(app.catalogs.triggers, evaluator, aggregates, timers, conversions)

    swept: set[frozenset[str]] = set()  # the aggregates in use when the local state was last swept

    @app.timer(interval=settings.timer_pass_seconds)  # type: ignore[untyped-decorator]
    async def due_timers() -> None:
        """The clock's pass: fires what is due once a partition has no backlog left."""
        if not (app.may_evaluate() and app.settled()):
            return
        if await timer_store.refresh(app.consumer_generation_id):
            swept.clear()  # partitions may have come from another worker
        in_use = app.catalogs.triggers.index.aggregate_ids
        if swept != {in_use}:
            await aggregates.drop_unused(in_use, topics.streaming)
            swept.clear()
            swept.add(in_use)
        now_ms = to_millis(clock())
        for partition in list(timer_store.heaps):
            await timers.fire_due_now(partition, now_ms)

    intake = SourceIntake(settings, topics, evaluator, timed, row_loads, publisher, conversions)
    app.consume_in_batches(app.raw_topic(*intake.source_topics), intake.on_source_batch)
    app.consume_in_batches(app.raw_topic(topics.rerouted), intake.on_rerouted_batch)
    reports = DefinitionReports(topics, app.catalogs, publisher, clock)
    audit = DefinitionAudit(settings, topics, app.catalogs, publisher, lambda: app.consumer_generation_id,
                            lambda: app.producer.flush())

    async def on_definition(message: Message) -> None:
        """One group agent: each change reported if invalid, and appended to the audit trail."""
        await reports.on_definition_message(message)
        await audit.on_definition_message(message)

    # Not gated: invalid definitions are reported, and changes audited, even by an unlicensed worker.
    app.consume_each(app.raw_topic(*topics.definition_topics), "definition-errors", on_definition,
                     reports.report_failed, gated=False)

    # -- scheduling --------------------------------------------------------------------------
    ticks_channel = app.raw_topic(topics.ticks)
    ticks = ScheduledTicks(settings.partitions, app.catalogs.triggers, evaluator, row_store.rows, tables["ticks"],
                           publisher)
    app.consume_each(ticks_channel, "schedule-ticks", ticks.on_tick, publisher.record_failed)
    schedule = ScheduleClock(app.catalogs.triggers, ticks_channel, settings.partitions,
                             timedelta(minutes=settings.schedule_catch_up_minutes), clock)

    @app.timer(interval=1.0, on_leader=True)  # type: ignore[untyped-decorator]
    async def schedule_clock() -> None:
        if app.may_evaluate():
            await schedule.publish_due_ticks()

    # -- actions (docs/contract.md, webhook delivery) ---------------------------------------
    http = HttpDelivery(timeout_s=settings.webhook_timeout_s, allow_private=settings.allow_private_urls)
    action_counters: Counter[str] = Counter()
    delivery_store = DeliveryStore(tables["deliveries"])
    webhook_topic = topics.action("webhook")
    dispatcher = Dispatcher(
        http, delivery_store, metrics,
        slot_limits(settings.webhook_max_in_flight, settings.webhook_per_endpoint_concurrency),
        OriginLimits(app.catalogs.triggers).limit,
        lambda: (sum(1 for tp in app.consumer.assignment() if tp.topic == webhook_topic), settings.partitions),
        topics.action, now_ms, action_counters,
        lambda: app.settled() and delivery_store.generation == app.consumer_generation_id)
    enrollments = EnrollmentStore(tables["enrollments"], tables["journey_history"])
    services = ActionServices(settings, app.topic_names, app.catalogs, publisher, row_store, enrollments, clock)
    performed = PerformedLog(tables["performed"], timedelta(days=settings.dedup_retention_days),
                             settings.dedup_max_per_customer, clock)
    dead_letters = ActionDeadLetters(publisher, metrics, action_counters, clock)
    endpoint_health = EndpointHealth(settings, publisher, metrics, clock)
    app.task(endpoint_health.follow)
    for performer in PERFORMERS:
        sink = Sink(performer(services), performed, dead_letters, dispatcher, metrics, action_counters,
                    settings.retry_schedule, endpoint_health)
        channel = app.raw_topic(app.topic_names.action(performer.action_type))
        if performer.delivers_over_http:
            app.consume_acking_itself(channel, "sink-" + performer.action_type.replace("_", "-"), sink.on_event)
        else:
            app.consume_in_batches(channel, one_by_one(sink.on_record))

    @app.timer(interval=settings.timer_pass_seconds)  # type: ignore[untyped-decorator]
    async def due_deliveries() -> None:
        """The clock's pass over waiting deliveries: starts those due, as slots and rates allow."""
        if not (app.may_evaluate() and app.settled()):
            return
        await delivery_store.refresh(app.consumer_generation_id)
        dispatcher.pump_all()

    journey_events = JourneyEvents(enrollments, publisher, settings.partitions, action_counters, clock)
    app.consume_in_batches(app.raw_topic(app.topic_names.journey_events), one_by_one(journey_events.on_record))
    intake.register_rerouted(REROUTED_KIND, journey_events.on_rerouted)

    # -- web ---------------------------------------------------------------------------------
    register_health(app, lambda: (publisher.counters + intake.counters + row_loads.counters + evaluator.counters
                                  + timers.counters + gate.counters + conversions.counters + action_counters),
                    dispatcher.backlog, endpoint_health.disabled_count)
    register_console_api(app, clock)  # before register_api: its routes must match first
    register_api(app, row_store, aggregates, gate, clock, metrics)
    register_console(app)
    return app


def new_app(settings: Settings) -> TriggerApp:
    return TriggerApp(
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
        autodiscover=["app.cli.commands", "app.cli.deadletters", "app.cli.endpoints"],
        origin="app.main",
    )


def utc_now() -> datetime:
    return datetime.now(UTC)
