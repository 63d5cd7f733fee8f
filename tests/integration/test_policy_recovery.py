"""Contact policies through a kill -9: the cap is never exceeded (a replayed firing does not
spend the allowance again, a lost count would let one more through) and a firing held by
quiet hours is neither lost nor delivered twice."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import start_deployment
from tests.integration.test_timer_recovery import counted, delivered, has_status
from tests.integration.test_timers import PARTITIONS, WEBHOOKS, spread, wait_split
from tests.support.receiver import Receiver

# Run by `make reliability` on a broker of their own (CI runs it after `make test`).
pytestmark = [pytest.mark.integration, pytest.mark.reliability]

CAP = 3
ROUNDS = 6  # events per customer: twice the cap


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def capped_trigger(trigger_id: str, event_type: str) -> dict[str, Any]:
    return {"id": trigger_id, "source": "streaming", "eventType": event_type, "priority": 50,
            "action": {"type": "update_attribute", "attributes": {"last_visit": "event.id"}}}


async def test_kill_9_mid_stream_does_not_let_the_cap_be_exceeded(kafka_bootstrap: str, tmp_path: Path) -> None:
    deployment = await start_deployment(kafka_bootstrap, tmp_path, workers=2, partitions=PARTITIONS)
    try:
        await wait_split(deployment)
        event_type = unique("visit")
        await deployment.put(deployment.topics.policy_definitions, "policy", "daily-cap", {
            "id": "daily-cap", "appliesTo": {"triggerIds": ["capped"]},
            "limits": [{"max": CAP, "window": {"days": 1}}]})
        await deployment.put_definition(capped_trigger("capped", event_type))
        customers = spread(unique("c"), 5)  # 20 customers, five in each partition
        victim = deployment.workers[1]
        for round_ in range(ROUNDS):
            if round_ == 2:  # mid-stream: two of the three allowed firings spent
                await asyncio.sleep(1)
                victim.kill()  # no commit, no flush: its partitions are read again by the survivor
            for customer in customers:
                await deployment.send_event({"type": event_type, "customerId": customer,
                                             "id": f"{customer}-{round_}"})
            await asyncio.sleep(0.3)

        firings = await deployment.firings(len(customers) * CAP, lambda r: r["customerId"] in customers,
                                           settle=5, timeout=120)
        distinct = {(f["customerId"], f["firingId"]) for f in firings}
        per_customer = Counter(customer for customer, _ in distinct)
        stopped = await deployment.firings(len(customers) * (ROUNDS - CAP), lambda r: r["customerId"] in customers,
                                           settle=2, timeout=60, topic=deployment.topics.suppressed)
        suppressed_events = {s["eventId"] for s in stopped}
        fired_events = {f["eventId"] for f in firings}
        over = {c: n for c, n in per_customer.items() if n > CAP}
        under = {c: per_customer.get(c, 0) for c in customers if per_customer.get(c, 0) < CAP}
        print(f"\ncap through kill -9: {len(customers)} customers x {ROUNDS} events, cap {CAP}: "
              f"{len(distinct)} distinct firings ({len(firings) - len(distinct)} repeated records), "
              f"over the cap {len(over)}, under it {len(under)}, suppressed {len(suppressed_events)}")
        assert over == {}, f"the cap was exceeded: {over}"
        assert under == {}, f"firings lost: {under}"
        # Each customer's first three events fired (in event order), the rest were suppressed.
        assert fired_events == {f"{c}-{n}" for c in customers for n in range(CAP)}
        assert suppressed_events == {f"{c}-{n}" for c in customers for n in range(CAP, ROUNDS)}
    finally:
        deployment.stop()
        await deployment.kafka.stop()


def quiet_until_next_minute(now: datetime) -> tuple[str, str, datetime]:
    """A UTC quiet-hours window holding now and ending at a minute boundary 30–90 s away."""
    end = (now + timedelta(seconds=90)).replace(second=0, microsecond=0)
    start = end - timedelta(hours=2)
    return start.strftime("%H:%M"), end.strftime("%H:%M"), end


async def test_kill_9_loses_no_firing_held_by_quiet_hours_and_delivers_none_twice(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    receiver = await Receiver().start()
    deployment = await start_deployment(kafka_bootstrap, tmp_path, workers=2, partitions=PARTITIONS, env=WEBHOOKS)
    try:
        await wait_split(deployment)
        start, end, window_end = quiet_until_next_minute(datetime.now(UTC))
        event_type = unique("promo")
        await deployment.put(deployment.topics.policy_definitions, "policy", "quiet", {
            "id": "quiet", "appliesTo": {"triggerIds": ["held"]},
            "quietHours": {"from": start, "to": end, "timezone": "UTC", "during": "defer"}})
        await deployment.put_definition({"id": "held", "source": "streaming", "eventType": event_type,
                                         "action": {"type": "webhook", "url": receiver.url("held")}})
        customers = spread(unique("c"), 4)  # 16 customers, four in each partition
        for customer in customers:
            await deployment.send_event({"type": event_type, "customerId": customer, "id": f"{customer}-e"})
        await has_status(deployment, [f"{c}-e" for c in customers], "scheduled")
        held = await deployment.firings(len(customers), lambda r: r["customerId"] in customers,
                                        topic=deployment.topics.pending, settle=1)
        assert {datetime.fromisoformat(p["dueAt"]) for p in held} == {window_end}
        assert datetime.now(UTC) < window_end, "too slow: quiet hours ended before the kill"
        assert receiver.delivered("held") == set()

        deployment.workers[1].kill()  # holding half the held firings, none due yet
        expected = {p["firingId"] for p in held}
        wait = (window_end - datetime.now(UTC)).total_seconds()
        await delivered(receiver, "held", expected, timeout=wait + 90)
        late = (datetime.now(UTC) - window_end).total_seconds()
        await asyncio.sleep(3)  # room for any repeat to show up
        lost, repeated, _ = counted(receiver, "held", expected, set())
        print(f"\nquiet hours through kill -9: {len(expected)} held, lost {lost}, repeated deliveries {repeated}, "
              f"all delivered {late:.1f} s after the window ended")
        assert (lost, repeated) == (0, 0)
        sent_at = [int({k.lower(): v for k, v in r.headers.items()}["webhook-timestamp"])
                   for r in receiver.to("held", 200)]
        assert min(sent_at) >= int(window_end.timestamp()), "delivered during quiet hours"
    finally:
        deployment.stop()
        await deployment.kafka.stop()
        await receiver.stop()
