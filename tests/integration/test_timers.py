"""Delayed firings and cancel events on a real broker: due time, cancelOn and sameFields, two
workers, and a backlog read in event time deciding what the same events decide live."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.domain.engine import firing_id
from app.kafka.partitioner import partition_for
from app.settings import Settings
from app.topics import Topics, ensure_topics
from tests.integration.conftest import Deployment, start_deployment
from tests.support.kafka import KafkaClient, Record
from tests.support.receiver import Receiver
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.integration

PARTITIONS = 4
WEBHOOKS = {"TRIGGERS_ALLOW_PRIVATE_URLS": "1",  # the receiver listens on 127.0.0.1
            "TRIGGERS_WEBHOOK_RETRY_SCHEDULE": "0,0.05s,0.2s,0.5s,0.5s",
            "TRIGGERS_WEBHOOK_TIMEOUT_S": "2"}
TERMINAL = ("fired", "cancelled", "dropped")


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def delayed(trigger_id: str, seconds: int = 3, **extra: Any) -> dict[str, Any]:
    return {"id": trigger_id, "source": "streaming", "eventType": "cart_add", "delay": {"seconds": seconds},
            "cancelOn": [{"source": "streaming", "eventType": "purchase", "sameFields": ["cartId"]}],
            "action": {"type": "update_attribute", "attributes": {"reminded": "event.cartId"}}, **extra}


def iso(moment: datetime) -> str:
    return moment.isoformat()


def now_ms() -> datetime:
    """Now, to the millisecond: due times are kept in ms, so a timestamp `delay` after this
    one is exactly the due time."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def spread(prefix: str, per_partition: int, partitions: int = PARTITIONS) -> list[str]:
    """Customer ids, `per_partition` of them in each partition."""
    chosen: dict[int, list[str]] = {p: [] for p in range(partitions)}
    n = 0
    while any(len(ids) < per_partition for ids in chosen.values()):
        customer = f"{prefix}-{n}"
        ids = chosen[partition_for(customer, partitions)]
        if len(ids) < per_partition:
            ids.append(customer)
        n += 1
    return [customer for p in range(partitions) for customer in chosen[p]]


def same_partition(customer: str, prefix: str) -> str:
    """Another customer id whose firings share `customer`'s partition (and due index)."""
    return next(other for n in range(1000) if partition_for(other := f"{prefix}-{n}", PARTITIONS)
                == partition_for(customer, PARTITIONS) and other != customer)


def event(event_type: str, customer: str, at: datetime, event_id: str | None = None,
          **fields: Any) -> dict[str, Any]:
    return {"type": event_type, "customerId": customer, "id": event_id or unique("e"), "timestamp": iso(at),
            **fields}


