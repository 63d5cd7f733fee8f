"""Poison pills: a hostile corpus on every topic the engine reads, each followed by a valid
canary on the same partition, against a real broker, a real worker and a real HTTP server.

Every hostile record must end as a dead letter (an error record for definitions) naming its
topic and offset, every canary must take effect, the worker must stay alive, and a restart
on the same data directory must neither crash nor fire again."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from app.domain.models import Event, Source
from app.kafka.partitioner import partition_for
from tests.integration.conftest import Deployment, start_deployment
from tests.support.kafka import Record
from tests.support.receiver import Receiver
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.integration

PARTITIONS = 4
ENV = {"TRIGGERS_ALLOW_PRIVATE_URLS": "1", "TRIGGERS_WEBHOOK_RETRY_SCHEDULE": "0"}
HUGE = 900_000
BIG_INT = 18446744073709551616  # 2**64: valid JSON, beyond every 64-bit codec


def garbage(customer: str) -> list[tuple[bytes | None, bytes | None]]:
    """(key, value) pairs no topic accepts; keys include none at all and invalid UTF-8."""
    return [
        (customer.encode(), b"\xff\xfe\x00garbage \xc3\x28"),  # invalid UTF-8
        (customer.encode(), b""),  # empty value
        (None, b"not json at all"),  # null key
        (b"\xff\xfe", b"[1, 2, 3]"),  # invalid UTF-8 key, wrong shape
        (customer.encode(), json.dumps({"type": 5, "customerId": ["x"], "kind": 7, "triggerId": 9}).encode()),
        (customer.encode(), b'{"n": 1e400, "customerId": "' + customer.encode() + b'"}'),
        (customer.encode(), b'{"pad": "' + b"x" * HUGE + b'"}'),  # huge, lacking every field
        (customer.encode(), b"\x00" * HUGE),  # huge garbage: 6 bytes per byte once escaped
    ]


def nulls(customer: str) -> list[tuple[bytes | None, bytes | None]]:
    return [(customer.encode(), None)]  # (a record with neither key nor value cannot be produced)


def command(firing_id: str, customer: str, action: dict[str, Any], event: dict[str, Any] | None = None
            ) -> bytes:
    return json.dumps({"firingId": firing_id, "triggerId": "poison-canary", "priority": 50,
                       "customerId": customer, "eventId": f"e-{firing_id}",
                       "firedAt": datetime.now(UTC).isoformat(), "action": action,
                       "event": event or {"type": "canary", "customerId": customer}}).encode()


async def test_every_topic_survives_a_hostile_corpus_and_its_canary_takes_effect(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    receiver = await Receiver().start()
    engine = await start_deployment(kafka_bootstrap, tmp_path, workers=1, partitions=PARTITIONS, env=ENV)
    t = engine.topics
    tag = uuid.uuid4().hex[:6]
    customer = f"poison-{tag}"
    partition = partition_for(customer, PARTITIONS)
    try:
        journey, flow = f"j-{tag}", f"df-{tag}"
        await engine.put(t.journey_definitions, "journey", journey, {"id": journey, "maxDurationDays": 30})
        await engine.put(t.decision_flow_definitions, "decision_flow", flow, {
            "id": flow, "offers": [{"id": "o1", "score": "1"}]})
        triggers = {
            "stream": ("streaming", "canary"), "outcome": ("outcome", "canary"),
            "cdc": ("cdc", "orders.insert"), "schema": ("schema_table", "canary.schema"),
            "rerouted": ("streaming", "canary.rerouted"),
        }
        for name, (source, event_type) in triggers.items():
            await engine.put_definition({"id": f"{name}-{tag}", "source": source, "eventType": event_type,
                                         "action": {"type": "webhook", "url": receiver.url(f"{name}-{tag}")}})
        await engine.put_definition({"id": f"tick-{tag}", "source": "scheduled", "eventType": "schedule.tick",
                                     "schedule": "0 0 1 1 *", "filters": {"customerId": customer},
                                     "action": {"type": "webhook", "url": receiver.url(f"tick-{tag}")}})
        # update_attribute computing values no table can store: 10**24, and 2**64 copied from the event.
        await engine.put_definition({"id": f"square-{tag}", "source": "streaming", "eventType": "square",
                                     "action": {"type": "update_attribute",
                                                "attributes": {"sq": "event.amount * event.amount"}}})
        await engine.put_definition({"id": f"copy-{tag}", "source": "streaming", "eventType": "copy",
                                     "action": {"type": "update_attribute", "attributes": {"big": "event.amount"}}})

        produced: dict[str, list[int]] = {}  # topic -> offsets of hostile records

        async def hostile(topic: str, records: list[tuple[bytes | None, bytes | None]],
                          on: int = partition) -> None:
            for key, value in records:
                produced.setdefault(topic, []).append(await engine.kafka.send(topic, key, value, partition=on))

        async def canary(topic: str, key: str | None, value: Any, on: int = partition) -> int:
            return await engine.kafka.send(topic, key, value, partition=on)

        def evt(event_type: str, **fields: Any) -> dict[str, Any]:
            return {"type": event_type, "customerId": customer, **fields}

        # -- event topics and row loads ------------------------------------------------------
        for topic in (t.streaming, t.outcomes, t.schema):
            await hostile(topic, [*garbage(customer), *nulls(customer)])
        await hostile(t.cdc, [*garbage(customer), *nulls(customer),
                              (customer.encode(), json.dumps({"op": "c", "source": {"table": "orders"},
                                                              "after": {"customer_id": True}}).encode())])
        await hostile(t.rows, [*garbage(customer), *nulls(customer), (customer.encode(), json.dumps(
            {"customerId": customer, "attributes": {"n": BIG_INT}}).encode())])
        await hostile(t.rerouted, [*garbage(customer), *nulls(customer),
                                   (customer.encode(), json.dumps({"kind": "row", "row": {
                                       "table": "customers", "customer_id": customer,
                                       "attributes": {"n": BIG_INT}}}).encode()),
                                   (customer.encode(), b'{"kind": "event", "event": {"id": 1}}'),
                                   (customer.encode(), b'{"kind": "journey_event", "value": 5}')])
        await hostile(t.ticks, [*garbage(customer), *nulls(customer),
                                (customer.encode(), b'{"triggerId": "x", "scheduledAt": "soon"}')])
        await hostile(t.journey_events, [*garbage(customer), *nulls(customer), (customer.encode(), json.dumps(
            {"customerId": customer, "journeyId": journey, "status": "paused"}).encode())])
        for action in ("webhook", "fire_recommend", "enroll_journey", "update_attribute"):
            await hostile(t.action(action), [
                *garbage(customer), *nulls(customer),
                (customer.encode(), command("f" * 300, customer, {"type": action})),  # id too long
                (customer.encode(), command(f"x-{tag}-{action}", customer, {"type": action, "journeyId": 5,
                                                                            "url": 7, "attributes": "nope"}))])
        for topic in t.definition_topics:
            await hostile(topic, [*garbage(customer), (None, b'{"id": "keyless"}'),
                                  (b"bad-" + tag.encode(), json.dumps({"id": "bad", "x": BIG_INT}).encode())],
                          on=0)
        # Firings whose update_attribute must be refused (action dead letters, by firingId).
        await canary(t.streaming, customer, evt("square", amount=10**12, id=f"sq-{tag}"))
        await canary(t.streaming, customer, evt("copy", amount=BIG_INT, id=f"copy-{tag}"))

        # -- canaries, after the corpus on the same partition ----------------------------------
        await canary(t.streaming, customer, evt("canary", id=f"s-{tag}"))
        await canary(t.outcomes, customer, evt("canary", id=f"o-{tag}"))
        await canary(t.schema, customer, evt("canary.schema", id=f"sc-{tag}"))
        await canary(t.cdc, customer, {"op": "c", "source": {"table": "orders"},
                                       "after": {"customer_id": customer, "total": 1}})
        await canary(t.rows, customer, {"customerId": customer, "attributes": {"segment": "canary"}})
        envelope = Event(id=f"r-{tag}", type="canary.rerouted", customer_id=customer, source=Source.STREAMING,
                         timestamp=datetime.now(UTC), fields={}).to_envelope()
        await canary(t.rerouted, customer, {"kind": "event", "event": envelope})
        await canary(t.action("webhook"), customer, command(
            f"wh-{tag}", customer, {"type": "webhook", "url": receiver.url(f"wh-{tag}")}))
        await canary(t.action("fire_recommend"), customer, command(
            f"rec-{tag}", customer, {"type": "fire_recommend", "decisionFlowId": flow}))
        await canary(t.action("enroll_journey"), customer, command(
            f"enr-{tag}", customer, {"type": "enroll_journey", "journeyId": journey}))
        await canary(t.action("update_attribute"), customer, command(
            f"upd-{tag}", customer, {"type": "update_attribute", "attributes": {"touched": "1"}}))
        definition_canary = await canary(t.definitions, f"ok-{tag}", {
            "id": f"ok-{tag}", "source": "streaming", "eventType": "never",
            "action": {"type": "enroll_journey", "journeyId": journey}}, on=0)

        # -- every canary takes effect -------------------------------------------------------------
        for name in triggers:
            await receiver.wait_for(f"{name}-{tag}", 1, timeout=60)
        await receiver.wait_for(f"wh-{tag}", 1, timeout=30)
        await read_until(engine, t.recommendations, lambda v: v.get("firingId") == f"rec-{tag}")
        await read_until(engine, t.enrollments, lambda v: v.get("firingId") == f"enr-{tag}")
        await read_until(engine, t.schema, lambda v: v.get("firingId") == f"upd-{tag}")
        await read_until(engine, t.schema, lambda v: (v.get("after") or {}).get("segment") == "canary")
        # The row exists now: a tick for this partition reaches it; then the enrollment ends.
        await canary(t.ticks, f"tick-{tag}", {"triggerId": f"tick-{tag}",
                                              "scheduledAt": datetime.now(UTC).isoformat()})
        await canary(t.journey_events, customer, {"customerId": customer, "journeyId": journey,
                                                  "status": "completed"})
        await receiver.wait_for(f"tick-{tag}", 1, timeout=30)
        worker = engine.workers[0]
        await worker.wait_for(lambda r: r["counters"].get("journeys.ended", 0) >= 1
                              and r["catalogs"]["trigger"]["offset"] >= definition_canary
                              and f"ok-{tag}" not in r["catalogs"]["trigger"]["rejected"],
                              timeout=30, what="journey ended and definition canary applied")

        # -- every hostile record left a dead letter (an error record for definitions) -------------
        await expect_reported(engine, produced)
        refused = await read_until(engine, t.actions_deadletter,
                                   lambda v: v.get("customerId") == customer and "64-bit" in v["reason"], count=2)
        assert sorted(v["command"]["event"]["type"] for v in refused) == ["copy", "square"]

        # -- alive, and a restart on the same data directory neither crashes nor fires again --------
        assert (await worker.health() or {}).get("status") == "ok"
        # stream, outcome, cdc, schema, rerouted, tick, square and copy
        fired_before = {v["firingId"] for v in await engine.firings(8, settle=2)}
        requests_before = len(receiver.requests)
        worker.stop()
        again = WorkerProcess(kafka_bootstrap, worker.env["TRIGGERS_APP_ID"], worker.env["TRIGGERS_TOPIC_PREFIX"],
                              tmp_path, worker.name, PARTITIONS, ENV).start()
        engine.workers[0] = again
        await again.wait_healthy()
        await canary(t.streaming, customer, evt("canary", id=f"s2-{tag}"))
        await receiver.wait_for(f"stream-{tag}", 2, timeout=60)  # the new canary, processed after any replay
        assert len(receiver.requests) == requests_before + 1, [r.path for r in receiver.requests[requests_before:]]
        fired_after = {v["firingId"] for v in await engine.firings(9, settle=2)}
        assert len(fired_after - fired_before) == 1
        assert again.process is not None and again.process.poll() is None
    finally:
        engine.stop()
        await engine.kafka.stop()
        await receiver.stop()


async def read_until(engine: Deployment, topic: str, where: Callable[[dict[str, Any]], bool],
                     count: int = 1, timeout: float = 30.0) -> list[dict[str, Any]]:
    def matching(records: list[Record]) -> list[dict[str, Any]]:
        return [v for r in records if isinstance(v := parsed(r), dict) and where(v)]

    found = matching(await engine.kafka.read(topic, until=lambda rs: len(matching(rs)) >= count,
                                             timeout=timeout))
    assert len(found) >= count, f"{topic}: {len(found)} of {count} expected records"
    return found


def parsed(record: Record) -> Any:
    """The record's JSON value, or None (the corpus itself sits on some of the topics read)."""
    try:
        return json.loads(record.raw) if record.raw is not None else None
    except ValueError:
        return None


