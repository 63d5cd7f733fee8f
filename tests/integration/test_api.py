"""The worker's HTTP API against a real broker and a real worker, observed on the contract's topics."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.web.api import MAX_BODY_BYTES
from tests.integration.conftest import Deployment, start_deployment
from tests.support.kafka import Record

pytestmark = pytest.mark.integration

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
async def engine(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    deployment = await start_deployment(kafka_bootstrap, tmp_path_factory.mktemp("api"),
                                        env={"TRIGGERS_API_TOKEN": TOKEN})
    yield deployment
    deployment.stop()
    await deployment.kafka.stop()


@pytest.fixture
async def http(engine: Deployment) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=engine.workers[0].url, headers=AUTH, timeout=30) as client:
        yield client


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def webhook_trigger(event_type: str, **overrides: Any) -> dict[str, Any]:
    return {"name": "api test", "source": "streaming", "eventType": event_type,
            "action": {"type": "webhook", "url": "https://example.test/hook"}, **overrides}


async def wait_status(http: httpx.AsyncClient, path: str, status: int, timeout: float = 30) -> httpx.Response:
    """GET `path` until it answers `status` (definitions apply asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        response = await http.get(path)
        if response.status_code == status or time.monotonic() > deadline:
            assert response.status_code == status, (path, response.status_code, response.text)
            return response
        await asyncio.sleep(0.1)


async def put_trigger(http: httpx.AsyncClient, trigger_id: str, definition: dict[str, Any]) -> dict[str, Any]:
    response = await http.put(f"/triggers/{trigger_id}", json=definition)
    assert response.status_code == 202, response.text
    assert response.json() == {"triggerId": trigger_id, "status": "accepted"}
    return (await wait_status(http, f"/triggers/{trigger_id}", 200)).json()  # type: ignore[no-any-return]


async def read_until(engine: Deployment, topic: str, marker: Any, settle: float = 0.5) -> list[Record]:
    """Every record on `topic` up to and including one for which `marker(record)` holds."""
    return await engine.kafka.read(topic, until=lambda rs: any(marker(r) for r in rs), settle=settle)


def of_trigger(trigger_id: str) -> Any:
    return lambda firing: firing["triggerId"] == trigger_id


# ------------------------------------------------------------------------------ health, reads


async def test_health_still_works(http: httpx.AsyncClient) -> None:
    response = await http.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_reads_need_the_token_and_work_with_or_without_trailing_slash(engine: Deployment,
                                                                            http: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=engine.workers[0].url) as anonymous:
        for path in ("/triggers", "/triggers/", "/triggers/no-such-trigger", "/triggers/no-such-trigger/"):
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                refused = await anonymous.get(path, headers=headers)
                assert refused.status_code == 401, (path, headers)
                assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        for path in ("/triggers", "/triggers/"):
            response = await http.get(path)
            assert response.status_code == 200, path
            assert set(response.json()) == {"triggers", "rejected"}
        for path in ("/triggers/no-such-trigger", "/triggers/no-such-trigger/"):
            response = await http.get(path)
            assert response.status_code == 404, path
            assert response.headers["Content-Type"].startswith("application/json")
            assert response.json()["triggerId"] == "no-such-trigger"
        # Only these two need no token.
        assert (await anonymous.get("/metrics")).status_code == 200
        assert (await anonymous.get("/health")).status_code == 200

        for method, path, allow in (("GET", "/events", "POST"), ("PATCH", "/triggers/x", "DELETE, GET, HEAD, PUT"),
                                    ("POST", "/triggers", "GET, HEAD")):
            assert (await anonymous.request(method, path)).status_code == 401, (method, path)
            response = await http.request(method, path)
            assert response.status_code == 405, (method, path)
            assert response.headers["Allow"] == allow and response.json()["error"]


async def test_put_then_get_masks_secrets(engine: Deployment, http: httpx.AsyncClient) -> None:
    trigger_id = unique("secret")
    action = {"type": "webhook", "url": "https://example.test/hook", "secret": "s3cret-value",
              "headers": {"Authorization": "Bearer downstream-credential"}}
    shown = await put_trigger(http, trigger_id, webhook_trigger(unique("t"), action=action, priority=80))
    assert shown["id"] == trigger_id and shown["priority"] == 80
    assert shown["action"]["secret"] != "s3cret-value"
    assert shown["action"]["headers"] == {"Authorization": "**********"}
    assert (await http.get(f"/triggers/{trigger_id}/")).json() == shown

    listing = (await http.get("/triggers")).json()
    listed = [t for t in listing["triggers"] if t["id"] == trigger_id]
    assert listed == [shown]
    assert "s3cret-value" not in str(listing) and "downstream-credential" not in str(listing)

    # What was published is the definition as given (the sinks need the secret), id filled in.
    records = await read_until(engine, engine.topics.definitions, lambda r: r.key == trigger_id)
    [record] = [r for r in records if r.key == trigger_id]
    assert record.value["id"] == trigger_id and record.value["action"]["secret"] == "s3cret-value"


# ------------------------------------------------------------------------------ events


async def test_posted_event_fires_the_trigger(engine: Deployment, http: httpx.AsyncClient) -> None:
    trigger_id, event_type = unique("hv"), unique("transaction")
    await put_trigger(http, trigger_id, webhook_trigger(event_type, conditions=["event.amount > 1000"]))
    customer = unique("c")

    response = await http.post("/events", json={"type": event_type, "customerId": customer, "amount": 1500})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 1 and len(body["ids"]) == 1 and re.fullmatch(r"[0-9a-f]{32}", body["ids"][0])

    [firing] = await engine.firings(1, of_trigger(trigger_id))
    assert firing["customerId"] == customer and firing["eventId"] == body["ids"][0]
    assert firing["event"]["amount"] == 1500

    # Published keyed by customer id, with the generated id in the value.
    records = await read_until(engine, engine.topics.streaming, lambda r: r.key == customer)
    [record] = [r for r in records if r.key == customer]
    assert record.value == {"type": event_type, "customerId": customer, "amount": 1500, "id": body["ids"][0]}


async def test_posted_list_of_events(engine: Deployment, http: httpx.AsyncClient) -> None:
    trigger_id, event_type = unique("list"), unique("signup")
    await put_trigger(http, trigger_id, webhook_trigger(event_type))
    events = [{"type": event_type, "customerId": unique("c"), "id": unique("evt")},
              {"type": event_type, "customerId": unique("c")},
              {"type": unique("other"), "customerId": unique("c")},
              {"type": event_type, "customerId": unique("c"), "timestamp": "2024-05-01T12:00:00Z"}]

    response = await http.post("/events/", json=events)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 4 and body["ids"][0] == events[0]["id"] and len(set(body["ids"])) == 4

    firings = await engine.firings(3, of_trigger(trigger_id))
    assert sorted(f["eventId"] for f in firings) == sorted(body["ids"][i] for i in (0, 1, 3))
    assert sorted(f["customerId"] for f in firings) == sorted(events[i]["customerId"] for i in (0, 1, 3))


async def test_invalid_events_report_every_problem_and_publish_nothing(engine: Deployment,
                                                                       http: httpx.AsyncClient) -> None:
    customer, rejected_type = unique("c"), unique("rejected")
    body = [
        {"type": rejected_type, "customerId": customer},
        {"customerId": customer},
        {"type": rejected_type, "customerId": ""},
        {"type": rejected_type, "customerId": customer, "timestamp": "not a time"},
        ["not", "an", "object"],
        {"type": rejected_type, "customerId": customer, "id": 12},
    ]
    response = await http.post("/events", json=body)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert [e["index"] for e in answer["errors"]] == [1, 2, 3, 4, 5]
    assert all(isinstance(e["error"], str) and e["error"] for e in answer["errors"])
    assert "timestamp" in answer["errors"][2]["error"]

    for raw in (b"not json", b'{"type": "x", "customerId": "c", "amount": NaN}', b""):
        bad = await http.post("/events", content=raw, headers={"Content-Type": "application/json"})
        assert bad.status_code == 400, raw
        assert "error" in bad.json()

    # Same customer, so the same partition: the marker is published after anything rejected.
    marker = unique("marker")
    assert (await http.post("/events", json={"type": marker, "customerId": customer})).status_code == 202
    records = await read_until(engine, engine.topics.streaming,
                               lambda r: r.key == customer and r.value["type"] == marker)
    assert [r.value["type"] for r in records if r.key == customer] == [marker]


async def test_writes_and_reads_need_the_token(engine: Deployment) -> None:
    customer, trigger_id = unique("c"), unique("auth")
    event = {"type": unique("unauthorised"), "customerId": customer}
    definition = {**webhook_trigger(event["type"]), "id": trigger_id}
    async with httpx.AsyncClient(base_url=engine.workers[0].url) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": TOKEN}):
            attempts = [
                await client.post("/events", json=event, headers=headers),
                await client.post("/respond", json={**event, "type": "click"}, headers=headers),
                await client.put(f"/triggers/{trigger_id}", json=definition, headers=headers),
                await client.delete(f"/triggers/{trigger_id}", headers=headers),
                await client.post(f"/triggers/{trigger_id}/test", json={"event": event}, headers=headers),
                await client.get("/triggers", headers=headers),
                await client.get(f"/triggers/{trigger_id}", headers=headers),
                await client.head("/triggers", headers=headers),
            ]
            for response in attempts:
                assert response.status_code == 401, (response.request.url, headers, response.text)
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
                assert response.request.method == "HEAD" or response.json()["error"]

        # Nothing reached the topics: a later authorised write on the same partitions shows it.
        marker = unique("marker")
        ok = await client.post("/events", json={"type": marker, "customerId": customer}, headers=AUTH)
        assert ok.status_code == 202
        events = await read_until(engine, engine.topics.streaming,
                                  lambda r: r.key == customer and r.value["type"] == marker)
        assert [r.value["type"] for r in events if r.key == customer] == [marker]
        marker_id = unique("marker")
        ok = await client.put(f"/triggers/{marker_id}", json=webhook_trigger(marker), headers=AUTH)
        assert ok.status_code == 202
        definitions = await read_until(engine, engine.topics.definitions, lambda r: r.key == marker_id)
        assert not [r for r in definitions if r.key == trigger_id]
        ok = await client.post("/respond", json={"type": marker, "customerId": customer}, headers=AUTH)
        assert ok.status_code == 202
        outcomes = await read_until(engine, engine.topics.outcomes,
                                    lambda r: r.key == customer and r.value["type"] == marker)
        assert [r.value["type"] for r in outcomes if r.key == customer] == [marker]


async def test_oversized_body_is_413_and_publishes_nothing(engine: Deployment, http: httpx.AsyncClient) -> None:
    customer = unique("c")
    big = {"type": unique("big"), "customerId": customer, "blob": "x" * MAX_BODY_BYTES}
    response = await http.post("/events", json=big)
    assert response.status_code == 413, response.text
    assert response.json()["error"]

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the limit still holds
        yield b'{"type": "big", "customerId": "' + customer.encode() + b'", "blob": "'
        for _ in range(MAX_BODY_BYTES // 65536 + 1):
            yield b"x" * 65536
        yield b'"}'

    response = await http.post("/events", content=chunked(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413, response.text

    # Within the body limit but over what the producer accepts for one record: still refused whole.
    too_big_record = [{"type": "small", "customerId": customer},
                      {"type": "big", "customerId": customer, "blob": "x" * (MAX_BODY_BYTES - 200)}]
    response = await http.post("/events", json=too_big_record)
    assert response.status_code == 413, response.text
    assert [e["index"] for e in response.json()["errors"]] == [1]

    fits = {"type": unique("fits"), "customerId": customer, "blob": "x" * 900_000}
    response = await http.post("/events", json=fits)
    assert response.status_code == 202, response.text
    records = await read_until(engine, engine.topics.streaming, lambda r: r.key == customer)
    assert [r.value["type"] for r in records if r.key == customer] == [fits["type"]]


async def test_respond_publishes_outcomes(engine: Deployment, http: httpx.AsyncClient) -> None:
    customer = unique("c")
    outcomes = [{"type": "impression", "customerId": customer, "offerId": "o-1", "decisionId": "d-9"},
                {"type": "click", "customerId": customer, "offerId": "o-1", "channel": "email", "id": "out-1"}]
    response = await http.post("/respond", json=outcomes)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 2 and body["ids"][1] == "out-1"
    single = await http.post("/respond/", json={"type": "conversion", "customerId": customer})
    assert single.status_code == 202 and single.json()["accepted"] == 1

    records = await engine.kafka.read(engine.topics.outcomes,
                                      until=lambda rs: len([r for r in rs if r.key == customer]) >= 3)
    values = [r.value for r in records if r.key == customer]
    assert [v["type"] for v in values] == ["impression", "click", "conversion"]
    assert [v["id"] for v in values] == [body["ids"][0], "out-1", single.json()["ids"][0]]
    assert values[0]["offerId"] == "o-1" and values[1]["channel"] == "email"

    bad = await http.post("/respond", json=[{"type": "click"}, {"customerId": customer}])
    assert bad.status_code == 400
    assert [e["index"] for e in bad.json()["errors"]] == [0, 1]


# ------------------------------------------------------------------------------ definitions


async def test_broken_expression_is_422_and_never_published(engine: Deployment, http: httpx.AsyncClient) -> None:
    trigger_id = unique("broken")
    response = await http.put(f"/triggers/{trigger_id}",
                              json=webhook_trigger("x", conditions=["event.amount > 10", "event.amount >>> 3"]))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["triggerId"] == trigger_id
    assert any("event.amount >>> 3" in error and "conditions[1]" in error for error in body["errors"])

    mismatch = await http.put(f"/triggers/{trigger_id}", json={**webhook_trigger("x"), "id": "another-id"})
    assert mismatch.status_code == 422 and "another-id" in mismatch.json()["errors"][0]
    not_an_object = await http.put(f"/triggers/{trigger_id}", json=["x"])
    assert not_an_object.status_code == 422
    not_json = await http.put(f"/triggers/{trigger_id}", content=b"{nope")
    assert not_json.status_code == 400

    # One partition: the marker definition comes after anything the rejected PUTs could have written.
    marker_id = unique("marker")
    await put_trigger(http, marker_id, webhook_trigger(unique("t")))
    records = await read_until(engine, engine.topics.definitions, lambda r: r.key == marker_id)
    assert not [r for r in records if r.key == trigger_id]
    await wait_status(http, f"/triggers/{trigger_id}", 404)


async def test_delete_removes_the_trigger(engine: Deployment, http: httpx.AsyncClient) -> None:
    trigger_id = unique("gone")
    await put_trigger(http, trigger_id, webhook_trigger(unique("t")))
    response = await http.delete(f"/triggers/{trigger_id}")
    assert response.status_code == 202, response.text
    assert response.json() == {"triggerId": trigger_id, "status": "deleted"}
    await wait_status(http, f"/triggers/{trigger_id}", 404)
    assert trigger_id not in [t["id"] for t in (await http.get("/triggers")).json()["triggers"]]

    records = await read_until(engine, engine.topics.definitions,
                               lambda r: r.key == trigger_id and r.raw is None)
    assert [r.raw is None for r in records if r.key == trigger_id] == [False, True]


# ------------------------------------------------------------------------------ dry runs


async def test_dry_run_explains_without_side_effects(engine: Deployment, http: httpx.AsyncClient) -> None:
    trigger_id, event_type = unique("dry"), unique("transaction")
    await put_trigger(http, trigger_id, webhook_trigger(
        event_type, filters={"channel": ["web", "app"]},
        conditions=["event.amount > 1000", "customer.segment != 'vip'"]))
    event = {"type": event_type, "customerId": unique("c"), "amount": 1500, "channel": "web"}

    fires = await http.post(f"/triggers/{trigger_id}/test", json={"event": event, "customer": {"segment": "std"}})
    assert fires.status_code == 200, fires.text
    result = fires.json()
    assert result["wouldFire"] is True and result["typeMatches"] is True and result["triggerId"] == trigger_id
    assert result["filters"] == [{"field": "channel", "expected": ["web", "app"], "actual": "web", "passed": True}]
    assert [(c["expression"], c["passed"]) for c in result["conditions"]] == [
        ("event.amount > 1000", True), ("customer.segment != 'vip'", True)]

    no_fire = await http.post(f"/triggers/{trigger_id}/test/", json={
        "event": {**event, "amount": 10, "channel": "store"}, "customer": {"segment": "vip"}})
    assert no_fire.status_code == 200, no_fire.text
    result = no_fire.json()
    assert result["wouldFire"] is False
    assert result["filters"][0]["passed"] is False and result["filters"][0]["actual"] == "store"
    assert [(c["expression"], c["result"], c["passed"]) for c in result["conditions"]] == [
        ("event.amount > 1000", False, False), ("customer.segment != 'vip'", False, False)]

    # Without "customer", the customer's stored row is used (none here: attributes are absent).
    stored = await http.post(f"/triggers/{trigger_id}/test", json={"event": event})
    assert stored.status_code == 200, stored.text
    assert stored.json()["customerFrom"] == "table" and stored.json()["event"]["id"] == "dry-run"
    assert stored.json()["conditions"][0]["passed"] is True

    # An unsaved definition can be tried under any id.
    unsaved = await http.post(f"/triggers/{unique('unsaved')}/test", json={
        "event": event, "definition": webhook_trigger(event_type, conditions=["event.amount < 5"])})
    assert unsaved.status_code == 200 and unsaved.json()["wouldFire"] is False
    assert unsaved.json()["conditions"][0]["passed"] is False

    missing = await http.post(f"/triggers/{unique('missing')}/test", json={"event": event})
    assert missing.status_code == 404
    malformed = await http.post(f"/triggers/{trigger_id}/test", json={"event": {"type": event_type}})
    assert malformed.status_code == 400 and "customerId" in malformed.json()["error"]
    broken = await http.post(f"/triggers/{trigger_id}/test",
                             json={"event": event, "definition": webhook_trigger(event_type, conditions=["(("])})
    assert broken.status_code == 422 and broken.json()["errors"]

    # Dry runs fire nothing: a real event afterwards is this trigger's only firing.
    real = await http.post("/events", json={**event, "id": unique("real")})
    assert real.status_code == 202
    firings = await engine.firings(1, of_trigger(trigger_id), settle=1.0)
    assert [f["eventId"] for f in firings] == real.json()["ids"]


# ------------------------------------------------------------------------------ metrics


async def test_metrics_count_the_firings_seen_on_the_topic(engine: Deployment, http: httpx.AsyncClient) -> None:
    trigger_id, event_type = unique("metered"), unique("purchase")
    await put_trigger(http, trigger_id, webhook_trigger(event_type, conditions=["event.amount > 100"]))
    events = [{"type": event_type, "customerId": unique("c"), "amount": amount} for amount in (150, 50, 500, 101, 1)]
    assert (await http.post("/events", json=events)).status_code == 202

    firings = await engine.firings(3, of_trigger(trigger_id), settle=1.5)
    assert len(firings) == 3

    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = response.text
    assert "# TYPE triggers_firings_total counter" in text
    pattern = re.compile(r'^triggers_firings_total\{([^}]*)\} (\S+)$', re.MULTILINE)
    counted = sum(float(value) for labels, value in pattern.findall(text) if f'trigger="{trigger_id}"' in labels)
    assert counted == len(firings)
    assert re.search(r'^triggers_events_in_total\{source="streaming"\} \d', text, re.MULTILINE)


async def test_secrets_never_leak_into_commands_metrics_health_or_logs(
        engine: Deployment, http: httpx.AsyncClient) -> None:
    secret, credential = "leak-check-secret-" + unique("s"), "leak-check-credential-" + unique("c")
    trigger_id, event_type = unique("leak"), unique("t")
    action = {"type": "webhook", "url": "https://example.test/hook", "secret": secret,
              "headers": {"Authorization": f"Bearer {credential}"}}
    await put_trigger(http, trigger_id, webhook_trigger(event_type, action=action))
    assert (await http.post("/events", json={"type": event_type, "customerId": unique("c")})).status_code == 202

    firings = await read_until(engine, engine.topics.firings, lambda r: r.value["triggerId"] == trigger_id)
    commands = await read_until(engine, engine.topics.action("webhook"), lambda r: r.value["triggerId"] == trigger_id)
    exposed = [
        *(r.raw.decode() for r in firings + commands if r.raw),
        (await http.get("/metrics")).text,
        (await http.get("/health")).text,
        (await http.get("/triggers")).text,
        engine.workers[0].log_path.read_text(errors="replace"),
    ]
    for text in exposed:
        assert secret not in text and credential not in text
