"""Backpressure: a burst of firings to an endpoint that hangs waits in the deliveries table
(on disk, not in memory), is never dead-lettered while its schedule runs, and does not hold up
deliveries to other endpoints; a flood of poison is dead-lettered without stalling."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.integration.conftest import start_deployment
from tests.support.receiver import Receiver

pytestmark = pytest.mark.integration

BURST, SLOTS = 1500, 2
ENV = {"TRIGGERS_ALLOW_PRIVATE_URLS": "1", "TRIGGERS_WEBHOOK_PER_ENDPOINT_CONCURRENCY": str(SLOTS),
       "TRIGGERS_WEBHOOK_TIMEOUT_S": "5", "TRIGGERS_WEBHOOK_RETRY_SCHEDULE": "0,1h"}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_a_burst_to_a_hanging_endpoint_waits_in_the_table_and_is_never_dead_lettered(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    receiver = await Receiver().start()
    receiver.script("hangs", delay=20)
    deployment = await start_deployment(kafka_bootstrap, tmp_path, workers=1, partitions=4, env=ENV)
    worker = deployment.workers[0]
    try:
        await deployment.put_definition({"id": "to-hanging", "source": "streaming", "eventType": "burst",
                                         "action": {"type": "webhook", "url": receiver.url("hangs")}})
        await deployment.put_definition({"id": "to-healthy", "source": "streaming", "eventType": "ping",
                                         "action": {"type": "webhook", "url": receiver.url("healthy")}})
        assert worker.process is not None
        rss_before = rss_mb(worker.process.pid)
        running: list[int] = []
        for n in range(BURST):
            await deployment.send_event({"type": "burst", "customerId": f"c-{n % 200}", "id": f"b-{n}"})
            if n % 250 == 0:
                report = await worker.health()
                assert report is not None
                running.append(report["deliveries"]["inFlight"])
        for n in range(20):
            await deployment.send_event({"type": "ping", "customerId": f"c-{n}", "id": f"p-{n}"})

        await receiver.wait_for("healthy", 20, timeout=15)  # not behind the hanging endpoint
        report = await worker.wait_for(lambda r: r["deliveries"]["waiting"] + r["deliveries"]["inFlight"] >= BURST,
                                       timeout=60, what="holding the burst")
        letters = await deployment.kafka.read(deployment.topics.actions_deadletter, timeout=1.0)
        rss_after = rss_mb(worker.process.pid)
        print(f"\nbackpressure: burst {BURST}, running at most {max(running + [report['deliveries']['inFlight']])} "
              f"({SLOTS} slots), waiting {report['deliveries']['waiting']}, "
              f"dead letters {len(letters)}, RSS {rss_before:.0f} -> {rss_after:.0f} MB")
        # The endpoint takes at most its slots, however many deliveries wait for it.
        assert max(running + [report["deliveries"]["inFlight"]]) <= SLOTS
        assert letters == []
        assert report["counters"]["webhook.deferred"] >= BURST - SLOTS - 10
        assert rss_after - rss_before < 100  # bounded: the waiting deliveries are not in memory
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
