"""A cron trigger on a real broker with two workers: each matching customer fires once per tick."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.conftest import start_deployment

pytestmark = pytest.mark.integration


async def test_every_minute_trigger_fires_once_for_each_matching_customer(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    deployment = await start_deployment(kafka_bootstrap, tmp_path, workers=2, partitions=4)
    try:
        gold = [f"gold-{n}" for n in range(12)]
        others = [f"silver-{n}" for n in range(8)]
        for customer in gold + others:
            tier = "gold" if customer in gold else "silver"
            await deployment.kafka.send(deployment.topics.rows, customer,
                                        {"customerId": customer, "attributes": {"tier": tier, "optIn": True}})
        await deployment.kafka.read(deployment.topics.schema, timeout=30,
                                    until=lambda rs: len({r.key for r in rs}) >= len(gold + others))
        # Both workers must have settled before the first tick, or a partition could move mid-scan.
        for worker in deployment.workers:
            await worker.wait_healthy()

        await deployment.put_definition({
            "id": "minutely-gold", "source": "scheduled", "eventType": "schedule.tick",
            "schedule": {"cron": "* * * * *", "timezone": "Europe/Berlin"},
            "filters": {"optIn": True}, "conditions": ["customer.tier == 'gold'"],
            "action": {"type": "enroll_journey", "journeyId": "gold-club"}})
        started = time.monotonic()
        firings = await deployment.firings(len(gold), lambda f: f["triggerId"] == "minutely-gold",
                                           settle=3.0, timeout=75)
        assert time.monotonic() - started < 70
        by_tick: dict[str, list[str]] = {}
        for firing in firings:
            by_tick.setdefault(firing["event"]["scheduledAt"], []).append(firing["customerId"])
        first = min(by_tick)
        assert first.endswith(":00+00:00")
        assert Counter(by_tick[first]) == Counter(gold)
        # The next minute's tick may have begun while we read: never a repeat, never a non-match.
        for customers in by_tick.values():
            assert len(customers) == len(set(customers)) and set(customers) <= set(gold)
        assert all(f["event"]["type"] == "schedule.tick" for f in firings)
        reports = [await w.health() for w in deployment.workers]
        assert all(r and r["counters"].get("firings", 0) > 0 for r in reports), "both workers ran the tick"
    finally:
        deployment.stop()
        await deployment.kafka.stop()
        await asyncio.sleep(0)
