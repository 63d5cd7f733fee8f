"""The contract's core topics, observed from outside against a real broker and a real worker."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.integration.conftest import Deployment

pytestmark = pytest.mark.integration


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def webhook_trigger(trigger_id: str, event_type: str, **overrides: Any) -> dict[str, Any]:
    return {
        "id": trigger_id,
        "name": f"test {trigger_id}",
        "source": "streaming",
        "eventType": event_type,
        "action": {"type": "webhook", "url": "https://example.test/hook"},
        **overrides,
    }


def of_trigger(*trigger_ids: str) -> Any:
    return lambda firing: firing["triggerId"] in trigger_ids


async def test_matching_event_fires_action_and_firing_record(engine: Deployment) -> None:
    trigger_id, event_type = unique("hv"), unique("transaction")
    await engine.put_definition(webhook_trigger(
        trigger_id, event_type, filters={"channel": "web"},
        conditions=["event.amount > 1000", "customer.segment != 'vip'"], priority=75))

    await engine.send_event({"type": event_type, "customerId": "c-1", "amount": 50,
                             "channel": "web"})
    await engine.send_event({"type": event_type, "customerId": "c-2", "amount": 1500,
                             "channel": "store"})
    await engine.send_event({"type": event_type, "customerId": "c-3", "amount": 1500,
                             "channel": "web", "id": "evt-1"})

    firings = await engine.firings(1, of_trigger(trigger_id))
    assert [f["customerId"] for f in firings] == ["c-3"]
    firing = firings[0]
    assert set(firing) == {"firingId", "triggerId", "priority", "customerId", "eventId",
                           "firedAt", "action", "event", "definitionVersion"}
    assert firing["eventId"] == "evt-1" and firing["priority"] == 75
    assert firing["action"] == {"type": "webhook", "url": "https://example.test/hook",
                                "signed": False, "headerNames": []}
    assert firing["event"]["amount"] == 1500 and firing["event"]["type"] == event_type
    commands = await engine.firings(1, of_trigger(trigger_id),
                                    topic=engine.topics.action("webhook"))
    assert commands == firings
    report = await engine.workers[0].health()
    assert report is not None and report["broker"]["connected"] is True
    assert report["counters"]["firings"] >= 1


async def test_triggers_fire_in_descending_priority_ties_by_id(engine: Deployment) -> None:
    event_type = unique("signup")
    ids = {"low": unique("p10"), "b": unique("b-p50"), "top": unique("p90")}
    ids["a"] = "a" + ids["b"][1:]  # same priority as "b", sorts before it
    for name, priority in (("low", 10), ("b", 50), ("top", 90), ("a", 50)):
        await engine.put_definition(webhook_trigger(ids[name], event_type, priority=priority))

    await engine.send_event({"type": event_type, "customerId": unique("c")})

    firings = await engine.firings(4, of_trigger(*ids.values()))
    assert [f["triggerId"] for f in firings] == [ids["top"], ids["a"], ids["b"], ids["low"]]


async def test_cooldown_blocks_refiring_for_the_same_customer(engine: Deployment) -> None:
    trigger_id, event_type = unique("cool"), unique("login")
    await engine.put_definition(webhook_trigger(trigger_id, event_type, cooldownMinutes=60))
    start = datetime.now(UTC) - timedelta(hours=3)
    customer, other = unique("c"), unique("c")

    def event(customer_id: str, minutes: int) -> dict[str, Any]:
        at = (start + timedelta(minutes=minutes)).isoformat()
        return {"type": event_type, "customerId": customer_id, "timestamp": at,
                "id": f"{customer_id}-{minutes}"}

    for minutes in (0, 10, 59):      # first fires, the rest are inside the window
        await engine.send_event(event(customer, minutes))
    await engine.send_event(event(other, 5))  # another customer has its own cooldown
    await engine.send_event(event(customer, 61))  # window over (event time)

    firings = await engine.firings(3, of_trigger(trigger_id), settle=2.0)
    assert sorted(f["eventId"] for f in firings) == sorted(
        [f"{customer}-0", f"{other}-5", f"{customer}-61"])


async def test_tombstone_deletes_a_definition(engine: Deployment) -> None:
    doomed, witness, event_type = unique("doomed"), unique("witness"), unique("click-ish")
    await engine.put_definition(webhook_trigger(doomed, event_type, priority=60))
    await engine.put_definition(webhook_trigger(witness, event_type, priority=40))
    await engine.send_event({"type": event_type, "customerId": "c-before", "id": unique("e")})
    assert len(await engine.firings(2, of_trigger(doomed, witness))) == 2

    await engine.put_definition(None, trigger_id=doomed)
    await engine.send_event({"type": event_type, "customerId": "c-after", "id": unique("e")})

    firings = await engine.firings(3, of_trigger(doomed, witness), settle=2.0)
    after = [f["triggerId"] for f in firings if f["customerId"] == "c-after"]
    assert after == [witness]


async def test_invalid_definition_is_reported_and_replaces_nothing_half_way(
        engine: Deployment) -> None:
    trigger_id, healthy, event_type = unique("broken"), unique("healthy"), unique("purchase")
    await engine.put_definition(webhook_trigger(trigger_id, event_type, priority=70))
    await engine.put_definition(webhook_trigger(healthy, event_type, priority=30))

    broken = webhook_trigger(trigger_id, event_type, conditions=["event.amount >", "__import__('os')"],
                             priority=101)
    await engine.put_definition(broken)

    errors = [r.value for r in await engine.kafka.read(
        engine.topics.errors, until=lambda rs: any(r.key == trigger_id for r in rs))
        if r.value["triggerId"] == trigger_id]
    assert len(errors) == 1
    assert "priority" in errors[0]["error"]
    report = await engine.workers[0].health()
    assert report is not None and trigger_id in report["rejectedDefinitions"]

    # The previous valid version is gone too (documented), the other trigger still works.
    await engine.send_event({"type": event_type, "customerId": unique("c")})
    firings = await engine.firings(1, of_trigger(trigger_id, healthy), settle=2.0)
    assert [f["triggerId"] for f in firings] == [healthy]


@pytest.mark.parametrize(("raw", "reason"), [
    (b"{not json", "not valid JSON"),
    (b'{"customerId": "c-1"}', "missing required field 'type'"),
    (b'{"type": "transaction"}', "missing required field 'customerId'"),
    (b'{"type": "transaction", "customerId": 42}', "'customerId' must be a string, not int"),
    (b'[1, 2]', "JSON object"),
])
async def test_malformed_events_are_dead_lettered_and_processing_goes_on(
        engine: Deployment, raw: bytes, reason: str) -> None:
    marker = unique("bad")
    await engine.send_event(raw, key=marker)

    letters = [r.value for r in await engine.kafka.read(
        engine.topics.deadletter, until=lambda rs: any(r.key == marker for r in rs))
        if r.key == marker]
    assert len(letters) == 1
    assert reason in letters[0]["reason"]
    assert base64.b64decode(letters[0]["valueBase64"]) == raw
    assert letters[0]["topic"] == engine.topics.streaming

    trigger_id, event_type = unique("after-bad"), unique("ping")
    await engine.put_definition(webhook_trigger(trigger_id, event_type))
    await engine.send_event({"type": event_type, "customerId": marker})
    assert len(await engine.firings(1, of_trigger(trigger_id))) == 1


async def test_cdc_events_are_matched_by_table_and_operation(engine: Deployment) -> None:
    table = unique("orders").replace("-", "_")
    trigger_id = unique("cdc")
    await engine.put_definition({
        "id": trigger_id, "source": "cdc", "eventType": f"{table}.insert",
        "filters": {"status": ["paid", "completed"]}, "conditions": ["event.total > 50"],
        "action": {"type": "fire_recommend", "decisionFlowId": "next-best-offer"}})
    customer = unique("c")

    def change(op: str, status: str, wrapped: bool) -> dict[str, Any]:
        payload = {"op": op, "before": None, "source": {"table": table}, "ts_ms": 1_700_000_000_000,
                   "after": {"id": 7, "customer_id": customer, "status": status, "total": 99}}
        return {"schema": {"type": "struct"}, "payload": payload} if wrapped else payload

    # Debezium keys by primary key, so these must be re-routed to the customer's partition.
    await engine.send_event(change("c", "paid", wrapped=True), key='{"id": 7}',
                            topic=engine.topics.cdc)
    await engine.send_event(change("r", "completed", wrapped=False), key='{"id": 8}',
                            topic=engine.topics.cdc)
    await engine.send_event(change("c", "cancelled", wrapped=False), key='{"id": 9}',
                            topic=engine.topics.cdc)
    await engine.send_event(change("u", "paid", wrapped=False), key='{"id": 10}',
                            topic=engine.topics.cdc)

    firings = await engine.firings(2, of_trigger(trigger_id), settle=2.0)
    # Different primary keys sit in different CDC partitions: no order between them.
    assert sorted(f["event"]["status"] for f in firings) == ["completed", "paid"]
    assert all(f["customerId"] == customer and f["event"]["type"] == f"{table}.insert"
               for f in firings)


async def test_customer_rows_loaded_on_schema_rows_are_read_by_conditions(
        engine: Deployment) -> None:
    trigger_id, event_type = unique("gold"), unique("visit")
    gold, silver = unique("c"), unique("c")
    await engine.put_definition(webhook_trigger(trigger_id, event_type,
                                                conditions=["customer.tier == 'gold'"]))
    for customer, tier in ((gold, "gold"), (silver, "silver")):
        await engine.kafka.send(engine.topics.rows, customer,
                                {"table": "customers", "customerId": customer,
                                 "attributes": {"tier": tier}})
    changes = await engine.kafka.read(
        engine.topics.schema, until=lambda rs: {gold, silver} <= {r.key for r in rs})
    change = next(r.value for r in changes if r.key == gold)
    assert change["type"] == "customers.insert" and change["after"]["tier"] == "gold"

    for customer in (gold, silver):
        await engine.send_event({"type": event_type, "customerId": customer})

    firings = await engine.firings(1, of_trigger(trigger_id), settle=2.0)
    assert [f["customerId"] for f in firings] == [gold]


async def test_event_keyed_on_the_wrong_partition_is_still_evaluated_once(
        engine: Deployment) -> None:
    trigger_id, event_type, customer = unique("mis"), unique("tap"), unique("c")
    await engine.put_definition(webhook_trigger(trigger_id, event_type))
    for partition in range(4):  # only one of these is the customer's own partition
        await engine.kafka.send(engine.topics.streaming, customer,
                                {"type": event_type, "customerId": customer,
                                 "id": f"{customer}-{partition}"}, partition=partition)

    firings = await engine.firings(4, of_trigger(trigger_id), settle=2.0)
    assert sorted(f["eventId"] for f in firings) == [f"{customer}-{p}" for p in range(4)]
