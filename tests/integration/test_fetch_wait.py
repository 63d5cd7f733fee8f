"""TRIGGERS_FETCH_MAX_WAIT_MS is the wait the running consumer's fetch requests carry.

faust hard-codes 1.5 s; a broker that holds each fetch for the whole wait (the embedded
one does) would add up to that to every event's latency if the override silently stopped
applying (tests/adapters/test_framework_internals.py checks the names it relies on)."""

from __future__ import annotations

import statistics
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.integration.conftest import start_deployment

pytestmark = pytest.mark.integration


async def test_the_configured_fetch_wait_is_the_one_in_use_and_events_fire_promptly(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    deployment = await start_deployment(kafka_bootstrap, tmp_path, env={"TRIGGERS_FETCH_MAX_WAIT_MS": "37"})
    try:
        worker = deployment.workers[0]
        health = await worker.wait_for(lambda r: r["consumer"]["fetchMaxWaitMs"] is not None,
                                       timeout=30, what="a running fetcher")
        assert health["consumer"]["fetchMaxWaitMs"] == 37

        await deployment.put_definition({
            "id": "fetch-wait", "source": "streaming", "eventType": "ping",
            "action": {"type": "enroll_journey", "journeyId": "none"}})
        delays = []
        for n in range(5):
            sent = time.time()
            await deployment.send_event({"type": "ping", "customerId": f"fw-{n}"})
            [firing] = await deployment.firings(1, where=lambda r, n=n: r["customerId"] == f"fw-{n}", settle=0)
            fired = datetime.fromisoformat(firing["firedAt"].replace("Z", "+00:00")).timestamp()
            delays.append(fired - sent)
        # With faust's 1.5 s wait on a broker that holds fetches, every delay would be near 1.5 s.
        assert statistics.median(delays) < 0.75, delays
    finally:
        deployment.stop()
        await deployment.kafka.stop()
