"""The composition root: settings -> app -> tables -> services -> consumers -> web. It wires;
every decision lives in the modules it wires."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.agents.pipeline import Pipeline
from app.agents.scheduler import Scheduler
from app.agents.sinks import Sinks
from app.domain.webhooks import RetryPolicy
from app.kafka.app import TriggerApp, one_by_one
from app.kafka.publisher import Publisher
from app.kafka.transport import QuietMonitor
from app.logs import logging_config
from app.metrics import Metrics
from app.settings import Settings
from app.sinks.http import HttpDelivery
from app.state.rows import RowStore
from app.web.api import register_api
from app.web.health import register_health


def build(settings: Settings) -> TriggerApp:
    app = new_app(settings)
    metrics = Metrics()
    tables = {name: app.Table(name, default=None, partitions=settings.partitions)
              for name in ("rows", "cooldowns", "ticks", "performed", "enrollments")}
    clock = utc_now
    publisher = Publisher(lambda: app.producer, app.topic_names, metrics, clock)
    row_store = RowStore(tables["rows"], publisher)

    # -- intake and evaluation ---------------------------------------------------------------
    pipeline = Pipeline(app, settings, app.topic_names, app.catalogs, publisher, row_store,
                        tables["cooldowns"], tables["ticks"], metrics, clock)
    app.consume_in_batches(pipeline.source_topic, pipeline.on_source_batch)
    app.consume_in_batches(pipeline.rerouted_topic, pipeline.on_rerouted_batch)
    app.consume_each(pipeline.ticks_topic, "schedule-ticks", pipeline.on_tick, publisher.record_failed)
    # Not gated: invalid definitions are reported even by an unlicensed worker.
    app.consume_each(pipeline.definitions_topic, "definition-errors", pipeline.on_definition_message,
                     pipeline.definition_report_failed, gated=False)

    # -- scheduling --------------------------------------------------------------------------
    scheduler = Scheduler(app.catalogs.triggers, pipeline.ticks_topic, settings.partitions,
                          timedelta(minutes=settings.schedule_catch_up_minutes), clock)

    @app.timer(interval=1.0, on_leader=True)  # type: ignore[untyped-decorator]
    async def schedule_clock() -> None:
        if app.may_evaluate():
            await scheduler.publish_due_ticks()

    # -- actions -----------------------------------------------------------------------------
    http = HttpDelivery(
        RetryPolicy(max_attempts=settings.webhook_max_attempts, base_delay_s=settings.webhook_base_delay_s,
                    max_delay_s=settings.webhook_max_delay_s),
        timeout_s=settings.webhook_timeout_s, allow_private=settings.allow_private_urls)
    sinks = Sinks(app, settings, app.topic_names, app.catalogs, pipeline, publisher, row_store,
                  tables["performed"], tables["enrollments"], http, clock)
    app.consume_in_batches(sinks.topics["enroll_journey"], one_by_one(sinks.on_enroll_journey))
    app.consume_in_batches(sinks.topics["update_attribute"], one_by_one(sinks.on_update_attribute))
    app.consume_in_batches(sinks.journey_events_topic, one_by_one(sinks.on_journey_event))
    app.consume_acking_itself(sinks.topics["webhook"], "sink-webhook", sinks.on_webhook)
    app.consume_acking_itself(sinks.topics["fire_recommend"], "sink-fire-recommend", sinks.on_fire_recommend)

    # -- web ---------------------------------------------------------------------------------
    register_health(app, lambda: publisher.counters + pipeline.counters + sinks.counters, sinks.backlog)
    register_api(app, pipeline, metrics)
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
        autodiscover=["app.cli.commands"],
        origin="app.main",
    )


def utc_now() -> datetime:
    return datetime.now(UTC)