async def pending_statuses(deployment: Deployment, trigger_id: str, event_ids: Iterable[str],
                           timeout: float = 60.0, settle: float = 0.5) -> dict[str, list[str]]:
    """`triggers.pending` statuses of `trigger_id`'s firings per event id, read until each of
    these events' firings has a final status (fired, cancelled, dropped)."""
    wanted = set(event_ids)

    def statuses(records: list[Record]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for record in records:
            if record.value["triggerId"] == trigger_id and record.value["eventId"] in wanted:
                found.setdefault(record.value["eventId"], []).append(record.value["status"])
        return found

    def settled(records: list[Record]) -> bool:
        found = statuses(records)
        return all(any(s in TERMINAL for s in found.get(event_id, [])) for event_id in wanted)

    records = await deployment.kafka.read(deployment.topics.pending, until=settled, timeout=timeout, settle=settle)
    found = statuses(records)
    assert settled(records), f"no final status for some of {sorted(wanted)}: {found}"
    return found


async def first_seen(deployment: Deployment, topic: str, where: Callable[[dict[str, Any]], bool],
                     timeout: float = 30.0) -> tuple[dict[str, Any], float]:
    """The first record of `topic` matching `where`, and the wall-clock time this reader saw it
    (polling every few ms, as a consumer of `topic` would)."""
    seen: list[tuple[dict[str, Any], float]] = []

    def until(records: list[Record]) -> bool:
        if not seen:
            seen.extend((r.value, time.time()) for r in records if r.raw is not None and where(r.value))
        return bool(seen)

    await deployment.kafka.read(topic, until=until, timeout=timeout)
    assert seen, f"nothing on {topic} in {timeout}s"
    return seen[0]


async def wait_split(deployment: Deployment) -> None:
    """Until both workers are ok and share the partitions: each some, none twice, none left."""
    reports: list[Any] = []
    for _ in range(240):
        reports = [await worker.health() for worker in deployment.workers]
        owned = [set(r["assignedPartitions"]) for r in reports if r and r["status"] == "ok"]
        if len(owned) == 2 and all(owned) and owned[0].isdisjoint(owned[1]) \
                and owned[0] | owned[1] == set(range(PARTITIONS)):
            return
        await asyncio.sleep(0.5)
    pytest.fail(f"partitions never split between the workers: {reports}")


# -- one worker ---------------------------------------------------------------------------------

async def test_a_delayed_firing_fires_once_at_its_due_time(engine: Deployment) -> None:
    trigger_id, customer = unique("abandoned"), unique("c")
    await engine.put_definition(delayed(trigger_id))
    now = now_ms()
    due = now + timedelta(seconds=3)
    # Read as the firing arrives: the reader starts before the event is sent.
    watch = asyncio.create_task(first_seen(engine, engine.topics.firings, lambda r: r["triggerId"] == trigger_id))
    await engine.send_event(event("cart_add", customer, now, cartId="k1"))
    firing, seen_at = await watch
    lateness, engine_lateness = seen_at - due.timestamp(), datetime.fromisoformat(firing["firedAt"]) - due
    print(f"\ndelayed firing: read {lateness:.3f} s after its due time (firedAt {engine_lateness.total_seconds():.3f}"
          " s after it)")
    assert engine_lateness >= timedelta(0), "fired before its due time"
    assert lateness < 1.5  # the clock pass runs every 0.1 s

    firings = await engine.firings(1, lambda r: r["triggerId"] == trigger_id, settle=2)
    assert len(firings) == 1
    pending = await pending_statuses(engine, trigger_id, [firing["eventId"]])
    assert pending == {firing["eventId"]: ["scheduled", "fired"]}


async def test_a_cancel_event_before_the_due_time_stops_the_firing(engine: Deployment) -> None:
    trigger_id, buyer = unique("abandoned"), unique("buyer")
    other = same_partition(buyer, unique("other"))  # same partition: fired in due order with the buyer's cart
    await engine.put_definition(delayed(trigger_id))
    now = now_ms()
    bought = event("cart_add", buyer, now, cartId="k1")
    purchase = event("purchase", buyer, now + timedelta(seconds=1), cartId="k1")
    await engine.send_event(bought)
    # The other customer's cart: the same cart id, due later; the buyer's purchase is not theirs.
    await engine.send_event(event("cart_add", other, now + timedelta(milliseconds=500), cartId="k1"))
    await engine.send_event(purchase)

    # Once the later firing is out, the buyer's (due earlier, same partition) would be too.
    firings = await engine.firings(1, lambda r: r["triggerId"] == trigger_id, settle=1)
    assert [f["customerId"] for f in firings] == [other]
    pending = await pending_statuses(engine, trigger_id, [bought["id"]])
    assert pending == {bought["id"]: ["scheduled", "cancelled"]}

    def is_cancel(record: Record) -> bool:
        return record.value["triggerId"] == trigger_id and record.value["status"] == "cancelled"

    records = await engine.kafka.read(engine.topics.pending, until=lambda rs: any(map(is_cancel, rs)))
    cancelled = next(r.value for r in records if is_cancel(r))
    assert cancelled["reason"] == f"purchase event {purchase['id']} before the due time"


async def test_a_cancel_event_at_or_after_the_due_time_does_not_cancel(engine: Deployment) -> None:
    """Only the cancel event's timestamp counts: both purchases are read long before the due
    time, but one is stamped at it (not strictly before) and one after it."""
    trigger_id, customer = unique("abandoned"), unique("c")
    await engine.put_definition(delayed(trigger_id))
    now = now_ms()
    due = now + timedelta(seconds=3)
    carts = [event("cart_add", customer, now, cartId=cart) for cart in ("k1", "k2")]
    for cart in carts:
        await engine.send_event(cart)
    await engine.send_event(event("purchase", customer, due, cartId="k1"))
    await engine.send_event(event("purchase", customer, due + timedelta(seconds=1), cartId="k2"))

    firings = await engine.firings(2, lambda r: r["triggerId"] == trigger_id, settle=1)
    assert sorted(f["event"]["cartId"] for f in firings) == ["k1", "k2"]
    # A future-stamped event does not move time ahead of the clock: nothing fired early.
    assert all(datetime.fromisoformat(f["firedAt"]) >= due for f in firings)
    pending = await pending_statuses(engine, trigger_id, [cart["id"] for cart in carts])
    assert pending == {cart["id"]: ["scheduled", "fired"] for cart in carts}


async def test_same_fields_tell_two_carts_of_one_customer_apart(engine: Deployment) -> None:
    trigger_id, customer = unique("abandoned"), unique("c")
    await engine.put_definition(delayed(trigger_id))
    now = now_ms()
    k1 = event("cart_add", customer, now, cartId="k1")
    k2 = event("cart_add", customer, now + timedelta(milliseconds=500), cartId="k2")  # due after k1
    await engine.send_event(k1)
    await engine.send_event(k2)
    await engine.send_event(event("purchase", customer, now + timedelta(seconds=1), cartId="k1"))
    # A purchase without the field cancels neither: a sameFields field must be in both events.
    await engine.send_event(event("purchase", customer, now + timedelta(seconds=1)))

    firings = await engine.firings(1, lambda r: r["triggerId"] == trigger_id, settle=1)
    assert [f["event"]["cartId"] for f in firings] == ["k2"]
    assert await pending_statuses(engine, trigger_id, [k1["id"], k2["id"]]) == {
        k1["id"]: ["scheduled", "cancelled"], k2["id"]: ["scheduled", "fired"]}


async def cancel_read_before_its_cart(engine: Deployment) -> tuple[list[str], list[str]]:
    """A purchase on `events.outcomes`, dated after the cart, handled before the cart is read
    (a firing of another trigger on it says so): (carts fired, the cart's pending statuses)."""
    trigger_id, witness, customer = unique("abandoned"), unique("witness"), unique("c")
    await engine.put_definition(delayed(trigger_id, cancelOn=CANCEL_ON))
    await engine.put_definition({"id": witness, "source": "outcome", "eventType": "purchase",
                                 "action": {"type": "update_attribute", "attributes": {"bought": "event.cartId"}}})
    now = now_ms()
    purchase = event("purchase", customer, now + timedelta(seconds=1), cartId="k1")
    await engine.send_event(purchase, topic=engine.topics.outcomes)
    await engine.firings(1, lambda r: r["triggerId"] == witness and r["eventId"] == purchase["id"], settle=0)
    k1 = event("cart_add", customer, now, cartId="k1")
    await engine.send_event(k1)
    await engine.send_event(event("cart_add", customer, now + timedelta(milliseconds=500), cartId="k2"))
    firings = await engine.firings(1, lambda r: r["triggerId"] == trigger_id, settle=1)
    pending = await pending_statuses(engine, trigger_id, [k1["id"]])
    return [f["event"]["cartId"] for f in firings], pending[k1["id"]]


async def test_a_cancel_event_read_before_its_cart_cancels_it(engine: Deployment) -> None:
    """Dated after the cart, it cancels whatever the order the two topics are read in."""
    fired, statuses = await cancel_read_before_its_cart(engine)
    assert fired == ["k2"]
    assert statuses[-1] == "cancelled"


async def test_a_cancelled_firing_has_a_scheduled_record_first(engine: Deployment) -> None:
    """contract.md 11.7: a firing's records are `scheduled` first, then one of `cancelled`,
    `fired` or `dropped` (only a match over the 100 limit has `dropped` alone)."""
    fired, statuses = await cancel_read_before_its_cart(engine)
    assert fired == ["k2"]
    assert statuses == ["scheduled", "cancelled"]


# -- two workers ---------------------------------------------------------------------------------

async def test_two_workers_fire_every_delayed_firing_once_and_no_cancelled_one(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    receiver = await Receiver().start()
    deployment = await start_deployment(kafka_bootstrap, tmp_path, workers=2, partitions=PARTITIONS, env=WEBHOOKS)
    try:
        await wait_split(deployment)
        trigger_id = "abandoned"
        await deployment.put_definition(delayed(trigger_id, action={"type": "webhook",
                                                                    "url": receiver.url("carts")}))
        customers = spread("c", 5)  # 20 customers, every partition
        now = now_ms()
        kept = [event("cart_add", c, now, f"{c}-k1", cartId="k1") for c in customers]
        bought = [event("cart_add", c, now, f"{c}-k2", cartId="k2") for c in customers]
        for cart in kept + bought:
            await deployment.send_event(cart)
        for customer in customers:
            await deployment.send_event(event("purchase", customer, now + timedelta(seconds=1), cartId="k2"))

        expected = {firing_id(trigger_id, cart["id"]) for cart in kept}
        await receiver.wait_for_deliveries("carts", len(expected), timeout=60)
        pending = await pending_statuses(deployment, trigger_id, [cart["id"] for cart in kept + bought], settle=2)
        deliveries = Counter(r.headers["Idempotency-Key"] for r in receiver.to("carts"))
        assert set(deliveries) == expected, "a cancelled firing was delivered, or a kept one never"
        assert max(deliveries.values()) == 1, f"delivered twice: {deliveries.most_common(3)}"
        assert pending == {
            **{cart["id"]: ["scheduled", "fired"] for cart in kept},
            **{cart["id"]: ["scheduled", "cancelled"] for cart in bought}}
        firings = await deployment.firings(len(expected), lambda r: r["triggerId"] == trigger_id, settle=1)
        assert Counter(f["firingId"] for f in firings) == Counter(expected)
        # Both workers held timers and fired their own customers'.
        reports = [await worker.health() for worker in deployment.workers]
        fired = [r["counters"].get("delayed_fired", 0) if r else 0 for r in reports]
        assert all(fired) and sum(fired) == len(expected), fired
    finally:
        deployment.stop()
        await deployment.kafka.stop()
        await receiver.stop()


# -- backlog and live ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Story:
    """One kind of customer: a cart, then `events` as (time, type, source, fields), time in
    units of the delay (1.0 is the due time); `late_cart`: the cart is written after the
    backlog's stretch of other events (see FILLER), though dated before them."""

    events: list[tuple[float, str, str, dict[str, Any]]]
    fires: bool
    late_cart: bool = False


STORY: dict[str, Story] = {
    "abandoned": Story([], fires=True),
    "bought": Story([(1 / 3, "purchase", "streaming", {"cartId": "k1"})], fires=False),
    "bought-other-cart": Story([(1 / 3, "purchase", "streaming", {"cartId": "k2"})], fires=True),
    "bought-after-due": Story([(4 / 3, "purchase", "streaming", {"cartId": "k1"})], fires=True),
    # An event far later on another source topic, written before the purchase: in a backlog it
    # must not move the partition's time past the due time before the purchase is read.
    "bought-behind-a-later-event": Story([(10 / 3, "delivered", "outcome", {}),
                                          (1 / 3, "purchase", "streaming", {"cartId": "k1"})], fires=False),
    # The purchase on another topic than the cart: in a backlog it is likely read first (the
    # cart waits behind the stretch of other events); it cancels all the same.
    "bought-read-before-the-cart": Story([(1 / 3, "purchase", "outcome", {"cartId": "k1"})], fires=False,
                                         late_cart=True),
}
CANCEL_ON = [{"source": source, "eventType": "purchase", "sameFields": ["cartId"]}
             for source in ("streaming", "outcome")]


FILLER = 400  # events between the carts and the purchases, all partitions together
FEW_AT_A_TIME = {"CONSUMER_MAX_FETCH_SIZE": "2048"}  # bytes per partition and fetch: a dozen events


def customers_of_story() -> dict[str, list[str]]:
    """Two customers of each kind, in different partitions where possible."""
    ids = spread("s", 3)
    kinds = list(STORY)
    return {kind: [ids[(2 * n) % len(ids)], ids[(2 * n + 7) % len(ids)]] for n, kind in enumerate(kinds)}


def topic_of(topics: Topics, source: str) -> str:
    return topics.streaming if source == "streaming" else topics.outcomes


def story_records(topics: Topics, start: datetime, delay: float) -> list[tuple[float, str, dict[str, Any]]]:
    """(seconds after `start` to send it live, topic, event) for every customer's story. The
    carts are dated `start`; a late cart is sent 0.1 s after it (after the FILLER in a backlog)."""
    records: list[tuple[float, str, dict[str, Any]]] = []
    for kind, customers in customers_of_story().items():
        story = STORY[kind]
        for customer in customers:
            cart = event("cart_add", customer, start, f"{customer}-k1", cartId="k1")
            records.append((0.1 if story.late_cart else 0.0, topics.streaming, cart))
            for n, (at, event_type, source, fields) in enumerate(story.events):
                moment = start + timedelta(seconds=at * delay)
                # Each is sent at its time, in story order (a later-dated one first if so).
                send_at = min(at, *(a for a, *_ in story.events[n:])) * delay
                records.append((send_at, topic_of(topics, source),
                                event(event_type, customer, moment, f"{customer}-{n}", **fields)))
    return records


async def decisions(deployment: Deployment, trigger_id: str) -> tuple[dict[str, str], set[tuple[str, str, str]]]:
    """Each cart's final status on `triggers.pending`, and the (triggerId, customerId,
    firingId) of every record on `triggers.firings` (which must be the fired carts')."""
    carts = [f"{customer}-k1" for customers in customers_of_story().values() for customer in customers]
    pending = await pending_statuses(deployment, trigger_id, carts, settle=1)
    final = {cart: next(s for s in statuses if s in TERMINAL) for cart, statuses in pending.items()}
    # Decided once each. (A cart a remembered cancel event stops has no `scheduled` record: see
    # test_a_cancelled_firing_has_a_scheduled_record_first.)
    assert all([s for s in statuses if s in TERMINAL] == [final[cart]] for cart, statuses in pending.items()), pending
    firings = await deployment.firings(list(final.values()).count("fired"),
                                       lambda r: r["triggerId"] == trigger_id, settle=1)
    assert sorted(f["eventId"] for f in firings) == sorted(c for c, s in final.items() if s == "fired")
    return final, {(f["triggerId"], f["customerId"], f["firingId"]) for f in firings}


async def test_a_backlog_read_in_event_time_decides_what_live_traffic_decides(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """The same story twice: a day old, in the topics before a worker starts (decided in the
    events' time), and live (decided on the clock). Same ids, so the same firingIds."""
    trigger_id = "abandoned"
    expected = {f"{customer}-k1": "fired" if STORY[kind].fires else "cancelled"
                for kind, customers in customers_of_story().items() for customer in customers}

    # The backlog: a day-old story, 30 s delays, in the topics before any worker starts.
    tag = uuid.uuid4().hex[:8]
    topics = Topics(f"t{tag}.")
    backlog = Deployment(await KafkaClient(kafka_bootstrap).start(), topics)
    try:
        await ensure_topics(Settings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, TRIGGERS_PARTITIONS=PARTITIONS),
                            topics)
        await backlog.kafka.send(topics.definitions, trigger_id, delayed(trigger_id, seconds=30, cancelOn=CANCEL_ON))
        start = now_ms() - timedelta(days=1)
        filled = False
        records = sorted(story_records(topics, start, 30.0), key=lambda r: r[0])
        # Stream order, not time order: the story's later-stamped events come first where it says.
        for send_at, topic, record in records:
            if send_at > 0 and not filled:
                # After the carts, in every partition, a stretch of other customers' events
                # dated before the due time: read a few at a time (FEW_AT_A_TIME) they take many
                # fetches, and the clock's pass runs between them.
                for n, customer in enumerate(spread("filler", FILLER // PARTITIONS)):
                    await backlog.send_event(event("page_view", customer, start + timedelta(seconds=1 + n % 8)))
                filled = True
            await backlog.kafka.send(topic, record["customerId"], record)
        # Far later events of every customer: the backlog's own time passes every due time.
        for customer in {r["customerId"] for _, _, r in records}:
            await backlog.send_event(event("page_view", customer, start + timedelta(minutes=10)))
        worker = WorkerProcess(kafka_bootstrap, f"trigger-engine-test-{tag}", topics.prefix, tmp_path, "backlog",
                               PARTITIONS, FEW_AT_A_TIME)
        backlog.workers.append(worker.start())
        await worker.wait_healthy()
        from_backlog, fired_in_backlog = await decisions(backlog, trigger_id)
    finally:
        backlog.stop()
        await backlog.kafka.stop()

    # Live: the same story with a 3 s delay, each event sent at its time.
    (tmp_path / "live").mkdir()
    live = await start_deployment(kafka_bootstrap, tmp_path / "live", partitions=PARTITIONS)
    try:
        await live.put_definition(delayed(trigger_id, seconds=3, cancelOn=CANCEL_ON))
        started = time.monotonic()
        start = now_ms()
        for send_at, topic, record in sorted(story_records(live.topics, start, 3.0), key=lambda r: r[0]):
            await asyncio.sleep(max(0.0, send_at - (time.monotonic() - started)))
            await live.kafka.send(topic, record["customerId"], record)
        from_live, fired_live = await decisions(live, trigger_id)
    finally:
        live.stop()
        await live.kafka.stop()

    assert from_backlog == from_live, "the backlog decided otherwise than live traffic"
    assert fired_in_backlog == fired_live
    assert from_live == expected
