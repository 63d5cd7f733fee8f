"""Delayed firings and cancel events on a real broker."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.integration.conftest import Deployment


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def delayed(trigger_id: str, seconds: int = 3, **extra: Any) -> dict[str, Any]:
    return {"id": trigger_id, "source": "streaming", "eventType": "cart_add", "delay": {"seconds": seconds},
            "cancelOn": [{"source": "streaming", "eventType": "purchase", "sameFields": ["cartId"]}],
            "action": {"type": "update_attribute", "attributes": {"reminded": "event.cartId"}}, **extra}


def iso(moment: datetime) -> str:
    return moment.isoformat()


async def test_a_delayed_firing_fires_once_at_its_due_time(engine: Deployment) -> None:
    trigger_id, customer = unique("abandoned"), unique("c")
    await engine.put_definition(delayed(trigger_id))
    now = datetime.now(UTC)
    await engine.send_event({"type": "cart_add", "customerId": customer, "cartId": "k1", "id": unique("e"),
                             "timestamp": iso(now)})
    firings = await engine.firings(1, lambda r: r["triggerId"] == trigger_id, timeout=20, settle=2)
    fired_at = time.time()
    assert len(firings) == 1
    due = now + timedelta(seconds=3)
    assert fired_at - due.timestamp() < 2.5  # read back within the test's polling; the pass is 0.1 s
    pending = await engine.kafka.read(engine.topics.pending, until=lambda rs: sum(
        1 for r in rs if r.value["triggerId"] == trigger_id) >= 2, timeout=10)
    statuses = [r.value["status"] for r in pending if r.value["triggerId"] == trigger_id]
    assert statuses == ["scheduled", "fired"]


async def test_a_cancel_event_before_the_due_time_stops_the_firing(engine: Deployment) -> None:
    trigger_id, customer = unique("abandoned"), unique("c")
    await engine.put_definition(delayed(trigger_id))
    now = datetime.now(UTC)
    await engine.send_event({"type": "cart_add", "customerId": customer, "cartId": "k1", "id": unique("e"),
                             "timestamp": iso(now)})
    await engine.send_event({"type": "cart_add", "customerId": customer, "cartId": "k2", "id": unique("e"),
                             "timestamp": iso(now)})
    await engine.send_event({"type": "purchase", "customerId": customer, "cartId": "k1", "id": unique("e"),
                             "timestamp": iso(now + timedelta(seconds=1))})
    firings = await engine.firings(1, lambda r: r["triggerId"] == trigger_id, timeout=20, settle=4)
    assert [f["event"]["cartId"] for f in firings] == ["k2"]
