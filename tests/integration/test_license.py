"""The Enterprise-tier gate: outside `enterprise` a worker starts, evaluates nothing, and says why."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import start_deployment
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.integration


async def test_unlicensed_worker_evaluates_nothing_and_says_why(kafka_bootstrap: str, tmp_path: Path) -> None:
    deployment = await start_deployment(kafka_bootstrap, tmp_path, workers=0)
    worker = WorkerProcess(kafka_bootstrap, "unlicensed-" + deployment.topics.prefix.strip("."),
                           deployment.topics.prefix, tmp_path, "starter",
                           env={"TRIGGERS_LICENSE_TIER": "starter"}).start()
    deployment.workers.append(worker)
    try:
        report = await worker.wait_for(lambda r: r["status"] == "unlicensed", what="unlicensed")
        assert report["licenseTier"] == "starter" and "Enterprise-tier" in report["reason"]
        await deployment.put_definition({"id": "any-event", "source": "streaming", "eventType": "*",
                                         "action": {"type": "enroll_journey", "journeyId": "j"}})
        await deployment.send_event({"type": "purchase", "customerId": "c-1"})
        assert await deployment.firings(1, settle=0, timeout=5) == []
        assert "Enterprise-tier feature" in worker.log_path.read_text()
    finally:
        deployment.stop()
        await deployment.kafka.stop()
