"""engine.evaluate: which triggers fire for one event, in which order, and what state changes."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.domain.cooldown import CooldownMark
from app.domain.definitions import CompiledTrigger, compile_definition
from app.domain.engine import evaluate, firing_id
from app.domain.matching import DefinitionIndex
from app.domain.models import Event, Source
from app.errors import InvalidDefinition

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
JOURNEY = {"type": "enroll_journey", "journeyId": "vip-welcome"}


def trigger(trigger_id: str, priority: int = 50, event_type: str = "transaction",
            action: dict[str, Any] | None = None, **extra: Any) -> CompiledTrigger:
    return compile_definition({
        "id": trigger_id, "source": "streaming", "eventType": event_type, "priority": priority,
        "action": action or JOURNEY, **extra,
    })


def event(event_id: str = "e1", timestamp: datetime = NOW, type_: str = "transaction",
          **fields: Any) -> Event:
    return Event(id=event_id, type=type_, customer_id="c-42", source=Source.STREAMING,
                 timestamp=timestamp, fields={"amount": 1500, "channel": "web", **fields})


def run(*triggers: CompiledTrigger, ev: Event | None = None, customer: dict | None = None,
        marks: dict[str, CooldownMark] | None = None, now: datetime = NOW):
    index = DefinitionIndex()
    for t in triggers:
        index.put(t)
    marks = marks or {}
    return evaluate(index, ev or event(), customer, marks.get, now)


def fired(result) -> list[str]:
    return [f.trigger_id for f in result.firings]


@pytest.mark.parametrize(
    ("triggers", "expected"),
    [
        ([trigger("a")], ["a"]),
        ([trigger("low", 10), trigger("high", 90), trigger("mid", 50)], ["high", "mid", "low"]),
        ([trigger("b"), trigger("c"), trigger("a")], ["a", "b", "c"]),
        ([trigger("b", 70), trigger("a", 70), trigger("z", 95), trigger("c", 1)],
         ["z", "a", "b", "c"]),
        ([trigger("any", 80, event_type="*"), trigger("t", 60)], ["any", "t"]),
        ([trigger("any", 20, event_type="*"), trigger("t", 60)], ["t", "any"]),
        ([trigger("click", event_type="click"), trigger("t")], ["t"]),
        ([trigger("off", enabled=False), trigger("t")], ["t"]),
        ([trigger("f", filters={"channel": "app"}), trigger("t")], ["t"]),
        ([trigger("f", filters={"channel": ["app", "web"]})], ["f"]),
        ([], []),
    ],
)
def test_firing_order_priority_then_id(triggers, expected):
    result = run(*triggers)
    assert fired(result) == expected
    assert [f.priority for f in result.firings] == sorted(
        (f.priority for f in result.firings), reverse=True)


@pytest.mark.parametrize(
    ("conditions", "fires"),
    [
        ([], True),
        (["event.amount > 1000"], True),
        (["event.amount > 2000"], False),
        (["event.amount > 1000", "event.channel == 'app'"], False),
        (["event.amount > 1000", "event.channel == 'web'"], True),
        (["event.customerId == 'c-42'", "event.type == 'transaction'"], True),
        (["0"], False),
        (["''"], False),
        (["None"], False),
    ],
)
def test_conditions_must_all_be_true(conditions, fires):
    result = run(trigger("t", conditions=conditions))
    assert fired(result) == (["t"] if fires else [])
    assert result.condition_errors == []


def test_condition_error_is_counted_and_not_fatal_for_other_triggers():
    result = run(
        trigger("broken", 90, conditions=["event.missing > 1"]),
        trigger("fine", 10, conditions=["event.amount > 1"]),
        trigger("div", 50, conditions=["event.amount / 0 > 1"]),
    )
    assert fired(result) == ["fine"]
    assert [trigger_id for trigger_id, _ in result.condition_errors] == ["broken", "div"]
    assert "missing" in result.condition_errors[0][1]


def test_conditions_stop_at_the_first_false_one():
    result = run(trigger("t", conditions=["event.amount < 0", "event.missing"]))
    assert (fired(result), result.condition_errors) == ([], [])


@pytest.mark.parametrize(
    ("customer", "fires"),
    [
        ({"segment": "gold"}, True),
        ({"segment": "vip"}, False),
        ({}, True),
        (None, True),
    ],
)
def test_customer_row_is_used_in_conditions(customer, fires):
    result = run(trigger("t", conditions=["customer.segment != 'vip'"]), customer=customer)
    assert fired(result) == (["t"] if fires else [])


def test_customer_attribute_required_by_condition():
    t = trigger("t", conditions=["customer.tier == 'gold'"])
    assert fired(run(t, customer={"tier": "gold"})) == ["t"]
    assert fired(run(t, customer={"tier": "silver"})) == []
    assert fired(run(t, customer=None)) == []


def test_now_is_the_evaluation_time():
    t = trigger("t", conditions=["now - timestamp(event.timestamp) >= hours(1)"])
    old = event(timestamp=NOW - timedelta(hours=2))
    assert fired(run(t, ev=old)) == ["t"]
    assert fired(run(t, ev=old, now=NOW - timedelta(hours=1, minutes=30))) == []


@pytest.mark.parametrize(
    ("cooldown", "expected_marks"),
    [(0, {}), (60, {"t": CooldownMark(fired_at=NOW, event_id="e1")})],
)
def test_cooldown_mark_recorded_only_with_a_cooldown(cooldown, expected_marks):
    result = run(trigger("t", cooldownMinutes=cooldown))
    assert fired(result) == ["t"]
    assert result.cooldown_marks == expected_marks


def test_cooldown_mark_uses_event_time():
    result = run(trigger("t", cooldownMinutes=5), ev=event(timestamp=NOW - timedelta(minutes=3)))
    assert result.cooldown_marks["t"].fired_at == NOW - timedelta(minutes=3)


def test_cooldown_mark_clamps_future_event_time_to_now():
    result = run(trigger("t", cooldownMinutes=5), ev=event(timestamp=NOW + timedelta(days=365)))
    assert result.cooldown_marks["t"].fired_at == NOW


def test_no_cooldown_mark_when_conditions_fail():
    result = run(trigger("t", cooldownMinutes=60, conditions=["event.amount < 0"]))
    assert (result.firings, result.cooldown_marks, result.cooled_down) == ([], {}, [])


@pytest.mark.parametrize(
    ("mark_age", "mark_event", "fires"),
    [
        (timedelta(minutes=10), "e0", False),
        (timedelta(minutes=59, seconds=59), "e0", False),
        (timedelta(minutes=60), "e0", True),
        (timedelta(hours=3), "e0", True),
        (timedelta(minutes=10), "e1", True),  # replay of the same event
    ],
)
def test_cooldown_blocks_until_the_window_passes(mark_age, mark_event, fires):
    marks = {"t": CooldownMark(NOW - mark_age, mark_event), "other": CooldownMark(NOW, "e0")}
    result = run(trigger("t", cooldownMinutes=60), trigger("free", 10), marks=marks)
    if fires:
        assert (fired(result), result.cooled_down) == (["t", "free"], [])
        assert result.cooldown_marks["t"] == CooldownMark(NOW, "e1")
    else:
        assert (fired(result), result.cooled_down) == (["free"], ["t"])
        assert "t" not in result.cooldown_marks


def test_cooled_down_lists_every_blocked_trigger_in_order():
    marks = {"a": CooldownMark(NOW, "e0"), "b": CooldownMark(NOW, "e0")}
    result = run(trigger("b", 90, cooldownMinutes=5), trigger("a", 10, cooldownMinutes=5),
                 trigger("c", 50), marks=marks)
    assert (fired(result), result.cooled_down) == (["c"], ["b", "a"])


def test_firing_id_is_deterministic_per_trigger_and_event():
    first = run(trigger("t"), ev=event("e1")).firings[0]
    again = run(trigger("t"), ev=event("e1", amount=1)).firings[0]
    other_event = run(trigger("t"), ev=event("e2")).firings[0]
    other_trigger = run(trigger("u"), ev=event("e1")).firings[0]
    assert first.firing_id == again.firing_id == firing_id("t", "e1")
    assert len({first.firing_id, other_event.firing_id, other_trigger.firing_id}) == 3
    assert uuid.UUID(first.firing_id).version == 5


@pytest.mark.parametrize(("a", "b"), [(("ab", "c"), ("a", "bc")), (("t", "e1"), ("e1", "t"))])
def test_firing_id_does_not_confuse_split_points(a, b):
    assert firing_id(*a) != firing_id(*b)


def test_action_command_content():
    ev = event("e7", timestamp=NOW - timedelta(minutes=1))
    command = run(trigger("t", 75), ev=ev, now=NOW).firings[0]
    assert command.to_json() == {
        "firingId": firing_id("t", "e7"),
        "triggerId": "t",
        "priority": 75,
        "customerId": "c-42",
        "eventId": "e7",
        "firedAt": NOW.isoformat().replace("+00:00", "Z"),
        "action": {"type": "enroll_journey", "journeyId": "vip-welcome",
                   "deduplication": "skip_if_active"},
        "event": ev.as_json(),
    }
    assert command.action_type == "enroll_journey"


def test_action_command_excludes_webhook_secret_and_header_values():
    action = {"type": "webhook", "url": "https://example.test/hook", "secret": "s3cret",
              "headers": {"Authorization": "Bearer tok3n"}}
    command = run(trigger("w", action=action)).firings[0]
    assert "secret" not in command.action and "headers" not in command.action
    assert "s3cret" not in str(command.to_json()) and "tok3n" not in str(command.to_json())
    assert command.action == {"type": "webhook", "url": "https://example.test/hook", "signed": True,
                              "headerNames": ["Authorization"]}


def test_update_attribute_command_carries_the_attribute_expressions():
    action = {"type": "update_attribute", "attributes": {"tier": "'gold'"}}
    command = run(trigger("u", action=action)).firings[0]
    assert command.action == {"type": "update_attribute", "table": "customers",
                              "attributes": {"tier": "'gold'"}}


@pytest.mark.parametrize("minutes", [1e10, math.inf])
def test_huge_cooldown_is_refused_or_simply_blocks(minutes):
    try:
        huge = trigger("huge", 90, cooldownMinutes=minutes)
    except InvalidDefinition:
        return  # refusing it up front is also acceptable
    marks = {"huge": CooldownMark(NOW - timedelta(minutes=5), "e0")}
    result = run(huge, trigger("other", 10), marks=marks)
    assert (fired(result), result.cooled_down) == (["other"], ["huge"])


def test_the_customer_row_is_read_only_when_a_condition_refers_to_it() -> None:
    reads: list[int] = []

    def row() -> dict[str, Any]:
        reads.append(1)
        return {"tier": "gold"}

    event_only = [trigger("a", conditions=["event.amount > 1000"]), trigger("b", conditions=["event.channel == 'web'"])]
    assert fired(run(*event_only, customer=row)) == ["a", "b"]  # type: ignore[arg-type]
    assert reads == []
    with_customer = [trigger("c", 60, conditions=["customer.tier == 'gold'"]),
                     trigger("d", 50, conditions=["customer.tier != 'silver'"])]
    assert fired(run(*event_only, *with_customer, customer=row)) == ["c", "a", "b", "d"]  # type: ignore[arg-type]
    assert reads == [1]  # once per event, however many conditions read it
