"""Without a token (loopback, `make run`) the console works without signing in, like the API;
and the console's own endpoints answer as docs/contract.md says, against a real worker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.integration.conftest import Deployment, start_deployment

pytestmark = [pytest.mark.integration, pytest.mark.browser]


@pytest.fixture(scope="module")
async def open_console(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    """Two workers without a token: each owns one of the two partitions."""
    deployment = await start_deployment(kafka_bootstrap, tmp_path_factory.mktemp("open-console"), workers=2,
                                        partitions=2)
    yield deployment
    deployment.stop()


async def call(console: Deployment, method: str, path: str, body: Any = None, worker: int = 0) -> httpx.Response:
    async with httpx.AsyncClient(base_url=console.workers[worker].url, timeout=30) as client:
        return await client.request(method, path, json=body)


def valid(trigger_id: str, **changes: Any) -> dict[str, Any]:
    return {"id": trigger_id, "source": "streaming", "eventType": "purchase",
            "action": {"type": "update_attribute", "attributes": {"last": "event.amount"}}, **changes}


async def test_without_a_token_the_console_needs_no_sign_in(open_console: Deployment, page: Page) -> None:
    trigger_id = "open-" + uuid.uuid4().hex[:8]
    assert (await call(open_console, "PUT", f"/triggers/{trigger_id}", valid(trigger_id))).status_code == 202
    await page.goto(f"{open_console.workers[0].url}/ui")
    await expect(page.get_by_role("heading", name="Triggers", exact=True)).to_be_visible()
    await expect(page.locator("#trigger-table tbody tr", has_text=trigger_id)).to_contain_text("live")
    await expect(page.locator("#who")).to_have_text("")
    assert await page.evaluate("sessionStorage.length") == 0


async def test_validate_names_each_field_and_warns_of_a_refused_address(open_console: Deployment) -> None:
    good = await call(open_console, "POST", "/triggers/validate", valid("v-1"))
    assert good.status_code == 200 and good.json() == {"valid": True, "errors": [], "warnings": []}
    bad = await call(open_console, "POST", "/triggers/validate",
                     valid("v-1", priority=0, conditions=["evnt.amount > 1"]))
    assert bad.json()["valid"] is False
    assert {e["field"] for e in bad.json()["errors"]} == {"priority", "conditions[0]"}
    hook = await call(open_console, "POST", "/triggers/validate",
                      valid("v-1", action={"type": "webhook", "url": "http://127.0.0.1:9/x"}))
    assert hook.json()["valid"] is True
    assert hook.json()["warnings"][0]["field"] == "action.url"
    assert "loopback" in hook.json()["warnings"][0]["message"]
    assert (await call(open_console, "POST", "/triggers/validate", [1])).json()["valid"] is False
    # The path is the console's for POST only: GET reads the trigger named "validate".
    read = await call(open_console, "GET", "/triggers/validate")
    assert read.status_code == 404 and read.json()["error"] == "no trigger 'validate'"


async def test_journeys_and_decision_flows_are_listed(open_console: Deployment) -> None:
    journey_id = "j-" + uuid.uuid4().hex[:8]
    await open_console.put(open_console.topics.journey_definitions, "journey", journey_id,
                           {"id": journey_id, "name": "Onboarding"})
    journeys = (await call(open_console, "GET", "/journeys")).json()["journeys"]
    assert {"id": journey_id, "name": "Onboarding"} in journeys
    assert (await call(open_console, "GET", "/decisionflows")).json() == {"decisionFlows": []}


async def test_recent_events_of_a_type_newest_first(open_console: Deployment) -> None:
    event_type = "visit-" + uuid.uuid4().hex[:8]
    for n in range(3):  # a second apart: newest is by the event's time
        await open_console.send_event({"type": event_type, "customerId": f"c-{n}", "n": n,
                                       "timestamp": f"2026-12-01T10:00:0{n}Z"})
    await open_console.send_event({"type": "other", "customerId": "c-9"})
    answer = (await call(open_console, "GET", f"/events/recent?source=streaming&type={event_type}&limit=2")).json()
    assert [e["n"] for e in answer["events"]] == [2, 1]
    assert answer["events"][0]["source"] == "streaming" and answer["events"][0]["id"]


async def test_bad_queries_and_replay_requests_are_refused_with_the_field(open_console: Deployment) -> None:
    for path, text in [("/events/recent?source=bogus", "'source'"), ("/events/recent?source=scheduled", "ticks"),
                       ("/activity?kind=bogus", "'kind'"), ("/activity?limit=x", "'limit'"),
                       ("/activity?limit=100000", "'limit'")]:
        response = await call(open_console, "GET", path)
        assert response.status_code == 400 and text in response.json()["error"], path
    for body, text in [({}, "records"), ({"records": []}, "records"),
                       ({"records": [{"topic": "x", "partition": 0, "offset": 0}]}, "records[0].topic"),
                       ({"records": [{"topic": open_console.topics.deadletter, "partition": -1, "offset": 0}]},
                        "records[0]")]:
        response = await call(open_console, "POST", "/deadletters/replay", body)
        assert response.status_code == 400 and text in response.json()["error"], body
    missing = await call(open_console, "POST", "/deadletters/replay",
                         {"records": [{"topic": open_console.topics.deadletter, "partition": 0, "offset": 10**6}]})
    assert missing.json() == {"replayed": 0, "skipped": 1, "results": [
        {"topic": open_console.topics.deadletter, "partition": 0, "offset": 10**6, "status": "skipped",
         "reason": "no dead letter at this offset"}]}


async def test_an_event_dead_letter_is_replayed_to_its_topic(open_console: Deployment) -> None:
    customer = "c-" + uuid.uuid4().hex[:8]
    await open_console.send_event(b'{"type": "purchase"}', key=customer)  # no customerId: dead-lettered
    records: list[dict[str, Any]] = []
    for _ in range(60):
        answer = (await call(open_console, "GET", f"/activity?kind=deadletters&customer={customer}")).json()
        records = answer["records"]
        if records:
            break
        await open_console.kafka.read(open_console.topics.deadletter, timeout=0.5)
    assert records and "customerId" in records[0]["value"]["reason"]
    assert "valueBase64" not in records[0]["value"]
    where = {name: records[0][name] for name in ("topic", "partition", "offset")}
    replayed = (await call(open_console, "POST", "/deadletters/replay", {"records": [where]})).json()
    assert replayed["replayed"] == 1 and replayed["results"][0]["to"] == open_console.topics.streaming
    again = await open_console.kafka.read(open_console.topics.streaming,
                                          until=lambda rs: sum(1 for r in rs if r.key == customer) >= 2)
    assert sum(1 for r in again if r.key == customer) == 2


async def test_every_worker_counts_and_lists_the_firings_of_all_partitions(open_console: Deployment) -> None:
    trigger_id, event_type = "count-" + uuid.uuid4().hex[:8], "tap-" + uuid.uuid4().hex[:8]
    await open_console.put_definition(valid(trigger_id, eventType=event_type))
    customers = [f"c-{n}-{uuid.uuid4().hex[:4]}" for n in range(8)]  # keys spread over both partitions
    for customer in customers:
        await open_console.send_event({"type": event_type, "customerId": customer, "amount": 1})
    firings = await open_console.firings(len(customers), lambda f: f["triggerId"] == trigger_id)
    assert {f["customerId"] for f in firings} == set(customers)
    partitions = {r.partition for r in await open_console.kafka.read(open_console.topics.firings, timeout=2)
                  if r.raw is not None and r.value.get("triggerId") == trigger_id}
    assert partitions == {0, 1}, "the test needs firings on both workers' partitions"
    for worker in (0, 1):
        counts = (await call(open_console, "GET", "/activity/counts", worker=worker)).json()
        assert counts["counts"][trigger_id] == len(customers) and counts["complete"] is True
        listed = (await call(open_console, "GET", f"/activity?kind=firings&trigger={trigger_id}", worker=worker)).json()
        assert sorted(r["value"]["customerId"] for r in listed["records"]) == sorted(customers)
