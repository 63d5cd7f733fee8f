"""The dry run of a delayed trigger and of a trigger with aggregates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from app.domain import windows
from app.domain.definitions import compile_definition
from app.domain.engine import explain
from app.domain.models import Event, Source

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def event(event_type: str, at: datetime = NOW, **fields: Any) -> Event:
    return Event(id="e-1", type=event_type, customer_id="c-1", source=Source.STREAMING, timestamp=at, fields=fields)


def test_a_delayed_trigger_says_when_it_would_fire_and_what_would_cancel_it() -> None:
    trigger = compile_definition({
        "id": "abandoned-cart", "source": "streaming", "eventType": "cart_add", "delay": {"minutes": 30},
        "cancelOn": [{"source": "streaming", "eventType": "purchase", "sameFields": ["cartId"]}],
        "action": {"type": "webhook", "url": "https://crm.example/abandoned"}})
    report = explain(trigger, event("cart_add", cartId="k-7"), None, NOW)
    assert report["wouldFire"] is True
    assert report["delay"]["dueAt"] == (NOW + timedelta(minutes=30)).isoformat(timespec="milliseconds")
    assert report["delay"]["cancelledBy"] == [{
        "source": "streaming", "eventType": "purchase", "filters": {}, "sameFields": {"cartId": "k-7"},
        "before": report["delay"]["dueAt"]}]


def test_aggregates_show_their_values_with_the_test_event_counted_and_decide_the_conditions() -> None:
    trigger = compile_definition({
        "id": "spend-spike", "source": "streaming", "eventType": "transaction",
        "aggregates": {"spend": {"fn": "sum", "of": "event.amount", "window": {"hours": 24}},
                       "fails": {"fn": "count", "window": {"minutes": 10}, "eventType": "login_failed"}},
        "conditions": ["agg.spend > 5000"], "action": {"type": "webhook", "url": "https://risk.example/r"}})
    spend = next(a for a in trigger.aggregates if a.name == "spend")
    earlier = NOW - timedelta(hours=1)
    history = {spend.id: windows.add(None, spend.fn, spend.window_ms, int(earlier.timestamp() * 1000), 4500)}
    report = explain(trigger, event("transaction", amount=600), None, NOW, history)
    assert report["aggregates"]["spend"]["value"] == 5100
    assert report["aggregates"]["spend"]["countsThisEvent"] is True
    assert report["aggregates"]["fails"] == {"fn": "count", "windowSeconds": 600, "value": 0,
                                             "countsThisEvent": False, "history": "stored"}
    assert report["wouldFire"] is True
    alone = explain(trigger, event("transaction", amount=600), None, NOW)
    assert alone["aggregates"]["spend"]["value"] == 600
    assert alone["wouldFire"] is False
