"""The evaluator over in-memory doubles: cooldown marks stored, firings emitted in priority order
(each command, then its firing record), a firing too large to produce refused whole."""

from __future__ import annotations

import json
from datetime import timedelta

from app.domain.models import Event, Source
from tests.adapters.engine_parts import EngineParts, trigger

CUSTOMER = "c-1"


def purchase(parts: EngineParts, event_id: str, amount: int, **fields: object) -> Event:
    return Event(id=event_id, type="purchase", customer_id=CUSTOMER, source=Source.STREAMING,
                 timestamp=parts.clock(), fields={"amount": amount, **fields})


async def test_a_firing_stores_its_cooldown_mark_and_the_mark_holds_the_next_event() -> None:
    parts = EngineParts()
    parts.define(**trigger(cooldownMinutes=60))
    await parts.evaluator.evaluate(purchase(parts, "e-1", 500))
    assert list(parts.cooldowns) == [f"big-purchase|{CUSTOMER}"]
    assert parts.evaluator.cooldown("big-purchase", CUSTOMER) is not None

    parts.clock.advance(timedelta(minutes=30))
    await parts.evaluator.evaluate(purchase(parts, "e-2", 500))
    assert len(parts.sent("triggers.firings")) == 1 and parts.evaluator.counters["cooled_down"] == 1

    parts.clock.advance(timedelta(minutes=31))
    await parts.evaluator.evaluate(purchase(parts, "e-3", 500))
    assert [f["eventId"] for f in parts.sent("triggers.firings")] == ["e-1", "e-3"]


async def test_firings_are_emitted_by_priority_each_command_before_its_firing_record() -> None:
    parts = EngineParts()
    parts.define(**trigger("low", priority=10))
    parts.define(**trigger("high", priority=90, action={"type": "webhook", "url": "https://hooks.example/x"}))
    parts.define(**trigger("also-high", priority=90))
    await parts.evaluator.evaluate(purchase(parts, "e-1", 500))
    emitted = [(topic, json.loads(value or b"")["triggerId"]) for topic, _, value, _ in parts.producer.sent]
    assert emitted == [("actions.enroll_journey", "also-high"), ("triggers.firings", "also-high"),
                       ("actions.webhook", "high"), ("triggers.firings", "high"),
                       ("actions.enroll_journey", "low"), ("triggers.firings", "low")]
    assert parts.evaluator.counters["firings"] == 3


async def test_an_event_that_matches_no_trigger_reads_no_state_and_returns_nothing() -> None:
    parts = EngineParts()
    parts.define(**trigger(conditions=["customer.tier == 'gold'"]))
    reads: list[str] = []
    parts.row_store.customer = lambda customer_id: reads.append(customer_id)  # type: ignore[method-assign]
    click = Event(id="e-1", type="click", customer_id=CUSTOMER, source=Source.STREAMING,
                  timestamp=parts.clock(), fields={})
    assert parts.evaluator.evaluate_now(click) is None
    assert reads == [] and parts.evaluator.counters["events.streaming"] == 1
    assert parts.evaluator.evaluate_now(purchase(parts, "e-2", 500)) is None  # not gold: nothing to write
    assert reads == [CUSTOMER]


async def test_a_firing_too_large_to_produce_is_refused_and_its_cooldown_not_stored() -> None:
    parts = EngineParts()
    parts.define(**trigger(cooldownMinutes=60))
    await parts.evaluator.evaluate(purchase(parts, "e-1", 500, blob="x" * 1_000_000))
    assert parts.producer.topics() == ["actions.deadletter"]
    [letter] = parts.sent("actions.deadletter")
    assert letter["reason"].startswith("firing is ") and "990000-byte record limit" in letter["reason"]
    assert (letter["triggerId"], letter["actionType"], letter["truncated"]) == ("big-purchase", "enroll_journey", True)
    assert parts.cooldowns == {} and parts.evaluator.counters["firings_refused"] == 1

    await parts.evaluator.evaluate(purchase(parts, "e-2", 500))  # no cooldown was started: this one fires
    assert [f["eventId"] for f in parts.sent("triggers.firings")] == ["e-2"]


async def test_condition_errors_are_counted_and_nothing_fires() -> None:
    parts = EngineParts()
    parts.define(**trigger(conditions=["event.amount / event.zero > 1"]))
    await parts.evaluator.evaluate(purchase(parts, "e-1", 500, zero=0))
    assert parts.producer.sent == [] and parts.evaluator.counters["condition_errors"] == 1
