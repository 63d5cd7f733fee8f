"""The four action sinks against a real broker, a real worker and a real local HTTP server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.conftest import Deployment, start_deployment
from tests.support.receiver import Receiver

pytestmark = pytest.mark.integration

FAST_RETRIES = {
    "TRIGGERS_ALLOW_PRIVATE_URLS": "1",  # the receiver listens on 127.0.0.1
    "TRIGGERS_WEBHOOK_RETRY_SCHEDULE": "0,0.05s,0.2s,0.2s",  # four attempts
    "TRIGGERS_WEBHOOK_TIMEOUT_S": "1",
}


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    server = await Receiver().start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
async def engine(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    deployment = await start_deployment(kafka_bootstrap, tmp_path_factory.mktemp("sinks"), env=FAST_RETRIES)
    yield deployment
    deployment.stop()
    await deployment.kafka.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def trigger(engine: Deployment, event_type: str, action: dict[str, Any], **fields: Any) -> str:
    trigger_id = unique("t")
    await engine.put_definition({"id": trigger_id, "source": "streaming", "eventType": event_type,
                                 "action": action, **fields})
    return trigger_id


async def dead_letters(engine: Deployment, firing_filter: Any, count: int = 1) -> list[dict[str, Any]]:
    records = await engine.kafka.read(
        engine.topics.actions_deadletter,
        until=lambda rs: len([r for r in rs if firing_filter(r.value)]) >= count)
    return [r.value for r in records if firing_filter(r.value)]


# -- webhook ------------------------------------------------------------------------------------


async def test_webhook_is_signed_so_a_receiver_can_verify_it_from_the_docs(
        engine: Deployment, receiver: Receiver) -> None:
    path, event_type, secret = unique("signed"), unique("purchase"), "whsec-test-secret"
    trigger_id = await trigger(engine, event_type, {"type": "webhook", "url": receiver.url(path),
                                                    "secret": secret, "headers": {"X-Team": "growth"}})
    await engine.send_event({"type": event_type, "customerId": unique("c"), "amount": 12})

    await receiver.wait_for(path, 1)
    request = receiver.to(path)[0]
    body = json.loads(request.body)
    assert body["triggerId"] == trigger_id and body["event"]["amount"] == 12
    assert request.headers["Idempotency-Key"] == body["firingId"] == request.headers["webhook-id"]
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Team"] == "growth"
    # Verification exactly as docs/contract.md describes it (Standard Webhooks):
    signed = f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode() + request.body
    expected = base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()
    assert request.headers["webhook-signature"] == f"v1,{expected}"
    assert secret not in request.body.decode()


async def test_payload_template_is_rendered(engine: Deployment, receiver: Receiver) -> None:
    path, event_type = unique("templated"), unique("order")
    await trigger(engine, event_type, {"type": "webhook", "url": receiver.url(path), "payload": {
        "text": "Order of {{ event.amount }} by {{ customer.tier }}", "amount": "{{ event.amount * 2 }}",
        "firing": "{{ firing.firingId }}", "trigger": "{{ trigger.id }}"}})
    customer = unique("c")
    await engine.kafka.send(engine.topics.rows, customer, {"customerId": customer, "attributes": {"tier": "gold"}})
    await engine.kafka.read(engine.topics.schema, until=lambda rs: any(r.key == customer for r in rs))
    await engine.send_event({"type": event_type, "customerId": customer, "amount": 21})

    await receiver.wait_for(path, 1)
    body = json.loads(receiver.to(path)[0].body)
    assert body["text"] == "Order of 21 by gold" and body["amount"] == 42
    assert body["trigger"].startswith("t-") and len(body["firing"]) == 36


async def test_webhook_retries_503_then_delivers_exactly_once(engine: Deployment, receiver: Receiver) -> None:
    path, event_type = unique("flaky"), unique("signup")
    receiver.script(path, 503, 503)
    await trigger(engine, event_type, {"type": "webhook", "url": receiver.url(path)})
    await engine.send_event({"type": event_type, "customerId": unique("c")})

    await receiver.wait_for(path, 1, status=200)
    await engine.kafka.read(engine.topics.firings, timeout=1.5)  # time for any extra delivery
    assert [r.answered for r in receiver.to(path)] == [503, 503, 200]
    assert len({r.headers["Idempotency-Key"] for r in receiver.to(path)}) == 1


async def test_webhook_4xx_is_dead_lettered_without_retry(engine: Deployment, receiver: Receiver) -> None:
    path, event_type = unique("gone"), unique("click")
    receiver.script(path, 404)
    trigger_id = await trigger(engine, event_type, {"type": "webhook", "url": receiver.url(path)})
    await engine.send_event({"type": event_type, "customerId": unique("c")})

    [letter] = await dead_letters(engine, lambda v: v.get("triggerId") == trigger_id)
    assert letter["reason"] == "HTTP 404: not retryable"
    assert [a["status"] for a in letter["attempts"]] == [404]
    assert letter["command"]["action"]["url"] == receiver.url(path)
    assert len(receiver.to(path)) == 1


async def test_webhook_timeouts_are_retried_then_dead_lettered(engine: Deployment, receiver: Receiver) -> None:
    path, event_type = unique("slow"), unique("view")
    receiver.script(path, delay=2.5)  # longer than TRIGGERS_WEBHOOK_TIMEOUT_S=1
    trigger_id = await trigger(engine, event_type, {"type": "webhook", "url": receiver.url(path)})
    await engine.send_event({"type": event_type, "customerId": unique("c")})

    [letter] = await dead_letters(engine, lambda v: v.get("triggerId") == trigger_id)
    assert letter["reason"].startswith("gave up after 4 attempts")
    assert all("Timeout" in (a["error"] or "") for a in letter["attempts"])


async def test_a_replayed_command_is_performed_once(engine: Deployment, receiver: Receiver) -> None:
    path, event_type, customer = unique("replay"), unique("pay"), unique("c")
    await trigger(engine, event_type, {"type": "webhook", "url": receiver.url(path)})
    await engine.send_event({"type": event_type, "customerId": customer})
    await receiver.wait_for(path, 1)
    [command] = [r for r in await engine.kafka.read(engine.topics.action("webhook"),
                                                   until=lambda rs: any(r.key == customer for r in rs))
                 if r.key == customer]

    # What a crash before the offset commit looks like downstream: the same command again.
    skipped_before = ((await engine.workers[0].health()) or {}).get("counters", {}).get("webhook.replays_skipped", 0)
    await engine.kafka.send(engine.topics.action("webhook"), customer, command.raw)
    await engine.kafka.send(engine.topics.action("webhook"), customer, command.raw)
    # Wait until the sink has seen both copies, then check nothing was delivered again.
    await engine.workers[0].wait_for(
        lambda r: r["counters"].get("webhook.replays_skipped", 0) >= skipped_before + 2, timeout=30,
        what="replays skipped")
    assert len(receiver.to(path)) == 1


# -- enroll_journey -----------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "statuses"), [
    ("skip_if_active", ["enrolled", "skipped"]),
    ("restart", ["enrolled", "restarted"]),
    ("allow_multiple", ["enrolled", "enrolled"]),
])
async def test_journey_deduplication_modes(engine: Deployment, mode: str, statuses: list[str]) -> None:
    journey, event_type, customer = unique("journey"), unique("visit"), unique("c")
    await engine.put(engine.topics.journey_definitions, "journey", journey,
                     {"id": journey, "name": "test", "maxDurationDays": 30})
    await trigger(engine, event_type, {"type": "enroll_journey", "journeyId": journey, "deduplication": mode})
    for _ in range(2):
        await engine.send_event({"type": event_type, "customerId": customer})

    enrollments = await enrollments_of(engine, customer, 2)
    assert [e["status"] for e in enrollments] == statuses
    assert all(e["journeyId"] == journey for e in enrollments)
    ids = [e["enrollmentId"] for e in enrollments]
    assert (ids[0] == ids[1]) == (mode == "skip_if_active")


async def enrollments_of(engine: Deployment, customer: str, count: int) -> list[dict[str, Any]]:
    records = await engine.kafka.read(engine.topics.enrollments, settle=1.0,
                                      until=lambda rs: len([r for r in rs if r.key == customer]) >= count)
    return [r.value for r in records if r.key == customer]


async def test_journey_completion_ends_the_active_enrollment(engine: Deployment) -> None:
    journey, event_type, customer = unique("journey"), unique("visit"), unique("c")
    await engine.put(engine.topics.journey_definitions, "journey", journey, {"id": journey})
    await trigger(engine, event_type, {"type": "enroll_journey", "journeyId": journey})
    await engine.send_event({"type": event_type, "customerId": customer})
    [first] = await enrollments_of(engine, customer, 1)

    ended_before = ((await engine.workers[0].health()) or {}).get("counters", {}).get("journeys.ended", 0)
    await engine.kafka.send(engine.topics.journey_events, customer, {
        "customerId": customer, "journeyId": journey, "enrollmentId": first["enrollmentId"],
        "status": "completed"})
    await engine.workers[0].wait_for(lambda r: r["counters"].get("journeys.ended", 0) > ended_before,
                                     timeout=30, what="enrollment ended")
    await engine.send_event({"type": event_type, "customerId": customer})

    enrollments = await enrollments_of(engine, customer, 2)
    assert [e["status"] for e in enrollments] == ["enrolled", "enrolled"]
    assert enrollments[1]["enrollmentId"] != first["enrollmentId"]


async def test_unknown_journey_is_dead_lettered(engine: Deployment) -> None:
    event_type = unique("visit")
    trigger_id = await trigger(engine, event_type, {"type": "enroll_journey", "journeyId": "no-such-journey"})
    await engine.send_event({"type": event_type, "customerId": unique("c")})
    [letter] = await dead_letters(engine, lambda v: v.get("triggerId") == trigger_id)
    assert letter["reason"] == "unknown journey 'no-such-journey'"


# -- fire_recommend -----------------------------------------------------------------------------


async def test_decision_flow_ranks_eligible_offers_and_delivers(engine: Deployment, receiver: Receiver) -> None:
    flow, event_type, customer, path = unique("flow"), unique("order"), unique("c"), unique("recs")
    await engine.put(engine.topics.decision_flow_definitions, "decision_flow", flow, {
        "id": flow, "maxOffers": 2, "offers": [
            {"id": "b-high", "score": "event.total / 10", "title": "B"},
            {"id": "a-tie", "score": "5"},
            {"id": "c-tie", "score": "5"},
            {"id": "not-eligible", "conditions": ["customer.tier == 'platinum'"], "score": "100"}]})
    await trigger(engine, event_type, {"type": "fire_recommend", "decisionFlowId": flow,
                                       "channel": "email", "deliveryUrl": receiver.url(path)})
    await engine.send_event({"type": event_type, "customerId": customer, "total": 90})

    records = await engine.kafka.read(engine.topics.recommendations,
                                      until=lambda rs: any(r.key == customer for r in rs))
    [recommendation] = [r.value for r in records if r.key == customer]
    assert [o["id"] for o in recommendation["offers"]] == ["b-high", "a-tie"]
    assert recommendation["offers"][0] == {"id": "b-high", "score": 9.0, "title": "B"}
    assert recommendation["decisionFlowId"] == flow and recommendation["channel"] == "email"
    await receiver.wait_for(path, 1)
    assert json.loads(receiver.to(path)[0].body) == recommendation


# -- update_attribute ---------------------------------------------------------------------------


async def test_updated_attribute_is_seen_by_a_following_condition(engine: Deployment) -> None:
    upgrade, notify, customer = unique("upgrade"), unique("notify"), unique("c")
    await trigger(engine, upgrade, {"type": "update_attribute",
                                    "attributes": {"tier": "'gold'", "lastLargeAmount": "event.amount"}})
    notify_id = await trigger(engine, notify, {"type": "webhook", "url": "https://example.test/x"},
                              conditions=["customer.tier == 'gold'"])
    await engine.send_event({"type": notify, "customerId": customer, "id": unique("before")})
    await engine.send_event({"type": upgrade, "customerId": customer, "amount": 5000})
    changes = await engine.kafka.read(engine.topics.schema, until=lambda rs: any(r.key == customer for r in rs))
    [change] = [r.value for r in changes if r.key == customer]
    assert change["type"] == "customers.insert" and change["after"]["tier"] == "gold"
    assert change["changed"] == ["customerId", "lastLargeAmount", "tier"] and change["depth"] == 1

    await engine.send_event({"type": notify, "customerId": customer, "id": unique("after")})
    firings = await engine.firings(1, lambda f: f["triggerId"] == notify_id, settle=1.5)
    assert [f["eventId"].split("-")[0] for f in firings] == ["after"]


async def test_type_error_dead_letters_and_leaves_the_row_untouched(engine: Deployment) -> None:
    table, event_type, customer = unique("accounts"), unique("set"), unique("c")
    await engine.put(engine.topics.table_definitions, "schema_table", table,
                     {"name": table, "columns": {"limit": "number"}})
    trigger_id = await trigger(engine, event_type, {"type": "update_attribute", "table": table,
                                                    "attributes": {"limit": "event.limit"}})
    await engine.send_event({"type": event_type, "customerId": customer, "limit": "lots"})
    [letter] = await dead_letters(engine, lambda v: v.get("triggerId") == trigger_id)
    assert "column 'limit': expected number, got str 'lots'" in letter["reason"]

    await engine.send_event({"type": event_type, "customerId": customer, "limit": 7})
    changes = await engine.kafka.read(engine.topics.schema, settle=1.0,
                                      until=lambda rs: any(r.key == customer for r in rs))
    assert [r.value["after"]["limit"] for r in changes if r.key == customer] == [7]


async def test_a_trigger_updating_what_it_listens_to_stops_at_the_depth_limit(engine: Deployment) -> None:
    customer = unique("c")
    trigger_id = unique("loop")
    await engine.put_definition({
        "id": trigger_id, "source": "schema_table", "eventType": "customers.update",
        "conditions": [f"event.customerId == '{customer}'"],
        "action": {"type": "update_attribute", "attributes": {"counter": "event.after.counter + 1"}}})
    await engine.kafka.send(engine.topics.rows, customer, {"customerId": customer, "attributes": {"counter": 0}})
    await engine.kafka.send(engine.topics.rows, customer, {"customerId": customer, "attributes": {"counter": 1}})

    [letter] = await dead_letters(engine, lambda v: v.get("triggerId") == trigger_id)
    assert letter["reason"].startswith("update chain stopped at depth 4")
    changes = await engine.kafka.read(engine.topics.schema, settle=1.0,
                                      until=lambda rs: any(r.key == customer and r.value["depth"] == 3 for r in rs))
    assert [r.value["after"]["counter"] for r in changes if r.key == customer] == [0, 1, 2, 3, 4]


async def test_a_slow_endpoint_does_not_hold_up_deliveries_elsewhere(
        engine: Deployment, receiver: Receiver) -> None:
    slow, fast, burst_type, single_type = unique("stuck"), unique("quick"), unique("burst"), unique("single")
    receiver.script(slow, delay=2.5)  # every attempt times out (TRIGGERS_WEBHOOK_TIMEOUT_S=1)
    await trigger(engine, burst_type, {"type": "webhook", "url": receiver.url(slow)})
    await trigger(engine, single_type, {"type": "webhook", "url": receiver.url(fast)})
    customers = [unique("c") for _ in range(30)]
    for customer in customers:
        await engine.send_event({"type": burst_type, "customerId": customer})
    for customer in customers[:5]:  # same customers, so the same partitions as the burst
        await engine.send_event({"type": single_type, "customerId": customer})

    # 30 slow deliveries need 30 x 4 attempts of 1 s (about 18 s over 8 slots); the fast
    # ones must not wait for them.
    await receiver.wait_for(fast, 5, timeout=12.0)
    assert len(receiver.to(slow)) < 30 * 4
