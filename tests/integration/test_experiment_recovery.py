"""Conversion windows through a kill -9: the worker holding customers' open windows dies
before their conversions arrive; the survivor restores the windows from the changelog and
attributes each firing's conversion once inside its window, and none outside it."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.integration.conftest import start_deployment
from tests.integration.test_timers import PARTITIONS, spread, wait_split

# Run by `make reliability` on a broker of their own (CI runs it after `make test`).
pytestmark = [pytest.mark.integration, pytest.mark.reliability]


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def test_kill_9_of_the_worker_holding_open_windows_loses_no_conversion_and_repeats_none(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    deployment = await start_deployment(kafka_bootstrap, tmp_path, workers=2, partitions=PARTITIONS)
    topics = deployment.topics
    try:
        await wait_split(deployment)
        visit, purchase = unique("visit"), unique("purchase")
        await deployment.put_definition({
            "id": "exp-crash", "source": "streaming", "eventType": visit,
            "action": {"type": "update_attribute", "attributes": {"seen_crash_offer": "1"}},
            "experiment": {"holdoutPercent": 30,
                           "conversion": {"source": "outcome", "eventType": purchase, "within": {"hours": 1}}}})
        customers = spread(unique("c"), 6)  # 24 customers, six in each partition: both workers hold some
        inside, outside = customers[::2], customers[1::2]
        start = datetime.now(UTC) - timedelta(hours=3)
        for customer in customers:
            await deployment.send_event({"type": visit, "customerId": customer, "id": f"visit-{customer}",
                                         "timestamp": start.isoformat()})
        for _ in range(60):
            live = await deployment.firings(0, lambda r: r["triggerId"] == "exp-crash", settle=0.1)
            held = await deployment.firings(0, lambda r: r["triggerId"] == "exp-crash", settle=0.1,
                                            topic=topics.holdout)
            if len({f["customerId"] for f in live + held}) == len(customers):
                break
            await asyncio.sleep(1)
        await asyncio.sleep(5)  # past a commit: the visits are not read again, the windows must come back
        survivor = await deployment.workers[0].health()
        assert survivor is not None
        opened_before = survivor["counters"].get("conversion_windows_opened", 0)
        deployment.workers[1].kill()

        for customer in inside:
            await deployment.send_event({"type": purchase, "customerId": customer, "id": f"buy-{customer}",
                                         "timestamp": (start + timedelta(minutes=30)).isoformat()},
                                        topic=topics.outcomes)
        for customer in outside:
            await deployment.send_event({"type": purchase, "customerId": customer, "id": f"late-{customer}",
                                         "timestamp": (start + timedelta(minutes=90)).isoformat()},
                                        topic=topics.outcomes)
        conversions = await deployment.firings(len(inside), lambda r: r["triggerId"] == "exp-crash", settle=5,
                                               timeout=120, topic=topics.conversions)
        per_customer = Counter(c["customerId"] for c in conversions)
        lost = sorted(set(inside) - set(per_customer))
        repeated = sorted(c for c, n in per_customer.items() if n > 1)
        print(f"\nexperiment windows across kill -9: {len(inside)} expected conversions, "
              f"lost {len(lost)}, repeated {len(repeated)}, outside the window {len(set(per_customer) & set(outside))}")
        assert not lost and not repeated, (lost, repeated)
        after = await deployment.workers[0].health()
        assert after is not None
        # The survivor opened no window again: the victim's came back from the changelog.
        assert after["counters"].get("conversion_windows_opened", 0) == opened_before
        assert set(per_customer) == set(inside)
    finally:
        deployment.stop()
        await deployment.kafka.stop()
