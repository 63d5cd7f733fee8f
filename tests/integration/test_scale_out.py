"""Two workers in one consumer group: definitions reach both, every event fires exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.conftest import start_deployment

pytestmark = pytest.mark.integration

PARTITIONS = 4


async def test_two_workers_share_partitions_and_fire_each_event_once(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    deployment = await start_deployment(kafka_bootstrap, tmp_path, workers=2,
                                        partitions=PARTITIONS)
    try:
        first, second = deployment.workers
        # Wait for the group to settle: the partitions split between the two, none twice.
        for _ in range(240):
            reports = [await first.health(), await second.health()]
            owned = [set(r["assignedPartitions"]) for r in reports if r and r["status"] == "ok"]
            if len(owned) == 2 and all(owned) and owned[0].isdisjoint(owned[1]) \
                    and owned[0] | owned[1] == set(range(PARTITIONS)):
                break
            await asyncio.sleep(0.5)
        else:
            pytest.fail(f"partitions never split between the workers: {reports}\n"
                        f"{first.log_tail()}\n{second.log_tail()}")

        await deployment.put_definition({
            "id": "every-order", "source": "streaming", "eventType": "order",
            "conditions": ["event.amount > 10"],
            "action": {"type": "enroll_journey", "journeyId": "after-order"}})
        customers = [f"cust-{n}" for n in range(40)]
        events = 200
        for n in range(events):
            await deployment.send_event({"type": "order", "customerId": customers[n % 40],
                                         "id": f"order-{n}", "amount": 11 + n})
        await deployment.send_event({"type": "order", "customerId": "cust-0", "amount": 1})

        firings = await deployment.firings(events, settle=3.0, timeout=60)
        per_event = Counter(f["eventId"] for f in firings)
        assert len(per_event) == events, "some events never fired"
        assert max(per_event.values()) == 1, f"fired twice: {per_event.most_common(3)}"
        assert len({f["firingId"] for f in firings}) == events

        # Both workers applied the definition and fired for their own customers.
        reports = [await first.health(), await second.health()]
        assert all(r and r["definitions"] == 1 for r in reports)
        assert all(r and r["counters"].get("firings", 0) > 0 for r in reports), reports
        assert sum(r["counters"]["firings"] for r in reports if r) == events
    finally:
        deployment.stop()
        await deployment.kafka.stop()
