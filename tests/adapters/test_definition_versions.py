"""Versions as the worker keeps and emits them: the catalog records each id's version, time
and actor; firings, delayed firings and suppressions carry the deciding trigger's version."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from faust.types import TP

from app.domain.timers import to_millis
from app.registry.catalogs import Catalogs
from app.topics import Topics
from tests.adapters.engine_parts import EngineParts, trigger
from tests.adapters.fakes import record

AT = datetime(2026, 12, 2, 9, tzinfo=UTC)


def define(parts: EngineParts, version: int, **definition: Any) -> None:
    parts.catalogs.triggers.apply(definition["id"], json.dumps(definition).encode(), AT, version, "alice")
    assert definition["id"] in parts.catalogs.triggers.items


async def send(parts: EngineParts, event_id: str, customer: str = "c-1", at: datetime | None = None) -> None:
    value = {"type": "purchase", "customerId": customer, "id": event_id, "amount": 500,
             "timestamp": (at or parts.clock()).isoformat()}
    sent = record("events.streaming", customer, value, parts.partition_of(customer), int(event_id[1:]))
    await parts.intake.on_source_batch(TP(sent.topic, sent.partition), [sent])  # type: ignore[list-item]


def test_the_catalog_keeps_each_valid_definitions_version_time_and_actor() -> None:
    catalog = Catalogs(Topics()).triggers
    catalog.apply("t", json.dumps(trigger("t")).encode(), AT, 4, "alice")
    assert catalog.versions["t"].to_json() == {"version": 4, "changedAt": "2026-12-02T09:00:00+00:00",
                                               "actor": "alice"}
    assert catalog.items["t"].version == 4
    catalog.apply("t", b"{not json", AT, 5, "bob")  # rejected: no current version
    assert "t" not in catalog.versions and "t" not in catalog.items
    catalog.apply("t", json.dumps(trigger("t")).encode(), AT, 6)
    assert catalog.versions["t"].actor == "unknown" and catalog.items["t"].version == 6
    catalog.apply("t", None, AT, 7)
    assert "t" not in catalog.versions


async def test_a_firing_carries_the_version_that_decided_it() -> None:
    parts = EngineParts()
    define(parts, 3, **trigger("t"))
    await send(parts, "e1")
    define(parts, 9, **trigger("t"))
    await send(parts, "e2")
    assert [f["definitionVersion"] for f in parts.sent("triggers.firings")] == [3, 9]
    assert [c["definitionVersion"] for c in parts.sent("actions.enroll_journey")] == [3, 9]


async def test_a_delayed_firing_carries_the_version_current_at_its_due_time() -> None:
    parts = EngineParts()
    define(parts, 3, **trigger("t", delay={"minutes": 5}))
    await send(parts, "e1", at=parts.clock())
    define(parts, 8, **trigger("t", delay={"minutes": 5}))
    parts.clock.advance(timedelta(minutes=6))
    partition = parts.partition_of("c-1")
    parts.caught_up.update(TP(topic, partition) for topic in parts.event_time.source_topics)
    await parts.timers.fire_due_now(partition, to_millis(parts.clock()))
    assert [f["definitionVersion"] for f in parts.sent("triggers.firings")] == [8]


async def test_a_suppressed_firing_carries_its_version() -> None:
    parts = EngineParts()
    define(parts, 12, **trigger("t", limit={"max": 1}))
    await send(parts, "e1")
    await send(parts, "e2")
    [suppressed] = parts.sent("triggers.suppressed")
    assert (suppressed["reason"], suppressed["definitionVersion"]) == ("trigger_limit", 12)


async def test_shadow_firings_carry_their_version_even_when_scheduled_before_going_live() -> None:
    parts = EngineParts()
    define(parts, 5, **trigger("s", mode="shadow"))
    await send(parts, "e1")
    assert [f["definitionVersion"] for f in parts.sent("triggers.shadow")] == [5]
    define(parts, 6, **trigger("d", mode="shadow", delay={"minutes": 5}))
    await send(parts, "e2", customer="c-2")
    define(parts, 7, **trigger("d", delay={"minutes": 5}))  # live now: the pending firing stays shadow
    parts.clock.advance(timedelta(minutes=6))
    partition = parts.partition_of("c-2")
    parts.caught_up.update(TP(topic, partition) for topic in parts.event_time.source_topics)
    await parts.timers.fire_due_now(partition, to_millis(parts.clock()))
    delayed = [f for f in parts.sent("triggers.shadow") if f["triggerId"] == "d"]
    assert [f["definitionVersion"] for f in delayed] == [7]
