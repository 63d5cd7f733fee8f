"""`GET /health`: what this worker knows, for people and for the tests that wait on it."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

from faust.web import Request, Response, View

from app.domain.secrets import mask_bootstrap
from app.kafka.app import TriggerApp
from app.kafka.consumer import Consumer

# The definitions reader polls the broker every 0.5 s; this long without an answer is "down".
BROKER_STALE_S = 10.0


def register_health(app: TriggerApp, counters: Callable[[], Counter[str]],
                    deliveries: Callable[[], dict[str, int]], endpoints_disabled: Callable[[], int]) -> None:
    """`counters`: every component's counters, added; `deliveries`: HTTP work running, and waiting
    in the deliveries table (`waiting`, `parked`); `endpoints_disabled`: how many webhook
    endpoints are disabled."""
    @app.page("/health")
    async def health(view: View, request: Request) -> Response:
        return view.json(health_report(app, counters(), deliveries()) | {"endpointsDisabled": endpoints_disabled()})


def health_report(app: TriggerApp, counters: Counter[str], deliveries: dict[str, int]) -> dict[str, Any]:
    streaming = app.topic_names.streaming
    assigned = sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == streaming)
    loaded = app.registry.loaded.is_set()
    status = "ok" if loaded and app.settled() else "starting"
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
        "definitionsOffset": app.registry.applied_offsets[app.topic_names.definitions],
        "rejectedDefinitions": sorted(app.catalogs.triggers.rejected),
        "catalogs": {catalog.kind: {"count": len(catalog.items), "rejected": sorted(catalog.rejected),
                                    "offset": app.registry.applied_offsets[topic]}
                     for topic, catalog in app.catalogs.by_topic.items()},
        "assignedPartitions": assigned,
        "rebalancing": bool(app.rebalancing),
        "recovering": bool(app.in_recovery),
        "counters": dict(counters),
        "deliveries": deliveries,
        "consumer": {"fetchMaxWaitMs": cast(Consumer, app.consumer).fetch_wait_in_use_ms()},
    }
