"""Windowed aggregates on a real broker: exact values at the window's edges (both ends
inclusive) over events of another type than the trigger's, read through the firings'
`aggregates` field and through which events fire; an invalid aggregate rejected on
`triggers.errors` with the field named."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.integration.conftest import Deployment

ENROLL = {"type": "enroll_journey", "journeyId": "welcome"}
# Event time, well before the clock: aggregates follow the events' timestamps, not arrival.
T = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def at(seconds: float) -> str:
    return (T + timedelta(seconds=seconds)).isoformat()


async def send_all(engine: Deployment, customer: str, events: list[tuple[str, str, float, dict[str, Any]]]) -> None:
    """(id, type, seconds after T, fields) of one customer, in this order (one partition: read in it)."""
    for event_id, event_type, seconds, fields in events:
        await engine.send_event({"type": event_type, "customerId": customer, "id": event_id,
                                 "timestamp": at(seconds), **fields})


def by_event(firings: list[dict[str, Any]], trigger_id: str) -> dict[str, Any]:
    """eventId -> `aggregates` of `trigger_id`'s firings (each event fires it at most once)."""
    mine = [f for f in firings if f["triggerId"] == trigger_id]
    assert len({f["eventId"] for f in mine}) == len(mine), mine
    return {f["eventId"]: f["aggregates"] for f in mine}


async def test_a_count_of_another_type_is_exact_at_both_edges_of_a_10_second_window(engine: Deployment) -> None:
    login, failed = unique("login"), unique("login_failed")
    fails = {"fails": {"fn": "count", "window": {"seconds": 10}, "eventType": failed}}
    alarm, observer = unique("brute-force"), unique("observer")
    await engine.put_definition({"id": alarm, "source": "streaming", "eventType": login, "aggregates": fails,
                                 "conditions": ["agg.fails >= 3"], "action": ENROLL})
    await engine.put_definition({"id": observer, "source": "streaming", "eventType": login, "aggregates": fails,
                                 "action": ENROLL})
    customer, other = unique("c"), unique("c")
    await send_all(engine, other, [("o1", failed, 9, {}), ("o2", failed, 9.5, {})])  # not this customer's
    await send_all(engine, customer, [
        ("f0", failed, 0, {}),
        ("f4", failed, 4, {}),
        ("l5", login, 5, {}),  # [-5, 5]: f0, f4
        ("f9", failed, 9, {}),
        ("l10", login, 10, {}),  # [0, 10]: f0 (at the lower edge), f4, f9
        ("l11", login, 11, {}),  # [1, 11]: f4, f9
        ("f14", failed, 14, {}),
        ("l14", login, 14, {}),  # [4, 14]: f4 (at the lower edge), f9, f14 (at the upper edge)
        ("l14+", login, 14.001, {}),  # [4.001, 14.001]: f9, f14
        ("l30", login, 30, {}),  # [20, 30]: none
    ])
    await send_all(engine, other, [("o-login", login, 10, {})])  # two failures, in its own window

    firings = await engine.firings(9, lambda r: r["triggerId"] in (alarm, observer), settle=2)
    assert by_event(firings, observer) == {"l5": {"fails": 2}, "l10": {"fails": 3}, "l11": {"fails": 2},
                                           "l14": {"fails": 3}, "l14+": {"fails": 2}, "l30": {"fails": 0},
                                           "o-login": {"fails": 2}}
    assert by_event(firings, alarm) == {"l10": {"fails": 3}, "l14": {"fails": 3}}
    assert {f["customerId"] for f in firings if f["eventId"] != "o-login"} == {customer}


