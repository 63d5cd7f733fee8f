"""Crash recovery: kill -9 one of two workers mid-stream, restart it, and count what happened."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import pytest

from app.kafka.partitioner import partition_for
from tests.integration.conftest import start_deployment
from tests.support.kafka import Record
from tests.support.receiver import Receiver

# Run by `make reliability` on a broker of their own (CI runs it after `make test`).
pytestmark = [pytest.mark.integration, pytest.mark.reliability]

EVENTS, CUSTOMERS, RATE = 3000, 100, 250  # events/s: the stream lasts about 12 s
ENV = {"TRIGGERS_ALLOW_PRIVATE_URLS": "1", "TRIGGERS_WEBHOOK_RETRY_SCHEDULE": "0,0.05s,0.2s,0.5s,0.5s",
       "TRIGGERS_WEBHOOK_TIMEOUT_S": "2"}


async def test_kill_9_mid_stream_loses_nothing_and_repeats_little(kafka_bootstrap: str, tmp_path: Path) -> None:
    receiver = await Receiver().start()
    deployment = await start_deployment(kafka_bootstrap, tmp_path, workers=2, partitions=4, env=ENV)
    try:
        await deployment.put_definition({"id": "every-order", "source": "streaming", "eventType": "order",
                                         "action": {"type": "webhook", "url": receiver.url("orders")}})
        await deployment.put_definition({"id": "first-order", "source": "streaming", "eventType": "order",
                                         "cooldownMinutes": 600, "priority": 90,
                                         "action": {"type": "enroll_journey", "journeyId": "welcome"}})
        victim = deployment.workers[1]
        for n in range(EVENTS):
            await deployment.send_event({"type": "order", "customerId": f"c-{n % CUSTOMERS}", "id": f"o-{n}"})
            if n == EVENTS // 3:
                assert victim.process is not None
                os.killpg(victim.process.pid, signal.SIGKILL)  # no goodbye: no commit, no flush
                victim.process.wait()
            if n == EVENTS // 2:
                victim.start()  # same data directory
            await asyncio.sleep(1 / RATE)

        def all_fired(records: list[Record]) -> bool:
            return len({r.value["eventId"] for r in records if r.value["triggerId"] == "every-order"}) >= EVENTS

        firings = [r.value for r in await deployment.kafka.read(deployment.topics.firings, until=all_fired,
                                                                settle=3.0, timeout=180)]
        every = [f for f in firings if f["triggerId"] == "every-order"]
        first = [f for f in firings if f["triggerId"] == "first-order"]
        fired_events = {f["eventId"] for f in every}
        lost = EVENTS - len(fired_events)
        # Distinct firings: repeats must not make the count look complete while some are in flight.
        await receiver.wait_for_deliveries("orders", len({f["firingId"] for f in every}), timeout=120)
        deliveries = Counter(r.headers["Idempotency-Key"] for r in receiver.to("orders", 200))
        undelivered = {f["firingId"] for f in every} - set(deliveries)
        repeated = sum(count - 1 for count in deliveries.values())
        cooled = Counter(f["customerId"] for f in {f["firingId"]: f for f in first}.values())
        print(f"\ncrash test: events sent {EVENTS}, firings seen {len(every)} "
              f"(replayed records {len(every) - len(fired_events)}), lost {lost}, "
              f"undelivered {len(undelivered)}, repeated deliveries {repeated} "
              f"({repeated / EVENTS:.2%}), cooldown firings per customer max {max(cooled.values())}")
        missing = sorted({f"o-{n}" for n in range(EVENTS)} - fired_events, key=lambda e: int(e[2:]))
        partitions = [partition_for(f"c-{int(e[2:]) % CUSTOMERS}", 4) for e in missing]
        assert lost == 0, f"never fired: {missing} (partitions {partitions})"
        assert not undelivered
        assert repeated < EVENTS * 0.01
        # The 600-minute cooldown held across the crash, wherever each customer's partition went.
        assert len(cooled) == CUSTOMERS and max(cooled.values()) == 1
    finally:
        deployment.stop()
        await deployment.kafka.stop()
        await receiver.stop()


async def test_rolling_restart_of_both_workers_repeats_nothing(kafka_bootstrap: str, tmp_path: Path) -> None:
    receiver = await Receiver().start()
    deployment = await start_deployment(kafka_bootstrap, tmp_path, workers=2, partitions=4, env=ENV)
    total = 1500
    try:
        await deployment.put_definition({"id": "every-order", "source": "streaming", "eventType": "order",
                                         "action": {"type": "webhook", "url": receiver.url("rolling")}})
        restarts = {total // 4: deployment.workers[0], total // 2: deployment.workers[1]}
        for n in range(total):
            await deployment.send_event({"type": "order", "customerId": f"c-{n % CUSTOMERS}", "id": f"r-{n}"})
            if n in restarts:
                worker = restarts[n]
                # SIGTERM: commit, leave the group. In a thread: this loop also serves the receiver.
                await asyncio.to_thread(worker.stop)
                worker.start()
                await worker.wait_healthy()
            await asyncio.sleep(1 / RATE)

        await receiver.wait_for_deliveries("rolling", total, timeout=120)
        await asyncio.sleep(3)  # room for any repeat to show up
        deliveries = Counter(r.headers["Idempotency-Key"] for r in receiver.to("rolling", 200))
        repeated = sum(count - 1 for count in deliveries.values())
        print(f"\nrolling restart: events {total}, delivered {len(deliveries)}, repeated {repeated}")
        assert len(deliveries) == total and repeated == 0
    finally:
        deployment.stop()
        await deployment.kafka.stop()
        await receiver.stop()


async def test_cooldown_enrollment_and_customer_row_survive_a_restart_with_an_empty_data_directory(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    deployment = await start_deployment(kafka_bootstrap, tmp_path, workers=1, partitions=4)
    try:
        await deployment.put(deployment.topics.journey_definitions, "journey", "daily", {"id": "daily"})
        await deployment.put_definition({"id": "once-a-day", "source": "streaming", "eventType": "visit",
                                         "cooldownMinutes": 1440,
                                         "action": {"type": "enroll_journey", "journeyId": "daily"}})
        await deployment.put_definition({"id": "gold-visit", "source": "streaming", "eventType": "visit",
                                         "conditions": ["customer.tier == 'gold'"],
                                         "action": {"type": "enroll_journey", "journeyId": "daily"}})
        await deployment.kafka.send(deployment.topics.rows, "c-before",
                                    {"customerId": "c-before", "attributes": {"tier": "silver"}})
        await deployment.kafka.send(deployment.topics.rows, "c-before",
                                    {"customerId": "c-before", "attributes": {"tier": "gold"}})
        await deployment.kafka.read(deployment.topics.schema, timeout=30, until=lambda rs: any(
            (r.value.get("after") or {}).get("tier") == "gold" for r in rs))  # the row is in
        await deployment.send_event({"type": "visit", "customerId": "c-before", "id": "v-1"})
        before = await deployment.firings(2, settle=2.0)
        assert sorted(f["triggerId"] for f in before) == ["gold-visit", "once-a-day"]

        worker = deployment.workers[0]
        await asyncio.to_thread(worker.stop)
        for path in sorted(worker.data_dir.rglob("*"), reverse=True):  # rm -r, children first
            path.rmdir() if path.is_dir() else path.unlink()
        worker.start()
        await worker.wait_healthy()  # state rebuilt from the changelog topics

        await deployment.send_event({"type": "visit", "customerId": "c-before", "id": "v-2"})
        await deployment.send_event({"type": "visit", "customerId": "c-new", "id": "v-3"})
        firings = await deployment.firings(4, settle=2.0)
        fired = sorted((f["eventId"], f["triggerId"]) for f in firings)
        # The cooldown still blocks c-before; the row still says gold; c-new is new.
        assert fired == [("v-1", "gold-visit"), ("v-1", "once-a-day"), ("v-2", "gold-visit"), ("v-3", "once-a-day")]
        enrollments = await deployment.kafka.read(deployment.topics.enrollments, settle=2.0,
                                                  until=lambda rs: len(rs) >= 4)
        statuses = [(r.value["customerId"], r.value["status"]) for r in enrollments]
        # c-before's enrollment from before the restart is still active: the second is skipped.
        assert statuses.count(("c-before", "enrolled")) == 1
        assert ("c-before", "skipped") in statuses
    finally:
        deployment.stop()
        await deployment.kafka.stop()