async def expect_reported(engine: Deployment, produced: dict[str, list[int]]) -> None:
    """Each hostile (topic, offset) is named by a record on the topic that reports it."""
    t = engine.topics
    report_topics = {t.deadletter: [], t.actions_deadletter: [], t.errors: []}
    for topic in produced:
        where = (t.errors if topic in t.definition_topics
                 else t.actions_deadletter if topic.startswith(f"{t.prefix}actions.") else t.deadletter)
        report_topics[where].append(topic)
    for report_topic, sources in report_topics.items():
        wanted = {(topic, offset) for topic in sources for offset in produced[topic]}

        def seen(records: list[Record], wanted: set[tuple[str, int]] = wanted) -> set[tuple[str, int]]:
            values = [parsed(r) for r in records]
            return wanted & {(v.get("topic"), v.get("offset")) for v in values if isinstance(v, dict)}

        records = await engine.kafka.read(report_topic, until=lambda rs, s=seen, w=wanted: s(rs) == w,
                                          timeout=60)
        assert seen(records) == wanted, f"{report_topic}: no report for {sorted(wanted - seen(records))}"
        for record in records:
            assert record.raw is not None and len(record.raw) < 1_000_000
            value = parsed(record)
            if isinstance(value, dict) and value.get("size", 0) > 65_536:
                assert value["truncated"] is True
