"""Pending firings through a kill -9 and through a restart on an empty data directory: none
lost, none performed twice, cancels still honoured."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.domain.engine import firing_id
from app.kafka.partitioner import partition_for
from tests.integration.conftest import Deployment, start_deployment
from tests.integration.test_timers import (
    PARTITIONS,
    TERMINAL,
    WEBHOOKS,
    delayed,
    event,
    now_ms,
    pending_statuses,
    spread,
    wait_split,
)
from tests.support.kafka import Record
from tests.support.receiver import Receiver

# Run by `make reliability` on a broker of their own (CI runs it after `make test`).
pytestmark = [pytest.mark.integration, pytest.mark.reliability]

TRIGGER = "abandoned"


async def has_status(deployment: Deployment, event_ids: list[str], status: str) -> None:
    """Until every one of these carts has `status` on `triggers.pending`."""
    def seen(records: list[Record]) -> set[str]:
        return {r.value["eventId"] for r in records if r.value["status"] == status}

    records = await deployment.kafka.read(deployment.topics.pending, until=lambda rs: set(event_ids) <= seen(rs),
                                          timeout=30)
    assert set(event_ids) <= seen(records), f"not {status}: {sorted(set(event_ids) - seen(records))}"


async def delivered(receiver: Receiver, path: str, firing_ids: set[str], timeout: float) -> None:
    """Until every one of these firings was delivered, or `timeout`: the figures tell what is
    missing either way."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not firing_ids <= receiver.delivered(path):
        await asyncio.sleep(0.05)


def final_statuses(pending: dict[str, list[str]]) -> dict[str, str]:
    return {event_id: next(s for s in statuses if s in TERMINAL) for event_id, statuses in pending.items()}


def counted(receiver: Receiver, path: str, expected: set[str], cancelled: set[str]) -> tuple[int, int, int]:
    """(lost, repeated, cancelled yet delivered) at the receiver, per firingId."""
    deliveries = Counter(r.headers["Idempotency-Key"] for r in receiver.to(path, 200))
    lost = len(expected - set(deliveries))
    repeated = sum(count - 1 for count in deliveries.values())
    return lost, repeated, len(cancelled & set(deliveries))


