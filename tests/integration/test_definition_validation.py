"""Definition validation gaps, end to end: a real worker rejects repeated keys, unsafe webhook
headers and oversize fields arriving on the definitions topic or through the HTTP API, names the
field, and keeps working."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Deployment, start_deployment

pytestmark = pytest.mark.integration

TOKEN = "limits-t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
async def engine(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    deployment = await start_deployment(kafka_bootstrap, tmp_path_factory.mktemp("limits"),
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


def trigger(trigger_id: str, event_type: str, **action: Any) -> dict[str, Any]:
    return {"id": trigger_id, "source": "streaming", "eventType": event_type,
            "action": {"type": "webhook", "url": "https://example.test/hook", **action}}


async def reported_errors(engine: Deployment, trigger_id: str) -> list[str]:
    records = await engine.kafka.read(engine.topics.errors,
                                      until=lambda rs: any(r.key == trigger_id for r in rs))
    (record,) = [r for r in records if r.key == trigger_id]
    return record.value["errors"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(("bad", "expected"), [
    (lambda text: text.replace('"eventType"', '"priority": 90, "priority": 10, "eventType"'),
     "duplicate key 'priority' at top level"),
    (lambda text: text.replace('"X-Team": "a"', '"X-Team": "a", "X-Team": "b"'),
     "duplicate key 'X-Team' at action.headers"),
    (lambda text: text.replace('"X-Team": "a"', '"Host": "evil.test"'),
     "action.headers.Host: header 'Host' is set by the engine or breaks delivery; it cannot be configured"),
    (lambda text: text.replace('"X-Team": "a"', '"X-Team": "a\\r\\nX-Injected: 1"'),
     "action.headers.X-Team: header value must be printable ASCII"),
    (lambda text: text.replace('"eventType"', '"conditions": ' + json.dumps(["1 == 1"] * 51) + ', "eventType"'),
     "conditions: List should have at most 50 items"),
], ids=["duplicate-top", "duplicate-header", "host-header", "crlf-header", "too-many-conditions"])
async def test_bad_definition_on_the_topic_is_rejected_with_the_field_named(
        engine: Deployment, bad: Any, expected: str) -> None:
    trigger_id, event_type = unique("bad"), unique("purchase")
    good = json.dumps(trigger(trigger_id, event_type, headers={"X-Team": "a"}))
    await engine.put_definition(good.encode(), trigger_id=trigger_id)
    await engine.put_definition(bad(good).encode(), trigger_id=trigger_id)

    errors = await reported_errors(engine, trigger_id)
    assert any(error.startswith(expected) for error in errors), errors
    report = await engine.workers[0].health()
    assert report is not None and trigger_id in report["rejectedDefinitions"]
    # The worker goes on: a valid definition published after the bad one is applied.
    await engine.put_definition(good.encode(), trigger_id=trigger_id)
    report = await engine.workers[0].health()
    assert report is not None and trigger_id not in report["rejectedDefinitions"]


async def test_put_refuses_repeated_keys_and_unsafe_headers(http: httpx.AsyncClient) -> None:
    trigger_id, event_type = unique("put"), unique("purchase")
    body = json.dumps(trigger(trigger_id, event_type, headers={"X-Team": "a"}))

    repeated = await http.put(f"/triggers/{trigger_id}", content=body.replace('"X-Team": "a"',
                                                                              '"X-Team": "a", "X-Team": "b"'),
                              headers={"Content-Type": "application/json"})
    assert repeated.status_code == 400, repeated.text
    assert "duplicate key 'X-Team' at action.headers" in repeated.json()["error"]

    unsafe = await http.put(f"/triggers/{trigger_id}", json=trigger(trigger_id, event_type,
                                                                    headers={"Content-Length": "0"}))
    assert unsafe.status_code == 422, unsafe.text
    assert any(e.startswith("action.headers.Content-Length: ") for e in unsafe.json()["errors"])

    assert (await http.get(f"/triggers/{trigger_id}")).status_code == 404  # nothing was published
    accepted = await http.put(f"/triggers/{trigger_id}", content=body, headers={"Content-Type": "application/json"})
    assert accepted.status_code == 202, accepted.text
