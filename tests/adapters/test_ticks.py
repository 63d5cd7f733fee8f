"""Scheduled ticks over in-memory doubles: each customer of the tick's partition visited once, a
repeated tick ignored, a malformed tick dead-lettered; and the leader's clock publishing them."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from app.domain.internal_records import Tick
from app.scheduling.clock import ScheduleClock
from tests.adapters.engine_parts import EngineParts
from tests.adapters.fakes import FakeClock, record

SCHEDULED = {"id": "winback", "source": "scheduled", "eventType": "schedule.tick", "schedule": "daily",
             "conditions": ["customer.tier == 'gold'"], "action": {"type": "enroll_journey", "journeyId": "w"}}
CUSTOMERS = [f"c-{n}" for n in range(12)]


def scheduled_parts() -> EngineParts:
    parts = EngineParts()
    parts.define(**SCHEDULED)
    for customer in CUSTOMERS:
        parts.rows[f"customers|{customer}"] = {"customerId": customer, "tier": "gold"}
    parts.rows["customers|c-silver"] = {"tier": "silver"}
    parts.rows["scores|c-0"] = {"n": 1}  # another schema table's row: not an audience
    return parts


def tick_record(parts: EngineParts, partition: int, value: Any = None, offset: int = 0) -> Any:
    tick = Tick("winback", parts.clock().replace(hour=0))
    return record("triggers.internal.ticks", "winback", tick.record() if value is None else value, partition, offset)


async def test_a_tick_visits_each_customer_of_its_partition_once() -> None:
    parts = scheduled_parts()
    for partition in range(parts.partitions):
        await parts.ticks.on_tick(tick_record(parts, partition))
    fired = [f["customerId"] for f in parts.sent("triggers.firings")]
    assert sorted(fired) == sorted(CUSTOMERS)  # each gold customer once, across the partitions; silver not
    for partition in range(parts.partitions):
        assert parts.ticks_done[f"winback|{partition}"] == "2026-01-01T00:00:00+00:00"


async def test_a_tick_fires_only_for_the_customers_whose_rows_live_in_its_partition() -> None:
    parts = scheduled_parts()
    await parts.ticks.on_tick(tick_record(parts, 1))
    fired = {f["customerId"] for f in parts.sent("triggers.firings")}
    assert fired == {c for c in CUSTOMERS if parts.partition_of(c) == 1} and fired


async def test_a_repeated_tick_is_ignored() -> None:
    parts = scheduled_parts()
    await parts.ticks.on_tick(tick_record(parts, 1))
    first = len(parts.producer.sent)
    await parts.ticks.on_tick(tick_record(parts, 1, offset=1))  # a new leader published it again
    assert len(parts.producer.sent) == first


async def test_a_tick_for_a_deleted_trigger_does_nothing() -> None:
    parts = scheduled_parts()
    parts.catalogs.triggers.apply("winback", None)
    await parts.ticks.on_tick(tick_record(parts, 1))
    assert parts.producer.sent == [] and parts.ticks_done == {}


async def test_a_malformed_tick_is_dead_lettered() -> None:
    parts = scheduled_parts()
    await parts.ticks.on_tick(tick_record(parts, 2, json.dumps({"triggerId": "winback"}).encode(), offset=5))
    [letter] = parts.sent("events.deadletter")
    assert letter["reason"] == "a tick has text fields 'triggerId' and 'scheduledAt'"
    assert (letter["topic"], letter["partition"], letter["offset"]) == ("triggers.internal.ticks", 2, 5)
    assert parts.ticks_done == {}


class _Channel:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes, int]] = []

    async def send(self, key: bytes, value: bytes, partition: int) -> None:
        self.sent.append((key, value, partition))


async def test_the_clock_publishes_a_due_tick_once_to_every_partition() -> None:
    parts = scheduled_parts()
    clock, channel = FakeClock(parts.clock().replace(minute=0, second=30)), _Channel()
    schedule = ScheduleClock(parts.catalogs.triggers, channel, 4, timedelta(hours=12), clock)  # type: ignore[arg-type]
    await schedule.publish_due_ticks()  # a new leader: the day's midnight tick, missed, runs once
    assert [partition for _, _, partition in channel.sent] == [0, 1, 2, 3]
    assert {json.loads(value)["scheduledAt"] for _, value, _ in channel.sent} == {"2026-01-01T00:00:00+00:00"}
    clock.advance(timedelta(minutes=1))
    await schedule.publish_due_ticks()
    assert len(channel.sent) == 4
