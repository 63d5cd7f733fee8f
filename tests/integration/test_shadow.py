"""Shadow mode on a real broker with two workers: a shadow trigger is evaluated like a live one
(cooldown, policies, delays) in state of its own, its firings go to `triggers.shadow` only,
live triggers never see its state, and switching it to live starts live state fresh."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.domain.models import ACTION_TYPES
from app.kafka.partitioner import partition_for
from tests.integration.conftest import Deployment, start_deployment

pytestmark = pytest.mark.integration

PARTITIONS = 4


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def trigger(trigger_id: str, event_type: str, priority: int, **extra: Any) -> dict[str, Any]:
    return {"id": trigger_id, "source": "streaming", "eventType": event_type, "priority": priority,
            "action": {"type": "update_attribute", "attributes": {f"seen_{trigger_id.replace('-', '_')}": "1"}},
            **extra}


def one_per_partition(prefix: str) -> list[str]:
    chosen: dict[int, str] = {}
    n = 0
    while len(chosen) < PARTITIONS:
        customer = f"{prefix}-{n}"
        chosen.setdefault(partition_for(customer, PARTITIONS), customer)
        n += 1
    return [chosen[p] for p in range(PARTITIONS)]


async def split_between_two(deployment: Deployment) -> None:
    first, second = deployment.workers
    for _ in range(240):
        reports = [await first.health(), await second.health()]
        owned = [set(r["assignedPartitions"]) for r in reports if r and r["status"] == "ok"]
        if len(owned) == 2 and all(owned) and owned[0] | owned[1] == set(range(PARTITIONS)):
            return
        await asyncio.sleep(0.5)
    pytest.fail(f"partitions never split between the workers: {reports}")


async def read(deployment: Deployment, topic: str, count: int, where: Any, settle: float = 2.0
               ) -> list[dict[str, Any]]:
    return await deployment.firings(count, where, settle=settle, timeout=40, topic=topic)


async def shadow_counter(deployment: Deployment) -> int:
    total = 0
    for worker in deployment.workers:
        report = await worker.health()
        assert report is not None
        total += report["counters"].get("shadow_firings", 0)
    return total


async def test_shadow_firings_keep_their_own_state_perform_nothing_and_going_live_starts_fresh(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    deployment = await start_deployment(kafka_bootstrap, tmp_path, workers=2, partitions=PARTITIONS)
    topics = deployment.topics
    try:
        await split_between_two(deployment)
        event_type, later_type = unique("visit"), unique("cart_add")
        await deployment.put(topics.policy_definitions, "policy", "weekly-cap", {
            "id": "weekly-cap", "limits": [{"max": 1, "window": {"days": 7}}]})
        # The shadow trigger ranks first: had it used the cap, the live one would be suppressed.
        shadow = trigger("shadow-offer", event_type, 80, cooldownMinutes=60, mode="shadow")
        await deployment.put_definition(shadow)
        await deployment.put_definition(trigger("live-offer", event_type, 50, filters={"channel": "web"}))
        await deployment.put_definition(trigger("shadow-later", later_type, 50, delay={"seconds": 2},
                                                mode="shadow"))

        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.post(f"{deployment.workers[0].url}/triggers/shadow-offer/test",
                                         json={"event": {"type": event_type, "customerId": "c-dry"}})
        assert response.status_code == 200, response.text
        assert (response.json()["mode"], response.json()["performs"]) == (
            "shadow", "nothing: firings go to triggers.shadow")

        customers = one_per_partition(unique("c"))
        app_only = unique("app-user")  # the live trigger's filter keeps it out: no live contact
        sent: list[str] = []
        for customer in customers:
            for n in range(3):  # within the shadow trigger's 60-minute cooldown
                sent.append(event_id := unique(f"e{n}"))
                await deployment.send_event({"type": event_type, "customerId": customer, "id": event_id,
                                             "channel": "web"})
        await deployment.send_event({"type": event_type, "customerId": app_only, "id": unique("app"),
                                     "channel": "app"})
        await deployment.send_event({"type": later_type, "customerId": app_only, "id": unique("cart")})

        shadowed = await read(deployment, topics.shadow, len(customers) + 2, lambda r: True)
        by_trigger = Counter(r["triggerId"] for r in shadowed)
        assert by_trigger == {"shadow-offer": len(customers) + 1, "shadow-later": 1}, shadowed
        assert all(r["shadow"] is True for r in shadowed)
        assert Counter(r["customerId"] for r in shadowed if r["triggerId"] == "shadow-offer") == {
            **dict.fromkeys(customers, 1), app_only: 1}  # the cooldown held the 2nd and 3rd events

        # The live trigger was not capped by the shadow firings: its first event per customer fired.
        live = await read(deployment, topics.firings, len(customers), lambda r: True)
        assert sorted(r["customerId"] for r in live) == sorted(customers)
        assert {r["triggerId"] for r in live} == {"live-offer"} and all("shadow" not in r for r in live)
        stopped = await read(deployment, topics.suppressed, 2 * len(customers), lambda r: True)
        assert Counter((s["triggerId"], s["reason"], s.get("shadow")) for s in stopped) == {
            ("live-offer", "frequency_cap", None): 2 * len(customers)}

        # Nothing of a shadow trigger on any action topic.
        for action_type in ACTION_TYPES:
            commands = await read(deployment, topics.action(action_type), 0, lambda r: True, settle=1.0)
            assert all(c["triggerId"] == "live-offer" for c in commands), (action_type, commands)

        # The delayed shadow firing: pending records say shadow, then triggers.shadow at its due time.
        pending = await read(deployment, topics.pending, 2, lambda r: r["triggerId"] == "shadow-later")
        assert [(p["status"], p["shadow"]) for p in pending] == [("scheduled", True), ("fired", True)]
        assert await shadow_counter(deployment) == len(customers) + 2

        # Live from now on: its next event fires live although the shadow cooldown (60 min) still
        # runs and a shadow firing was counted under the cap — live state starts fresh.
        await deployment.put_definition({**shadow, "mode": "live"})
        went_live = unique("live")
        await deployment.send_event({"type": event_type, "customerId": app_only, "id": went_live,
                                     "channel": "app"})
        fired = await read(deployment, topics.firings, 1, lambda r: r["eventId"] == went_live)
        assert [(f["triggerId"], f["customerId"]) for f in fired] == [("shadow-offer", app_only)]
        performed = await read(deployment, topics.action("update_attribute"), 1,
                               lambda r: r["eventId"] == went_live)
        assert [c["triggerId"] for c in performed] == ["shadow-offer"]
        shadowed = await read(deployment, topics.shadow, len(customers) + 2, lambda r: True, settle=1.0)
        assert len(shadowed) == len(customers) + 2, "a live trigger wrote to triggers.shadow"
    finally:
        deployment.stop()
        await deployment.kafka.stop()