async def test_kill_9_of_a_worker_holding_pending_firings_loses_none_and_repeats_none(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    receiver = await Receiver().start()
    deployment = await start_deployment(kafka_bootstrap, tmp_path, workers=2, partitions=PARTITIONS, env=WEBHOOKS)
    try:
        await wait_split(deployment)
        await deployment.put_definition(delayed(TRIGGER, seconds=8, action={"type": "webhook",
                                                                             "url": receiver.url("carts")}))
        victim = deployment.workers[1]
        victim_report = await victim.health()
        assert victim_report is not None
        victims_partitions = set(victim_report["assignedPartitions"])
        customers = spread("c", 6)  # 24 customers, six in each partition
        # A third buy before the kill, a third while the victim is dead (before their due
        # time, read by the survivor after the takeover), a third never: those must fire.
        bought_before, bought_during = set(customers[0::3]), set(customers[1::3])
        now = now_ms()
        carts = {c: event("cart_add", c, now, f"{c}-k1", cartId="k1") for c in customers}
        for cart in carts.values():
            await deployment.send_event(cart)
        for customer in sorted(bought_before):
            await deployment.send_event(event("purchase", customer, now_ms(), cartId="k1"))
        await has_status(deployment, [cart["id"] for cart in carts.values()], "scheduled")
        await has_status(deployment, [carts[c]["id"] for c in bought_before], "cancelled")

        assert victim.process is not None
        victim.kill()  # no goodbye: no commit, no flush; its timers are pending, none due yet
        killed_at = time.monotonic()
        assert datetime.now(now.tzinfo) < now + timedelta(seconds=8), "too slow: the firings fell due before the kill"
        for customer in sorted(bought_during):
            await deployment.send_event(event("purchase", customer, now_ms(), cartId="k1"))

        kept = set(customers) - bought_before - bought_during
        expected = {firing_id(TRIGGER, carts[c]["id"]) for c in kept}
        cancelled = {firing_id(TRIGGER, carts[c]["id"]) for c in bought_before | bought_during}
        await delivered(receiver, "carts", expected, timeout=120)
        taken_over = time.monotonic() - killed_at
        await asyncio.sleep(3)  # room for any repeat to show up
        lost, repeated, cancelled_delivered = counted(receiver, "carts", expected, cancelled)
        on_victim = sum(1 for c in customers if partition_for(c, PARTITIONS) in victims_partitions)
        print(f"\ntimer kill -9: pending {len(customers)} ({on_victim} on the victim), to fire {len(expected)}, "
              f"lost {lost}, repeated deliveries {repeated}, cancelled yet delivered {cancelled_delivered}, "
              f"all delivered {taken_over:.1f} s after the kill")

        # The victim back, same data directory: partitions move again, nothing fires twice.
        victim.start()
        await wait_split(deployment)
        await asyncio.sleep(3)  # room for any repeat to show up
        lost_after, repeated_after, cancelled_after = counted(receiver, "carts", expected, cancelled)
        print(f"timer kill -9, after the victim's restart: lost {lost_after}, repeated deliveries {repeated_after}, "
              f"cancelled yet delivered {cancelled_after}")
        assert (lost, repeated, cancelled_delivered) == (0, 0, 0)
        assert (lost_after, repeated_after, cancelled_after) == (0, 0, 0)
        pending = await pending_statuses(deployment, TRIGGER, [cart["id"] for cart in carts.values()])
        assert final_statuses(pending) == {carts[c]["id"]: "fired" if c in kept else "cancelled" for c in customers}
    finally:
        deployment.stop()
        await deployment.kafka.stop()
        await receiver.stop()


async def test_pending_firings_survive_a_restart_on_an_empty_data_directory(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    receiver = await Receiver().start()
    deployment = await start_deployment(kafka_bootstrap, tmp_path, workers=1, partitions=PARTITIONS, env=WEBHOOKS)
    delay = timedelta(seconds=20)  # longer than a stop, an empty directory and a start
    try:
        await deployment.put_definition(delayed(TRIGGER, seconds=int(delay.total_seconds()),
                                                action={"type": "webhook", "url": receiver.url("carts")}))
        customers = spread("c", 3)  # 12 customers, every partition
        bought_while_down = set(customers[0::2])
        now = now_ms()
        carts = {c: event("cart_add", c, now, f"{c}-k1", cartId="k1") for c in customers}
        for cart in carts.values():
            await deployment.send_event(cart)
        await has_status(deployment, [cart["id"] for cart in carts.values()], "scheduled")

        worker = deployment.workers[0]
        await asyncio.to_thread(worker.stop)
        assert datetime.now(now.tzinfo) < now + delay, "too slow: the firings fell due before the stop"
        for path in sorted(worker.data_dir.rglob("*"), reverse=True):  # rm -r, children first
            path.rmdir() if path.is_dir() else path.unlink()
        # Purchases while no worker runs, stamped before the due time: read on the restart.
        for customer in sorted(bought_while_down):
            await deployment.send_event(event("purchase", customer, now_ms(), cartId="k1"))
        worker.start()
        await worker.wait_healthy()  # the timers table rebuilt from its changelog
        restarted = datetime.now(now.tzinfo)

        kept = set(customers) - bought_while_down
        expected = {firing_id(TRIGGER, carts[c]["id"]) for c in kept}
        cancelled = {firing_id(TRIGGER, carts[c]["id"]) for c in bought_while_down}
        await delivered(receiver, "carts", expected, timeout=60)
        firings = await deployment.firings(len(expected), lambda r: r["triggerId"] == TRIGGER, settle=3)
        lost, repeated, cancelled_delivered = counted(receiver, "carts", expected, cancelled)
        late = max((datetime.fromisoformat(f["firedAt"]) - (now + delay) for f in firings),
                   default=timedelta(0)).total_seconds()
        print(f"\ntimer restart on an empty data directory: pending {len(customers)}, to fire {len(expected)}, "
              f"lost {lost}, repeated deliveries {repeated}, cancelled yet delivered {cancelled_delivered}, "
              f"firing records {len(firings)}, restarted {(now + delay - restarted).total_seconds():.1f} s before "
              f"the due time, fired at most {late:.3f} s after it")
        assert (lost, repeated, cancelled_delivered) == (0, 0, 0)
        assert Counter(f["firingId"] for f in firings) == Counter(expected)
        pending = await pending_statuses(deployment, TRIGGER, [cart["id"] for cart in carts.values()])
        assert final_statuses(pending) == {carts[c]["id"]: "fired" if c in kept else "cancelled" for c in customers}
    finally:
        deployment.stop()
        await deployment.kafka.stop()
        await receiver.stop()


async def test_kill_9_while_delayed_firings_fall_due_loses_none(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Carts stream in for 12 s, each due 2 s later, a fifth bought before then; one worker of
    two is killed halfway, while its firings are being decided and delivered."""
    receiver = await Receiver().start()
    deployment = await start_deployment(kafka_bootstrap, tmp_path, workers=2, partitions=PARTITIONS, env=WEBHOOKS)
    carts_count, rate = 240, 20  # carts/s
    try:
        await wait_split(deployment)
        await deployment.put_definition(delayed(TRIGGER, seconds=2, action={"type": "webhook",
                                                                             "url": receiver.url("stream")}))
        victim = deployment.workers[1]
        customers = spread("c", 10)
        carts: list[dict[str, Any]] = []
        buys: list[tuple[float, dict[str, Any]]] = []  # (when to send, purchase)
        started = time.monotonic()
        for n in range(carts_count):
            at = n / rate
            await asyncio.sleep(max(0.0, at - (time.monotonic() - started)))
            now = now_ms()
            cart = event("cart_add", customers[n % len(customers)], now, f"cart-{n}", cartId=f"k{n}")
            await deployment.send_event(cart)
            carts.append(cart)
            if n % 5 == 0:
                buys.append((at + 0.5, event("purchase", cart["customerId"], now + timedelta(milliseconds=500),
                                             cartId=f"k{n}")))
            while buys and buys[0][0] <= time.monotonic() - started:
                await deployment.send_event(buys.pop(0)[1])
            if n == carts_count // 2:
                victim.kill()  # no goodbye: no commit, no flush
        for _, purchase in buys:
            await deployment.send_event(purchase)

        bought = {f"cart-{n}" for n in range(0, carts_count, 5)}
        expected = {firing_id(TRIGGER, cart["id"]) for cart in carts if cart["id"] not in bought}
        cancelled = {firing_id(TRIGGER, cart_id) for cart_id in bought}
        await delivered(receiver, "stream", expected, timeout=120)
        await asyncio.sleep(3)  # room for any repeat to show up
        lost, repeated, cancelled_delivered = counted(receiver, "stream", expected, cancelled)
        firings = await deployment.firings(len(expected), lambda r: r["triggerId"] == TRIGGER, settle=1)
        records = Counter(f["firingId"] for f in firings)
        print(f"\ntimer kill -9 while firing: carts {carts_count}, to fire {len(expected)}, lost {lost}, "
              f"repeated deliveries {repeated}, cancelled yet delivered {cancelled_delivered}, "
              f"firing records repeated {sum(records.values()) - len(records)}")
        assert (lost, cancelled_delivered) == (0, 0)
        assert repeated == 0
        pending = await pending_statuses(deployment, TRIGGER, [cart["id"] for cart in carts])
        assert final_statuses(pending) == {cart["id"]: "cancelled" if cart["id"] in bought else "fired"
                                           for cart in carts}
    finally:
        deployment.stop()
        await deployment.kafka.stop()
        await receiver.stop()
