"""Intake over in-memory doubles: records owned here are handled here, others re-published once
keyed by their customer id; malformed ones dead-lettered; row loads written or refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.domain.internal_records import envelope
from app.domain.models import Event, Source
from app.domain.rows import RowLoad
from app.errors import MalformedEvent
from tests.adapters.engine_parts import EngineParts, trigger
from tests.adapters.fakes import FakeClock, record

CUSTOMER = "c-1"


@pytest.fixture
def parts() -> EngineParts:
    parts = EngineParts()
    parts.define(**trigger())
    return parts


def purchase(amount: int, customer: str = CUSTOMER, **fields: Any) -> dict[str, Any]:
    return {"type": "purchase", "customerId": customer, "amount": amount, **fields}


def streaming(parts: EngineParts, value: Any, key: str | None = CUSTOMER, partition: int | None = None,
              offset: int = 0) -> Any:
    where = parts.partition_of(CUSTOMER) if partition is None else partition
    return record("events.streaming", key, value, where, offset)


async def test_an_owned_event_is_evaluated_here_and_fires(parts: EngineParts) -> None:
    await parts.intake.on_source_batch(None, [streaming(parts, purchase(500))])  # type: ignore[arg-type]
    assert parts.producer.topics() == ["actions.enroll_journey", "triggers.firings"]
    command = parts.sent("actions.enroll_journey")[0]
    assert (command["triggerId"], command["customerId"]) == ("big-purchase", CUSTOMER)
    assert parts.evaluator.counters["events.streaming"] == 1 and parts.intake.counters["rerouted"] == 0


async def test_an_event_that_fires_nothing_writes_nothing(parts: EngineParts) -> None:
    await parts.intake.on_source_batch(None, [streaming(parts, purchase(5)), streaming(parts, {  # type: ignore[arg-type]
        "type": "click", "customerId": CUSTOMER}, offset=1)])
    assert parts.producer.sent == [] and parts.evaluator.counters["events.streaming"] == 2


@pytest.mark.parametrize("misplaced", ["keyed by something else", "in another partition"])
async def test_an_event_owned_elsewhere_is_rerouted_once_keyed_by_its_customer(parts: EngineParts,
                                                                               misplaced: str) -> None:
    if misplaced == "keyed by something else":
        misplaced_record = streaming(parts, purchase(500), key="order-77")
    else:
        misplaced_record = streaming(parts, purchase(500), partition=(parts.partition_of(CUSTOMER) + 1) % 4)
    await parts.intake.on_source_batch(None, [misplaced_record])  # type: ignore[arg-type]
    assert parts.producer.topics() == ["triggers.internal.rerouted"]
    assert parts.producer.keys("triggers.internal.rerouted") == [CUSTOMER]
    forwarded = parts.sent("triggers.internal.rerouted")[0]
    assert forwarded["kind"] == "event" and forwarded["event"]["customer_id"] == CUSTOMER
    assert parts.intake.counters["rerouted"] == 1
    assert parts.evaluator.counters["events.streaming"] == 0  # evaluated where it is re-read, not here


async def test_a_malformed_record_is_dead_lettered_and_the_next_one_is_handled(parts: EngineParts) -> None:
    await parts.intake.on_source_batch(None, [  # type: ignore[arg-type]
        streaming(parts, b"{not json", offset=7), streaming(parts, {"type": "purchase"}, offset=8),
        streaming(parts, purchase(500), offset=9)])
    letters = parts.sent("events.deadletter")
    assert [letter["offset"] for letter in letters] == [7, 8]
    assert letters[0]["reason"].startswith("not valid JSON") and "customerId" in letters[1]["reason"]
    assert parts.producer.topics()[-2:] == ["actions.enroll_journey", "triggers.firings"]


async def test_a_cdc_event_keyed_by_primary_key_is_rerouted_to_its_customer(parts: EngineParts) -> None:
    change = {"payload": {"op": "u", "source": {"table": "orders"}, "after": {"id": 77, "customer_id": CUSTOMER}}}
    await parts.intake.on_source_batch(None, [record("events.cdc", "77", change, 0)])  # type: ignore[arg-type]
    assert parts.producer.keys("triggers.internal.rerouted") == [CUSTOMER]
    assert parts.sent("triggers.internal.rerouted")[0]["event"]["type"] == "orders.update"


async def test_an_owned_row_load_is_written_and_its_change_published(parts: EngineParts) -> None:
    load = {"customerId": CUSTOMER, "attributes": {"tier": "gold"}}
    await parts.intake.on_source_batch(None, [  # type: ignore[arg-type]
        record("schema.rows", CUSTOMER, load, parts.partition_of(CUSTOMER))])
    assert parts.rows[f"customers|{CUSTOMER}"]["tier"] == "gold"
    assert [change["customerId"] for change in parts.sent("events.schema")] == [CUSTOMER]


async def test_a_row_load_owned_elsewhere_is_rerouted_not_written(parts: EngineParts) -> None:
    load = {"customerId": CUSTOMER, "attributes": {"tier": "gold"}}
    await parts.intake.on_source_batch(None, [record("schema.rows", "other-key", load, 0)])  # type: ignore[arg-type]
    assert parts.rows == {}
    assert parts.sent("triggers.internal.rerouted") == [
        {"kind": "row", "row": {"table": "customers", "customer_id": CUSTOMER, "attributes": {"tier": "gold"}}}]


@pytest.mark.parametrize(("load", "reason"), [
    ({"table": "nope", "customerId": CUSTOMER, "attributes": {"a": 1}}, "unknown schema table 'nope'"),
    ({"table": "scores", "customerId": CUSTOMER, "attributes": {"n": "many"}}, "'n'"),
    ({"table": "scores", "customerId": CUSTOMER, "attributes": {"other": 1}}, "'other'"),
    ({"customerId": CUSTOMER, "attributes": {"n": 2**64}}, "64-bit"),
])
async def test_a_refused_row_load_is_dead_lettered_in_the_row_load_shape(parts: EngineParts, load: dict[str, Any],
                                                                          reason: str) -> None:
    parts.catalogs.tables.apply("scores", json.dumps({"name": "scores", "columns": {"n": "number"}}).encode())
    await parts.intake.on_source_batch(None, [  # type: ignore[arg-type]
        record("schema.rows", CUSTOMER, load, parts.partition_of(CUSTOMER), offset=4)])
    [letter] = parts.sent("events.deadletter")
    assert reason in letter["reason"]
    assert letter["load"] == {"table": load.get("table", "customers"), "customer_id": CUSTOMER,
                              "attributes": load["attributes"]}
    assert (letter["topic"], letter["offset"]) == ("schema.rows", 4)
    assert parts.rows == {} and parts.sent("events.schema") == []
    assert parts.row_loads.counters["deadlettered"] == 1


# -- the rerouted topic ------------------------------------------------------------------------


def rerouted(parts: EngineParts, value: bytes | None, key: str = CUSTOMER, partition: int | None = None) -> Any:
    where = parts.partition_of(key) if partition is None else partition
    return record("triggers.internal.rerouted", key, value, where, offset=3)


def event(amount: int) -> Event:
    return Event(id="e-1", type="purchase", customer_id=CUSTOMER, source=Source.STREAMING,
                 timestamp=FakeClock().now, fields={"amount": amount})


async def test_a_rerouted_event_is_evaluated_where_its_customer_lives(parts: EngineParts) -> None:
    await parts.intake.on_rerouted_batch(None, [rerouted(parts, envelope(event(500)))])  # type: ignore[arg-type]
    assert parts.producer.topics() == ["actions.enroll_journey", "triggers.firings"]
    assert parts.sent("triggers.firings")[0]["eventId"] == "e-1"


async def test_a_rerouted_row_load_is_written(parts: EngineParts) -> None:
    load = RowLoad("customers", CUSTOMER, {"tier": "gold"})
    await parts.intake.on_rerouted_batch(None, [rerouted(parts, envelope(load))])  # type: ignore[arg-type]
    assert parts.rows[f"customers|{CUSTOMER}"]["tier"] == "gold"


@pytest.mark.parametrize(("value", "reason"), [
    (b"[]", "a rerouted record is a JSON object"),
    (b'{"kind": "event", "event": {"id": "x"}}', "invalid rerouted event"),
    (b'{"kind": "row", "row": 5}', "a rerouted row load has an object 'row'"),
    (b'{"kind": "surprise"}', "unknown rerouted record kind 'surprise'"),
])
async def test_an_invalid_rerouted_record_is_dead_lettered_with_its_reason(parts: EngineParts, value: bytes,
                                                                           reason: str) -> None:
    await parts.intake.on_rerouted_batch(None, [rerouted(parts, value)])  # type: ignore[arg-type]
    [letter] = parts.sent("events.deadletter")
    assert letter["reason"].startswith(reason) and letter["offset"] == 3
    assert parts.producer.topics() == ["events.deadletter"]


async def test_a_rerouted_envelope_in_the_wrong_partition_is_dead_lettered_not_rerouted_again(
        parts: EngineParts) -> None:
    wrong = (parts.partition_of(CUSTOMER) + 1) % 4
    await parts.intake.on_rerouted_batch(None, [rerouted(parts, envelope(event(500)), partition=wrong)])  # type: ignore[arg-type]
    [letter] = parts.sent("events.deadletter")
    assert "keyed by its customer id" in letter["reason"]
    assert parts.producer.topics() == ["events.deadletter"]


async def test_a_registered_kind_goes_to_its_handler(parts: EngineParts) -> None:
    seen: list[dict[str, Any]] = []

    async def journey_event(data: dict[str, Any]) -> None:
        if not isinstance(data.get("value"), str):
            raise MalformedEvent("a rerouted journey event has a text 'value'")
        seen.append(data)

    parts.intake.register_rerouted("journey_event", journey_event)
    good = json.dumps({"kind": "journey_event", "value": "{}"}).encode()
    bad = json.dumps({"kind": "journey_event", "value": 5}).encode()
    await parts.intake.on_rerouted_batch(None, [rerouted(parts, good), rerouted(parts, bad)])  # type: ignore[arg-type]
    assert seen == [{"kind": "journey_event", "value": "{}"}]
    assert [letter["reason"] for letter in parts.sent("events.deadletter")] == [
        "a rerouted journey event has a text 'value'"]
