"""Shadow triggers through intake, evaluator, contact gate, timers and ticks over in-memory
doubles: firings on `triggers.shadow` only, cooldown marks and contact counts under shadow
keys, suppressions and pending records marked `"shadow": true`, counters apart."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from faust.types import TP

from app.domain.internal_records import Tick
from app.domain.models import ACTION_TYPES
from app.domain.timers import to_millis
from tests.adapters.engine_parts import EngineParts
from tests.adapters.fakes import record

CUSTOMER = "c-1"
STREAMING = "events.streaming"
ENROLL = {"type": "enroll_journey", "journeyId": "welcome"}


class Shadow:
    def __init__(self) -> None:
        self.parts = EngineParts()
        self.offset = 0

    def define(self, trigger_id: str, priority: int = 50, **overrides: Any) -> None:
        self.parts.define(**{"id": trigger_id, "source": "streaming", "eventType": "visit", "priority": priority,
                             "action": ENROLL, **overrides})

    def policy(self, policy_id: str, **definition: Any) -> None:
        self.parts.catalogs.policies.apply(policy_id, json.dumps({"id": policy_id, **definition}).encode())
        assert policy_id in self.parts.catalogs.policies.items

    async def send(self, event_id: str, at: datetime | None = None) -> None:
        value = {"type": "visit", "customerId": CUSTOMER, "id": event_id,
                 "timestamp": (at or self.parts.clock()).isoformat()}
        partition = self.parts.partition_of(CUSTOMER)
        await self.parts.intake.on_source_batch(TP(STREAMING, partition), [
            record(STREAMING, CUSTOMER, value, partition, self.offset)])
        self.offset += 1

    def on(self, topic: str) -> list[tuple[str, str]]:
        return [(r["triggerId"], r["eventId"]) for r in self.parts.sent(topic)]

    def performed(self) -> list[str]:
        return [c["triggerId"] for action in ACTION_TYPES for c in self.parts.sent(f"actions.{action}")]


async def test_a_shadow_trigger_fires_to_triggers_shadow_only_with_its_own_cooldown() -> None:
    shadow = Shadow()
    shadow.define("spy", cooldownMinutes=60, mode="shadow")
    await shadow.send("e1")
    shadow.parts.clock.advance(timedelta(minutes=10))
    await shadow.send("e2")
    assert shadow.on("triggers.shadow") == [("spy", "e1")]
    assert shadow.parts.sent("triggers.shadow")[0]["shadow"] is True
    assert shadow.on("triggers.firings") == [] and shadow.performed() == []
    assert list(shadow.parts.cooldowns) == [f"shadow~spy|{CUSTOMER}"]
    counters = shadow.parts.evaluator.counters
    assert (counters["shadow_firings"], counters["firings"], counters["cooled_down"]) == (1, 0, 1)
    assert b'triggers_shadow_firings_total{action="enroll_journey",trigger="spy"} 1.0' in \
        shadow.parts.metrics.render()

    # Live from now on: the shadow cooldown (50 minutes left) does not hold it.
    shadow.define("spy", cooldownMinutes=60)
    await shadow.send("e3")
    assert shadow.on("triggers.firings") == [("spy", "e3")] and shadow.performed() == ["spy"]
    assert sorted(shadow.parts.cooldowns) == [f"shadow~spy|{CUSTOMER}", f"spy|{CUSTOMER}"]


async def test_a_shadow_firing_a_policy_stops_is_published_as_a_shadow_suppression() -> None:
    shadow = Shadow()
    shadow.policy("cap", limits=[{"max": 1, "window": {"days": 1}}])
    shadow.define("live", priority=60)
    shadow.define("spy", priority=50, mode="shadow")
    await shadow.send("e1")
    assert shadow.on("triggers.firings") == [("live", "e1")]
    [stopped] = shadow.parts.sent("triggers.suppressed")
    assert (stopped["triggerId"], stopped["reason"], stopped["shadow"]) == ("spy", "frequency_cap", True)
    assert shadow.parts.gate.counters == Counter({"shadow_suppressed_frequency_cap": 1})
    assert shadow.on("triggers.shadow") == []


async def test_a_shadow_trigger_ranked_first_leaves_the_cap_to_the_live_one() -> None:
    shadow = Shadow()
    shadow.policy("cap", limits=[{"max": 1, "window": {"days": 1}}])
    shadow.define("spy", priority=80, mode="shadow")
    shadow.define("live", priority=60)
    await shadow.send("e1")
    assert shadow.on("triggers.shadow") == [("spy", "e1")] and shadow.on("triggers.firings") == [("live", "e1")]
    assert shadow.parts.sent("triggers.suppressed") == []
    contacts = shadow.parts.contacts[CUSTOMER]
    assert (len(contacts["p"]["cap"]), len(contacts["s"]["spy"]["p"]["cap"])) == (1, 1)


async def test_a_delayed_shadow_firing_is_pending_as_shadow_and_fires_to_triggers_shadow() -> None:
    shadow = Shadow()
    shadow.define("later", delay={"minutes": 30}, mode="shadow")
    await shadow.send("e1")
    shadow.parts.clock.advance(timedelta(minutes=31))
    partition = shadow.parts.partition_of(CUSTOMER)
    shadow.parts.caught_up.update(TP(topic, partition) for topic in shadow.parts.event_time.source_topics)
    await shadow.parts.timers.fire_due_now(partition, to_millis(shadow.parts.clock()))
    assert [(p["status"], p["shadow"]) for p in shadow.parts.sent("triggers.pending")] == [
        ("scheduled", True), ("fired", True)]
    assert shadow.on("triggers.shadow") == [("later", "e1")]
    assert shadow.on("triggers.firings") == [] and shadow.performed() == []


async def test_a_live_pending_firing_of_a_trigger_switched_to_shadow_performs_nothing() -> None:
    shadow = Shadow()
    shadow.define("later", delay={"minutes": 30})
    await shadow.send("e1")
    shadow.define("later", delay={"minutes": 30}, mode="shadow")
    shadow.parts.clock.advance(timedelta(minutes=31))
    partition = shadow.parts.partition_of(CUSTOMER)
    shadow.parts.caught_up.update(TP(topic, partition) for topic in shadow.parts.event_time.source_topics)
    await shadow.parts.timers.fire_due_now(partition, to_millis(shadow.parts.clock()))
    assert [(p["status"], p.get("shadow")) for p in shadow.parts.sent("triggers.pending")] == [
        ("scheduled", None), ("fired", True)]
    assert shadow.on("triggers.shadow") == [("later", "e1")] and shadow.performed() == []


async def test_a_scheduled_shadow_trigger_fires_each_audience_member_to_triggers_shadow() -> None:
    parts = EngineParts()
    parts.define(id="winback", source="scheduled", eventType="schedule.tick", schedule="daily", mode="shadow",
                 cooldownMinutes=60 * 24 * 7, action=ENROLL)
    audience = [f"c-{n}" for n in range(8)]
    for customer in audience:
        parts.rows[f"customers|{customer}"] = {"customerId": customer}
    for partition in range(parts.partitions):
        tick = Tick("winback", parts.clock().replace(hour=0))
        await parts.ticks.on_tick(record("triggers.internal.ticks", "winback", tick.record(), partition))
    assert sorted(f["customerId"] for f in parts.sent("triggers.shadow")) == sorted(audience)
    assert parts.sent("triggers.firings") == [] and parts.sent("actions.enroll_journey") == []
    assert sorted(parts.cooldowns) == sorted(f"shadow~winback|{customer}" for customer in audience)
