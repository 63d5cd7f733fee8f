"""Contact policies and trigger limits on a real broker, with two workers."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import pytest

from tests.integration.conftest import Deployment, start_deployment

pytestmark = pytest.mark.integration

PARTITIONS = 4


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def trigger(trigger_id: str, event_type: str, priority: int, **extra: Any) -> dict[str, Any]:
    return {"id": trigger_id, "source": "streaming", "eventType": event_type, "priority": priority,
            "action": {"type": "update_attribute", "attributes": {f"seen_{trigger_id.replace('-', '_')}": "1"}},
            **extra}


async def split_between_two(deployment: Deployment) -> None:
    first, second = deployment.workers
    for _ in range(240):
        reports = [await first.health(), await second.health()]
        owned = [set(r["assignedPartitions"]) for r in reports if r and r["status"] == "ok"]
        if len(owned) == 2 and all(owned) and owned[0] | owned[1] == set(range(PARTITIONS)):
            return
        await asyncio.sleep(0.5)
    pytest.fail(f"partitions never split between the workers: {reports}")


async def suppressed(deployment: Deployment, count: int, where: Any, settle: float = 2.0) -> list[dict[str, Any]]:
    return await deployment.firings(count, where, settle=settle, timeout=40, topic=deployment.topics.suppressed)


async def test_a_cap_lets_the_highest_priorities_through_and_holds_across_a_rebalance(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    deployment = await start_deployment(kafka_bootstrap, tmp_path, workers=2, partitions=PARTITIONS)
    try:
        await split_between_two(deployment)
        event_type = unique("visit")
        await deployment.put(deployment.topics.policy_definitions, "policy", "weekly-cap", {
            "id": "weekly-cap", "limits": [{"max": 3, "window": {"days": 7}}]})
        ids = [f"marketing-{n}" for n in range(5)]
        for n, trigger_id in enumerate(ids):  # priorities 50, 55, 60, 65, 70
            await deployment.put_definition(trigger(trigger_id, event_type, 50 + 5 * n))
        await deployment.put_definition(trigger("compliance", event_type, 95))
        customers = [unique("c") for _ in range(12)]  # spread over every partition
        for customer in customers:
            await deployment.send_event({"type": event_type, "customerId": customer, "id": unique("e")})

        firings = await deployment.firings(12 * 4, lambda r: r["customerId"] in customers, settle=3)
        fired = Counter(f["customerId"] for f in firings)
        assert fired == dict.fromkeys(customers, 4), fired  # 3 under the cap + the Critical one
        for customer in customers:
            mine = {f["triggerId"] for f in firings if f["customerId"] == customer}
            assert mine == {"marketing-4", "marketing-3", "marketing-2", "compliance"}
        stopped = await suppressed(deployment, 12 * 2, lambda r: r["customerId"] in customers)
        assert Counter((s["triggerId"], s["reason"], s["policyId"]) for s in stopped) == {
            ("marketing-1", "frequency_cap", "weekly-cap"): 12, ("marketing-0", "frequency_cap", "weekly-cap"): 12}

        # One worker leaves: its partitions (and their contact counts) move to the other.
        deployment.workers[1].stop()
        survivor = deployment.workers[0]
        await survivor.wait_for(lambda r: r["status"] == "ok" and len(r["assignedPartitions"]) == PARTITIONS,
                                timeout=90, what="all partitions on the survivor")
        for customer in customers:
            await deployment.send_event({"type": event_type, "customerId": customer, "id": unique("again")})
        firings = await deployment.firings(12 * 5, lambda r: r["customerId"] in customers, settle=3)
        later = [f for f in firings if f["eventId"].startswith("again")]
        assert {f["triggerId"] for f in later} == {"compliance"}, "the cap did not hold after the rebalance"
        assert len(later) == 12
        stopped = await suppressed(deployment, 12 * 7, lambda r: r["customerId"] in customers)
        assert len(stopped) == 12 * 7  # 2 on the first event, all 5 on the second
    finally:
        deployment.stop()
        await deployment.kafka.stop()


def a_zone_where_it_is_night(now: datetime) -> str:
    for name in sorted(available_timezones()):
        if "/" in name and not name.startswith(("Etc", "SystemV", "posix", "right")):
            hour = now.astimezone(ZoneInfo(name)).hour
            if hour >= 23 or hour < 5:
                return name
    raise AssertionError("no zone where it is night")


async def test_quiet_hours_defer_to_the_window_end_in_the_customers_zone_and_drop_suppresses(
        engine: Deployment) -> None:
    now = datetime.now(UTC)
    zone = a_zone_where_it_is_night(now)
    event_type = unique("promo")
    await engine.put(engine.topics.policy_definitions, "policy", "night", {
        "id": "night", "appliesTo": {"triggerIds": ["promo-defer"]},
        "quietHours": {"from": "22:00", "to": "06:00", "timezone": "customer.timezone", "during": "defer"}})
    await engine.put(engine.topics.policy_definitions, "policy", "night-drop", {
        "id": "night-drop", "appliesTo": {"triggerIds": ["promo-drop"]},
        "quietHours": {"from": "22:00", "to": "06:00", "timezone": zone, "during": "drop"}})
    customer = unique("c")
    await engine.kafka.send(engine.topics.rows, customer, {"table": "customers", "customerId": customer,
                                                            "attributes": {"timezone": zone}})
    await asyncio.sleep(1)
    await engine.put_definition(trigger("promo-defer", event_type, 50))
    await engine.put_definition(trigger("promo-drop", event_type, 50))
    await engine.send_event({"type": event_type, "customerId": customer, "id": unique("e")})

    pending = await engine.firings(1, lambda r: r["customerId"] == customer, topic=engine.topics.pending, settle=2)
    assert [p["status"] for p in pending] == ["scheduled"]
    assert pending[0]["triggerId"] == "promo-defer" and pending[0]["reason"].startswith("quiet_hours")
    local = now.astimezone(ZoneInfo(zone))
    end_day = local.date() + timedelta(days=1) if local.hour >= 22 else local.date()
    window_end = datetime.combine(end_day, datetime.min.time().replace(hour=6), tzinfo=ZoneInfo(zone))
    assert datetime.fromisoformat(pending[0]["dueAt"]) == window_end
    stopped = await suppressed(engine, 1, lambda r: r["customerId"] == customer)
    assert [(s["triggerId"], s["reason"]) for s in stopped] == [("promo-drop", "quiet_hours")]
    fired = await engine.firings(0, lambda r: r["customerId"] == customer, settle=1, timeout=5)
    assert fired == []
