"""Backpressure: a burst of firings to an endpoint that hangs stays bounded in memory, overflows
to the dead-letter topic with a reason, and does not hold up deliveries to other endpoints."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.integration.conftest import start_deployment
from tests.support.receiver import Receiver

pytestmark = pytest.mark.integration

BURST, BACKLOG = 1500, 50
ENV = {"TRIGGERS_ALLOW_PRIVATE_URLS": "1", "TRIGGERS_WEBHOOK_PER_ENDPOINT_BACKLOG": str(BACKLOG),
       "TRIGGERS_WEBHOOK_PER_ENDPOINT_CONCURRENCY": "2", "TRIGGERS_WEBHOOK_TIMEOUT_S": "5",
       "TRIGGERS_WEBHOOK_MAX_ATTEMPTS": "2"}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_a_burst_to_a_hanging_endpoint_is_bounded_and_overflows_to_dead_letters(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    receiver = await Receiver().start()
    receiver.script("hangs", delay=60)
    deployment = await start_deployment(kafka_bootstrap, tmp_path, workers=1, partitions=4, env=ENV)
    worker = deployment.workers[0]
    try:
        await deployment.put_definition({"id": "to-hanging", "source": "streaming", "eventType": "burst",
                                         "action": {"type": "webhook", "url": receiver.url("hangs")}})
        await deployment.put_definition({"id": "to-healthy", "source": "streaming", "eventType": "ping",
                                         "action": {"type": "webhook", "url": receiver.url("healthy")}})
        assert worker.process is not None
        rss_before = rss_mb(worker.process.pid)
        held: list[int] = []
        for n in range(BURST):
            await deployment.send_event({"type": "burst", "customerId": f"c-{n % 200}", "id": f"b-{n}"})
            if n % 250 == 0:
                report = await worker.health()
                assert report is not None
                held.append(report["deliveries"]["inFlight"])
        for n in range(20):
            await deployment.send_event({"type": "ping", "customerId": f"c-{n}", "id": f"p-{n}"})

        await receiver.wait_for("healthy", 20, timeout=15)  # not behind the hanging endpoint
        overflow = await deployment.kafka.read(
            deployment.topics.actions_deadletter,
            until=lambda rs: sum("backlog" in r.value["reason"] for r in rs) >= BURST - BACKLOG - 10,
            settle=1.0, timeout=60)
        report = await worker.health()
        assert report is not None
        rss_after = rss_mb(worker.process.pid)
        full = [r.value for r in overflow if "backlog" in r.value["reason"]]
        print(f"\nbackpressure: burst {BURST}, held at most {max(held + [report['deliveries']['inFlight']])} "
              f"(backlog {BACKLOG}), overflowed {len(full)}, RSS {rss_before:.0f} -> {rss_after:.0f} MB")
        assert max(held + [report["deliveries"]["inFlight"]]) <= BACKLOG
        assert BURST - BACKLOG - 10 <= len(full) <= BURST - BACKLOG
        assert all(f["command"]["triggerId"] == "to-hanging" and "is full" in f["reason"] for f in full)
        assert rss_after - rss_before < 100  # bounded: the overflow is not queued in memory
    finally:
        worker.kill()  # a graceful stop would wait for the hanging requests
        await deployment.kafka.stop()
        await receiver.stop()


POISON = [
    lambda rng: rng.randbytes(rng.randint(1, 2000)),                        # not JSON at all
    lambda rng: b"[" * 5000 + b"]" * 5000,                                  # nested too deep
    lambda rng: b'{"type": "order", "customerId": "c-1", "note": "' + b"x" * 200_000,  # cut off
    lambda rng: b'{"customerId": "c-1", "blob": "' + b"y" * 200_000 + b'"}',  # huge, no type
    lambda rng: b'{"type": 7, "customerId": ["c-1"]}',                      # wrong types
    lambda rng: b'{"type": "order", "customerId": "c-1", "amount": NaN}',   # not strict JSON
]


async def test_a_flood_of_poison_is_dead_lettered_without_stalling_or_growing_memory(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    deployment = await start_deployment(kafka_bootstrap, tmp_path, workers=1, partitions=4)
    worker = deployment.workers[0]
    try:
        await deployment.put_definition({"id": "after-poison", "source": "streaming", "eventType": "order",
                                         "action": {"type": "enroll_journey", "journeyId": "j"}})
        assert worker.process is not None
        rng = random.Random(5)
        flood, rss = 1200, [rss_mb(worker.process.pid)]
        for round_ in (1, 2):  # the second round must reuse what the first one took
            for n in range(flood):  # all keyed to one customer: one partition takes all of it
                await deployment.send_event(POISON[n % len(POISON)](rng), key="c-1")
            await deployment.send_event({"type": "order", "customerId": "c-1", "id": f"after-flood-{round_}"})
            await deployment.firings(1, where=lambda f, r=round_: f["eventId"] == f"after-flood-{r}", timeout=90)
            rss.append(rss_mb(worker.process.pid))

        dead = await deployment.kafka.read(deployment.topics.deadletter, until=lambda rs: len(rs) >= 2 * flood,
                                           settle=1.0, timeout=60)
        print(f"\npoison: 2 x {flood} messages, dead-lettered {len(dead)}, the event after each flood fired, "
              f"RSS {rss[0]:.0f} -> {rss[1]:.0f} -> {rss[2]:.0f} MB")
        assert len(dead) == 2 * flood and all(r.value["reason"] for r in dead)
        assert rss[2] - rss[1] < 30  # bounded: a second flood does not add what the first did
    finally:
        worker.kill()
        await deployment.kafka.stop()
