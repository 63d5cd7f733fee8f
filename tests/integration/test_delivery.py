"""Durable webhook delivery against real worker processes, a real broker and real HTTP receivers:
retries in the deliveries table survive kill -9, 410 ends the schedule, a hung endpoint does not
hold a healthy one back, a slow endpoint gets back-pressure (never a dead letter), waiting
deliveries cost no memory, and maxPerSecond holds across two workers."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from app.cli.devbroker import free_port
from app.kafka.partitioner import partition_for
from tests.integration.conftest import Deployment, start_deployment
from tests.support.receiver import Receiver

pytestmark = pytest.mark.integration

PARTITIONS = 4
BASE_ENV = {"TRIGGERS_ALLOW_PRIVATE_URLS": "1", "TRIGGERS_WEBHOOK_TIMEOUT_S": "2"}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def webhook(trigger_id: str, event_type: str, url: str, **action: Any) -> dict[str, Any]:
    return {"id": trigger_id, "source": "streaming", "eventType": event_type,
            "action": {"type": "webhook", "url": url, **action}}


async def send_many(deployment: Deployment, events: list[dict[str, Any]], at_once: int = 200) -> None:
    for start in range(0, len(events), at_once):
        await asyncio.gather(*(deployment.send_event(e) for e in events[start:start + at_once]))


async def dead_letters(deployment: Deployment, trigger_id: str, settle: float = 0.0,
                       count: int = 1, timeout: float = 30.0) -> list[dict[str, Any]]:
    records = await deployment.kafka.read(
        deployment.topics.actions_deadletter, settle=settle, timeout=timeout,
        until=lambda rs: sum(r.value.get("triggerId") == trigger_id for r in rs) >= count)
    return [r.value for r in records if r.value.get("triggerId") == trigger_id]


async def test_a_failing_endpoint_is_delivered_exactly_once_through_a_kill_9(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    receiver = await Receiver().start()
    receiver.script("flaky", 503, 503, 503, 503)  # the fifth attempt succeeds
    env = {**BASE_ENV, "TRIGGERS_WEBHOOK_RETRY_SCHEDULE": "0,1s,1s,1s,1s,1s"}
    deployment = await start_deployment(kafka_bootstrap, tmp_path, workers=2, partitions=PARTITIONS, env=env)
    try:
        await deployment.put_definition(webhook("flaky", "signup", receiver.url("flaky")))
        customer = "c-flaky"
        await deployment.send_event({"type": "signup", "customerId": customer, "id": "e-1"})
        await receiver.wait_for("flaky", 2, timeout=30)  # two attempts failed, the rest are in the table

        partition = partition_for(customer, PARTITIONS)
        reports = [await w.health() or {} for w in deployment.workers]
        [owner] = [w for w, r in zip(deployment.workers, reports, strict=True)
                   if partition in r.get("assignedPartitions", [])]
        owner.kill()
        await asyncio.sleep(1.0)
        owner.start()  # same data directory; meanwhile the partition may have moved

        await receiver.wait_for("flaky", 1, status=200, timeout=90)
        await asyncio.sleep(3.0)  # time for any second delivery to show
        answered = [r.answered for r in receiver.to("flaky")]
        per_firing = Counter(r.headers["Idempotency-Key"] for r in receiver.to("flaky", 200))
        print(f"\nkill -9 between attempts: answers {answered}, deliveries per firing {dict(per_firing)}")
        assert answered[:4] == [503, 503, 503, 503] and answered.count(200) == 1
        assert list(per_firing.values()) == [1]
        assert not await deployment.kafka.read(deployment.topics.actions_deadletter, timeout=1.0)
    finally:
        deployment.stop()
        await deployment.kafka.stop()
        await receiver.stop()


async def test_410_gone_ends_the_schedule_after_one_request(kafka_bootstrap: str, tmp_path: Path) -> None:
    receiver = await Receiver().start()
    receiver.script("gone", 410, 410, 410)
    env = {**BASE_ENV, "TRIGGERS_WEBHOOK_RETRY_SCHEDULE": "0,0.2s,0.2s,0.2s"}
    deployment = await start_deployment(kafka_bootstrap, tmp_path, workers=1, partitions=PARTITIONS, env=env)
    try:
        await deployment.put_definition(webhook("to-gone", "signup", receiver.url("gone")))
        await deployment.send_event({"type": "signup", "customerId": "c-1", "id": "e-1"})

        [letter] = await dead_letters(deployment, "to-gone", settle=1.5)
        assert "410" in letter["reason"]
        assert [a["status"] for a in letter["attempts"]] == [410]
        assert len(receiver.to("gone")) == 1
    finally:
        deployment.stop()
        await deployment.kafka.stop()
        await receiver.stop()


async def test_a_hung_endpoint_does_not_delay_a_healthy_one_on_the_same_partition(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    receiver = await Receiver().start()
    receiver.script("hung", delay=20)  # longer than the 5 s timeout
    env = {**BASE_ENV, "TRIGGERS_WEBHOOK_TIMEOUT_S": "5", "TRIGGERS_WEBHOOK_RETRY_SCHEDULE": "0,0.5s,1s,1s"}
    deployment = await start_deployment(kafka_bootstrap, tmp_path, workers=1, partitions=PARTITIONS, env=env)
    worker = deployment.workers[0]
    try:
        await deployment.put_definition(webhook("to-hung", "burst", receiver.url("hung")))
        await deployment.put_definition(webhook("to-healthy", "ping", receiver.url("healthy")))
        # Four customers of one partition: the healthy endpoint's deliveries share it with the hung one's.
        customers = [c for c in (f"c-{n}" for n in range(200)) if partition_for(c, PARTITIONS) == 0][:4]

        async def latencies(round_: str) -> list[float]:
            sent: dict[str, float] = {}
            for customer in customers:
                sent[f"{round_}-{customer}"] = time.monotonic()
                await deployment.send_event({"type": "ping", "customerId": customer, "id": f"{round_}-{customer}"})
                await asyncio.sleep(0.2)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                arrived = {r.body.decode(): r.arrived for r in receiver.to("healthy")}
                found = {event_id: at for event_id in sent for body, at in arrived.items()
                         if f'"eventId":"{event_id}"' in body}
                if len(found) == len(sent):
                    return [found[event_id] - sent[event_id] for event_id in sent]
                await asyncio.sleep(0.05)
            raise AssertionError(f"{round_}: healthy deliveries missing")

        baseline = await latencies("before")
        for n in range(40):  # more than the hung endpoint's slots: the rest are parked
            await deployment.send_event({"type": "burst", "customerId": customers[n % 4], "id": f"b-{n}"})
        await worker.wait_for(lambda r: r["deliveries"]["inFlight"] >= 8 and r["deliveries"]["parked"] > 0,
                              timeout=30, what="holding the hung endpoint's slots")
        during = await latencies("during")
        report = await worker.health()
        assert report is not None
        print(f"\nhung endpoint: healthy latency before {max(baseline):.3f} s, during {max(during):.3f} s; "
              f"deliveries {report['deliveries']}")
        assert max(during) <= max(baseline) + 1.0
        assert report["deliveries"]["parked"] + report["deliveries"]["inFlight"] > 0
        letters = await deployment.kafka.read(deployment.topics.actions_deadletter, timeout=0.5)
        assert letters == []  # the hung endpoint's schedule is still running
    finally:
        worker.kill()  # a graceful stop would wait for the hanging requests
        await deployment.kafka.stop()
        await receiver.stop()


async def test_max_per_second_holds_across_two_workers(kafka_bootstrap: str, tmp_path: Path) -> None:
    receiver = await Receiver().start()
    rate, firings = 20, 700  # 35 s at the limit
    deployment = await start_deployment(kafka_bootstrap, tmp_path, workers=2, partitions=PARTITIONS,
                                        env={**BASE_ENV, "TRIGGERS_WEBHOOK_RETRY_SCHEDULE": "0,1s,5s"})
    try:
        await deployment.put_definition(webhook("limited", "order", receiver.url("limited"), maxPerSecond=rate))
        for worker in deployment.workers:
            await worker.wait_for(lambda r: len(r["assignedPartitions"]) == PARTITIONS // 2, timeout=60,
                                  what="holding half of the partitions")
        await send_many(deployment, [{"type": "order", "customerId": f"c-{n % 97}", "id": f"o-{n}"}
                                     for n in range(firings)])
        await receiver.wait_for_deliveries("limited", firings, timeout=120)

        arrivals = sorted(r.arrived for r in receiver.to("limited"))
        busiest = max(sum(1 for t in arrivals[i:] if t < start + 1.0) for i, start in enumerate(arrivals))
        span = arrivals[-1] - arrivals[0]
        per_firing = Counter(r.headers["Idempotency-Key"] for r in receiver.to("limited", 200))
        print(f"\nmaxPerSecond {rate}, 2 workers: {len(arrivals)} requests over {span:.1f} s, "
              f"busiest one-second window {busiest}, mean {len(arrivals) / span:.1f}/s")
        assert span >= 30
        assert busiest <= rate + 2
        assert len(per_firing) == firings and max(per_firing.values()) == 1
    finally:
        deployment.stop()
        await deployment.kafka.stop()
        await receiver.stop()


# -- reliability: `make reliability` -------------------------------------------------------------


@pytest.mark.reliability
async def test_waiting_deliveries_survive_a_restart_on_an_empty_data_directory(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    receiver = await Receiver().start()
    receiver.script("later", *[503] * 50)  # every first attempt fails; the retries, 8 s later, succeed
    firings = 50
    deployment = await start_deployment(kafka_bootstrap, tmp_path, workers=1, partitions=PARTITIONS,
                                        env={**BASE_ENV, "TRIGGERS_WEBHOOK_RETRY_SCHEDULE": "0,8s"})
    worker = deployment.workers[0]
    try:
        await deployment.put_definition(webhook("later", "order", receiver.url("later")))
        await send_many(deployment, [{"type": "order", "customerId": f"c-{n}", "id": f"o-{n}"}
                                     for n in range(firings)])
        await worker.wait_for(lambda r: r["counters"].get("webhook.retries_scheduled", 0) >= firings,
                              timeout=60, what="holding every retry")
        worker.stop()
        assert receiver.to("later", 200) == []  # all of them still waiting
        shutil.rmtree(worker.data_dir)  # only the changelog still knows them
        worker.start()

        await receiver.wait_for_deliveries("later", firings, timeout=120)
        await asyncio.sleep(2.0)
        per_firing = Counter(r.headers["Idempotency-Key"] for r in receiver.to("later", 200))
        print(f"\nempty data directory: {firings} waiting deliveries restored and delivered, "
              f"repeated {sum(per_firing.values()) - len(per_firing)}")
        assert len(per_firing) == firings and max(per_firing.values()) == 1
    finally:
        deployment.stop()
        await deployment.kafka.stop()
        await receiver.stop()



@pytest.mark.reliability
async def test_ten_thousand_firings_to_a_slow_endpoint_are_all_delivered_once(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    receiver = await Receiver().start()
    receiver.script("slow", delay=0.04)  # 8 slots x 25 answers/s: at most ~200 requests/s
    firings = 10_000
    deployment = await start_deployment(kafka_bootstrap, tmp_path, workers=1, partitions=PARTITIONS,
                                        env={**BASE_ENV, "TRIGGERS_WEBHOOK_RETRY_SCHEDULE": "0,1s,5s,30s"})
    worker = deployment.workers[0]
    try:
        await deployment.put_definition(webhook("to-slow", "order", receiver.url("slow")))
        assert worker.process is not None
        idle = rss_mb(worker.process.pid)
        started = time.monotonic()
        await send_many(deployment, [{"type": "order", "customerId": f"c-{n % 500}", "id": f"o-{n}"}
                                     for n in range(firings)])
        peak, parked = idle, 0
        while len(receiver.delivered("slow")) < firings and time.monotonic() - started < 400:
            peak = max(peak, rss_mb(worker.process.pid))
            report = await worker.health()
            parked = max(parked, report["deliveries"]["parked"] if report else 0)
            await asyncio.sleep(1.0)
        elapsed = time.monotonic() - started
        per_firing = Counter(r.headers["Idempotency-Key"] for r in receiver.to("slow", 200))
        letters = await deployment.kafka.read(deployment.topics.actions_deadletter, timeout=2.0)
        print(f"\nslow endpoint: {firings} firings, delivered {len(per_firing)} in {elapsed:.0f} s "
              f"({len(per_firing) / elapsed:.0f}/s), repeated {sum(per_firing.values()) - len(per_firing)}, "
              f"dead letters {len(letters)}, most parked {parked}, RSS idle {idle:.0f} MB, peak {peak:.0f} MB")
        assert len(per_firing) == firings and max(per_firing.values()) == 1
        assert letters == []
        assert peak - idle < 150
    finally:
        worker.kill()
        await deployment.kafka.stop()
        await receiver.stop()


@pytest.mark.reliability
async def test_ten_thousand_deliveries_waiting_for_a_down_endpoint_cost_little_memory(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}/down"  # nothing listens: every attempt is refused at once
    waiting = 10_000
    deployment = await start_deployment(kafka_bootstrap, tmp_path, workers=1, partitions=PARTITIONS,
                                        env={**BASE_ENV, "TRIGGERS_WEBHOOK_RETRY_SCHEDULE": "0,1h,2h"})
    worker = deployment.workers[0]
    try:
        await deployment.put_definition(webhook("to-down", "order", down))
        assert worker.process is not None
        await asyncio.sleep(2.0)
        idle = rss_mb(worker.process.pid)
        await send_many(deployment, [{"type": "order", "customerId": f"c-{n % 500}", "id": f"o-{n}"}
                                     for n in range(waiting)])
        report = await worker.wait_for(
            lambda r: r["counters"].get("webhook.retries_scheduled", 0) >= waiting, timeout=300,
            what=f"holding {waiting} waiting deliveries")
        await asyncio.sleep(2.0)
        loaded = rss_mb(worker.process.pid)
        print(f"\ndown endpoint: {report['deliveries']['waiting']} deliveries waiting, "
              f"RSS idle {idle:.0f} MB, loaded {loaded:.0f} MB (+{loaded - idle:.0f} MB)")
        assert report["deliveries"]["waiting"] >= waiting
        assert loaded - idle < 50
    finally:
        worker.kill()
        await deployment.kafka.stop()