async def test_sum_min_max_avg_and_distinct_over_a_one_minute_window(engine: Deployment) -> None:
    checkout, purchase = unique("checkout"), unique("purchase")
    window = {"minutes": 1}
    aggregates = {
        "n": {"fn": "count", "window": window, "eventType": purchase},
        "total": {"fn": "sum", "of": "event.amount", "window": window, "eventType": purchase},
        "lo": {"fn": "min", "of": "event.amount", "window": window, "eventType": purchase},
        "hi": {"fn": "max", "of": "event.amount", "window": window, "eventType": purchase},
        "mean": {"fn": "avg", "of": "event.amount", "window": window, "eventType": purchase},
        "skus": {"fn": "distinct", "of": "event.sku", "window": window, "eventType": purchase},
    }
    trigger_id = unique("basket")
    await engine.put_definition({"id": trigger_id, "source": "streaming", "eventType": checkout,
                                 "aggregates": aggregates, "conditions": ["agg.n > 0"], "action": ENROLL})
    customer = unique("c")
    await send_all(engine, customer, [
        ("p0", purchase, 0, {"amount": 10, "sku": "z"}),
        ("p20", purchase, 20, {"amount": 5.5, "sku": "b"}),
        ("p30", purchase, 30, {"amount": 30, "sku": "a"}),
        ("p59", purchase, 59, {"sku": "a"}),  # no amount: counted, not summed
        ("c60", checkout, 60, {}),  # [0, 60]
        ("c61", checkout, 61, {}),  # [1, 61]
        ("c90", checkout, 90, {}),  # [30, 90]
        ("c120", checkout, 120, {}),  # [60, 120]: n is 0, nothing fires
    ])
    firings = await engine.firings(3, lambda r: r["triggerId"] == trigger_id, settle=2)
    values = by_event(firings, trigger_id)
    assert set(values) == {"c60", "c61", "c90"}
    assert values["c60"] == {"n": 4, "total": 45.5, "lo": 5.5, "hi": 30, "mean": pytest.approx(45.5 / 3),
                             "skus": 3}
    assert values["c61"] == {"n": 3, "total": 35.5, "lo": 5.5, "hi": 30, "mean": 17.75, "skus": 2}
    assert values["c90"] == {"n": 2, "total": 30, "lo": 30, "hi": 30, "mean": 30, "skus": 1}
    command = [f for f in firings if f["eventId"] == "c61"][0]
    assert command["event"]["type"] == checkout and command["customerId"] == customer


@pytest.mark.parametrize("aggregates, conditions, expected", [
    ({"fails": {"fn": "median", "of": "event.amount", "window": {"minutes": 5}}}, [], "aggregates.fails.fn: "),
    ({"fails": {"fn": "count", "window": {"days": 91}}}, [], "aggregates.fails.window: Value error, at most 90 days"),
    ({"fails": {"fn": "sum", "of": "customer.balance", "window": {"hours": 1}}}, [], "aggregates.fails.of: "),
    ({"fails": {"fn": "count", "window": {"hours": 1}}}, ["agg.failz >= 3"],
     "conditions: agg.failz is not defined in aggregates (defined: fails)"),
], ids=["unknown-fn", "window-over-90-days", "of-reads-customer", "undefined-name"])
async def test_a_definition_with_an_invalid_aggregate_is_rejected_on_triggers_errors_naming_the_field(
        engine: Deployment, aggregates: dict[str, Any], conditions: list[str], expected: str) -> None:
    trigger_id, login = unique("bad-aggregate"), unique("login")
    await engine.put_definition({"id": trigger_id, "source": "streaming", "eventType": login,
                                 "aggregates": aggregates, "conditions": conditions, "action": ENROLL})
    records = await engine.kafka.read(engine.topics.errors, until=lambda rs: any(r.key == trigger_id for r in rs))
    [report] = [r.value for r in records if r.key == trigger_id]
    assert report["triggerId"] == trigger_id
    assert any(error.startswith(expected) for error in report["errors"]), report["errors"]
    health = await engine.workers[0].health()
    assert health is not None and trigger_id in health["rejectedDefinitions"]
    # Rejected whole: its event type fires nothing.
    await engine.send_event({"type": login, "customerId": unique("c")})
    assert await engine.firings(1, lambda r: r["triggerId"] == trigger_id, timeout=3, settle=0) == []
