"""Evaluation is bounded per event: size guards keep every step short, one budget bounds them all."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from typing import Any

import pytest

import app.domain.expressions as expressions
from app.domain.decisions import decide
from app.domain.definitions import compile_decision_flow, compile_definition
from app.domain.engine import evaluate
from app.domain.expressions import MAX_DEFINITION_COST, MAX_INT_BITS, Budget, Scope, parse_expression
from app.domain.matching import DefinitionIndex
from app.domain.models import Event, Source
from app.errors import ExpressionFailed, InvalidDefinition

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SCOPE = Scope(event={"a": {"a": {"a": 1}}, "big": 10 ** 1300, "text": "Ab" * 50_000}, customer=None, now=NOW)

# The examples and their relatives: each must be refused, and quickly.
REFUSED = [
    "len(str([999999999999**350]*5000)) > 0",
    "len(str([9**999] * 5000)) > 0",
    "str([[10 ** 1000] * 50] * 50)",
    "str([[0.5] * 300] * 300)",
    "lower([[1.5e300] * 100] * 100)",
    "upper([event] * 200)",
    "startswith([10 ** 900] * 200, '1')",
    "endswith([[1] * 3000] * 30, '1')",
    "(10 ** 1000) * (10 ** 1000) * (10 ** 1000)",
    "(9 ** 999) * (9 ** 999)",
    "(10 ** 999 * 10 ** 300) // 3",
    "str(event)",
    "event.big + 1",
    "event.big - 1",
    "event.big // 7",
    "event.big % 7",
    "event.big / 7",
    "event.big * 1",
    "[10 ** 999] * 200",
    "[1] * 10 ** 6",
]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("text", REFUSED)
def test_size_guards_refuse_quickly(text: str) -> None:
    expression = parse_expression(text)
    started = time.perf_counter()
    with pytest.raises(ExpressionFailed):
        expression.evaluate(SCOPE)
    assert time.perf_counter() - started < 0.05, "one refused step must take milliseconds, not the budget"


@pytest.mark.parametrize("text", REFUSED[:4])
def test_the_guards_refuse_before_the_budget_would(text: str) -> None:
    """Refused by a size guard (its own reason), not by running out of time."""
    with pytest.raises(ExpressionFailed) as info:
        parse_expression(text).evaluate(SCOPE, Budget(10.0))
    assert "EvaluationTimeout" not in str(info.value)


@pytest.mark.parametrize(("text", "expected"), [
    ("(2 ** 1000) * (2 ** 1000) * (2 ** 1000) * (2 ** 1000) > 0", True),
    ("len(str(10 ** 1000))", 1001),
    ("len(str(9 ** 999 + 1))", 954),
    ("len(str([0] * 30000))", 90000),
    ("len(str(['ab'] * 10000))", 60000),
    ("len(str([1.5] * 1000))", 5000),
    ("lower('ABC') + upper('d')", "abcD"),
    ("startswith(['x'], '[')", True),
    ("len(str(event.a))", 22),
    ("event.a.a.a", 1),
])
def test_ordinary_values_within_the_limits_still_evaluate(text: str, expected: Any) -> None:
    assert parse_expression(text).evaluate(SCOPE) == expected


def test_integer_cap_is_on_bits_before_computing() -> None:
    assert parse_expression("2 ** 1000 * 2 ** 1000 * 2 ** 1000 * 2 ** 1000 * 2 ** 94 > 0").evaluate(SCOPE)
    with pytest.raises(ExpressionFailed, match=f"product would be above {MAX_INT_BITS} bits"):
        parse_expression("2 ** 1000 * 2 ** 1000 * 2 ** 1000 * 2 ** 1000 * 2 ** 95").evaluate(SCOPE)
    with pytest.raises(ExpressionFailed, match=f"would be above {MAX_INT_BITS} bits"):
        parse_expression("999999 ** 300").evaluate(SCOPE)  # 5 980 bits, refused before computing


@pytest.mark.timeout(10)
def test_a_long_attribute_chain_is_evaluated_once_per_link() -> None:
    """`_eval_attribute` used to evaluate its target twice for non-records: 2**60 reads."""
    for text in ["now.year" + ".real" * 60, "event.a" + ".a" * 60, "event.a.a" + ".real" * 60]:
        expression = parse_expression(text)
        started = time.perf_counter()
        try:
            expression.evaluate(SCOPE)
        except ExpressionFailed:
            pass
        assert time.perf_counter() - started < 0.05, text
    assert parse_expression("now.year" + ".real" * 60).evaluate(SCOPE) == 2024


def test_attribute_errors_on_python_objects_are_simpleevals() -> None:
    for text, error in [("now.format", "FeatureNotAvailable"), ("now.nope", "AttributeDoesNotExist"),
                        ("event.a.a.a.real.nope", "AttributeDoesNotExist")]:
        with pytest.raises(ExpressionFailed, match=error):
            parse_expression(text).evaluate(SCOPE)


# --- the per-event budget -----------------------------------------------------------------

SLOW = "lower(" * 120 + "event.text" + ")" * 120  # ~10 ms of lowering 100 000 characters


def trigger(trigger_id: str, *conditions: str, priority: int = 50) -> Any:
    return compile_definition({"id": trigger_id, "source": "streaming", "eventType": "t", "priority": priority,
                               "conditions": list(conditions),
                               "action": {"type": "enroll_journey", "journeyId": "j"}})


def run(*triggers: Any) -> Any:
    index = DefinitionIndex()
    for t in triggers:
        index.put(t)
    event = Event(id="e1", type="t", customer_id="c", source=Source.STREAMING, timestamp=NOW,
                  fields={"text": "Ab" * 50_000})
    return evaluate(index, event, None, lambda trigger_id: None, NOW)


def test_one_budget_is_shared_by_every_candidate_of_an_event(monkeypatch: pytest.MonkeyPatch) -> None:
    triggers = (trigger("a-slow", SLOW, priority=90), trigger("b-slow", SLOW, priority=80),
                trigger("c-cheap", "event.text != ''", priority=10))
    monkeypatch.setattr(expressions, "MAX_EVALUATION_SECONDS", 0.003)
    started = time.thread_time()
    result = run(*triggers)
    spent = time.thread_time() - started
    assert result.budget_exhausted
    errors = dict(result.condition_errors)
    assert "EvaluationTimeout: stopped after 3 ms" in errors["a-slow"]
    # Later candidates are not evaluated at all: cheap ones included.
    assert errors["b-slow"] == errors["c-cheap"] == "not evaluated: evaluation budget of 3 ms exhausted"
    assert result.firings == []
    assert spent < 0.05


def test_without_exhaustion_every_candidate_is_evaluated() -> None:
    result = run(trigger("a-slow", SLOW, priority=90), trigger("c-cheap", "event.text != ''", priority=10))
    assert not result.budget_exhausted and result.condition_errors == []
    assert [f.trigger_id for f in result.firings] == ["a-slow", "c-cheap"]


def test_each_event_gets_a_fresh_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(expressions, "MAX_EVALUATION_SECONDS", 0.003)
    slow = trigger("a-slow", SLOW)
    assert run(slow).budget_exhausted
    assert run(trigger("c-cheap", "event.text != ''")).firings  # the next event is not charged


def test_only_cheap_expressions_are_compiled() -> None:
    """A compiled expression is checked against the budget when it returns, so a costly one
    is left to simpleeval, which checks it between steps."""
    assert parse_expression("lower(event.channel) == 'web' and event.amount > 1000")._compiled is not None
    assert parse_expression(SLOW)._compiled is None


def test_the_budget_is_checked_after_a_compiled_evaluation() -> None:
    expression = parse_expression("event.a.a.a == 1")
    assert expression._compiled is not None
    spent = Budget(0.001)
    burn = time.thread_time() + 0.002  # CPU spent by an earlier expression of the event
    while time.thread_time() < burn:
        pass
    with pytest.raises(ExpressionFailed, match="EvaluationTimeout"):
        expression.evaluate(SCOPE, spent)
    assert spent.exhausted
    with pytest.raises(ExpressionFailed, match="EvaluationTimeout"):  # and stays spent
        dataclasses.replace(expression, _compiled=None).evaluate(SCOPE, spent)


def test_waiting_does_not_spend_the_budget() -> None:
    budget = Budget(0.02)
    time.sleep(0.05)  # the wall clock passes the deadline; the thread's CPU time does not
    assert budget.left()
    assert parse_expression("event.a.a.a == 1").evaluate(SCOPE, budget) is True


def test_a_flows_offers_share_one_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    flow = compile_decision_flow({"id": "f", "maxOffers": 10, "offers": [
        {"id": f"o{n}", "conditions": [SLOW], "score": "1"} for n in range(3)]})
    monkeypatch.setattr(expressions, "MAX_EVALUATION_SECONDS", 0.003)
    started = time.thread_time()
    offers, errors = decide(flow, Scope(event={"text": "Ab" * 50_000}, customer=None, now=NOW))
    assert time.thread_time() - started < 0.05
    assert len(errors) == 3 and all("EvaluationTimeout" in e for e in errors)
    assert len(offers) == 0


# --- the validation-time cost limit -------------------------------------------------------

COSTLY = " and ".join(["len(str([0.5] * 3000)) > 0"] * 25)  # within the node and length limits


def test_expression_cost_weighs_calls_and_building_operators() -> None:
    assert parse_expression("event.amount > 1000").cost == 4
    assert parse_expression("lower(event.name) == 'x'").cost > parse_expression("event.name == 'x'").cost
    assert parse_expression("event.a * 2").cost > parse_expression("event.a + 2").cost


def test_a_definition_over_the_cost_limit_is_rejected_naming_the_field() -> None:
    cost = parse_expression(COSTLY).cost
    count = MAX_DEFINITION_COST // cost + 1
    with pytest.raises(InvalidDefinition) as info:
        trigger("t", *[COSTLY] * count)
    assert f"conditions: total expression cost {cost * count} exceeds {MAX_DEFINITION_COST}" in str(info.value)
    trigger("t", *[COSTLY] * (count - 1))  # just under the limit: valid


def test_update_attribute_expressions_are_limited_too() -> None:
    cost = parse_expression(COSTLY).cost
    attributes = {f"a{n}": COSTLY for n in range(MAX_DEFINITION_COST // cost + 1)}
    with pytest.raises(InvalidDefinition, match="action.attributes: total expression cost"):
        compile_definition({"id": "t", "source": "streaming", "eventType": "t",
                            "action": {"type": "update_attribute", "attributes": attributes}})


def test_a_flows_offers_are_limited_together() -> None:
    cost = parse_expression(COSTLY).cost
    offers = [{"id": f"o{n}", "conditions": [COSTLY]} for n in range(MAX_DEFINITION_COST // cost + 1)]
    with pytest.raises(InvalidDefinition, match="offers: total expression cost"):
        compile_decision_flow({"id": "f", "offers": offers})


def test_a_garbage_collection_is_not_charged_to_the_budget() -> None:
    """A full collection of a large heap can outlast the whole budget: it is the heap's cost."""
    budget = Budget(0.003)
    expressions._collections("start", {})
    burn = time.thread_time() + 0.01  # a collection spending 10 ms of this thread's CPU
    while time.thread_time() < burn:
        pass
    expressions._collections("stop", {})
    assert budget.left() and not budget.exhausted
    burn = time.thread_time() + 0.01  # the expressions' own 10 ms
    while time.thread_time() < burn:
        pass
    assert not budget.left()
