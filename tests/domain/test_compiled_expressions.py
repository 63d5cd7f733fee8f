"""Compiled expressions give exactly what simpleeval gives: the same values, the same errors."""

from __future__ import annotations

import dataclasses
import os
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import app.domain.expressions as expressions
from app.domain.expressions import SCOPE_NAMES, Expression, Record, Scope, parse_expression
from app.errors import ExpressionFailed

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
EVENT = {
    "amount": 1500,
    "small": 3,
    "zero": 0,
    "price": 2.5,
    "name": "Bob",
    "channel": "WEB",
    "active": True,
    "off": False,
    "nothing": None,
    "at": "2024-05-01T10:00:00+00:00",
    "epoch": 1714557600,
    "after": {"status": "active", "address": {"city": "Oslo"}, "empty": {}},
    "items": [{"sku": "a-1", "qty": 2}, {"sku": "b-2", "qty": 0}, {"sku": "c-3", "qty": 1}],
    "tags": ["new", "vip"],
    "format": "pdf",
    "nested": [[1, 2], [3, [4, 5]]],
}
CUSTOMER = {"segment": "gold", "score": 7, "tier": None, "profile": {"age": 40}}

SCOPES = {
    "full": Scope(event=EVENT, customer=CUSTOMER, now=NOW),
    "no customer": Scope(event=EVENT, customer=None, now=NOW),
    "sparse": Scope(event={"amount": 5, "name": "", "items": [], "tags": []}, customer={}, now=NOW),
    "strings": Scope(event={**EVENT, "amount": "1500", "small": "3", "items": "abc", "after": "x", "tags": None},
                     customer={"segment": 1, "score": "7"}, now=NOW),
    "hostile data": Scope(event={"amount": os, "small": [os.system], "items": {"x": [os]}, "name": os.popen},
                          customer=None, now=NOW),
}

EXPRESSIONS = [
    # constants, names
    "1", "1.5", "'web'", "None", "True", "...", "b'x'", "event", "customer", "now",
    # attributes, nested records, missing fields
    "event.amount", "event.after", "event.after.status", "event.after.address.city", "event.after.empty",
    "event.missing", "event.after.missing", "customer.segment", "customer.missing", "customer.missing.deeper",
    "customer.profile.age", "customer.tier", "event.format", "event.items[0].sku", "event.items[1].qty",
    "event.items[-1]", "event.items[5]", "event.items['x']", "event['amount']", "event['missing']",
    "event.after['status']", "event.nested[1][1][0]", "event.tags[0].sku", "event.name.upper", "event.name[0]",
    # attributes of what is not a record
    "now.year", "now.tzinfo", "event.amount.real", "event.name.format", "event.tags.sort", "(1).real",
    # comparisons and chains
    "event.amount > 1000", "event.amount >= 1500", "event.amount < 1000", "event.amount <= 1", "event.amount == 1500",
    "event.amount != 1500", "1 < event.small < 5", "1 < event.small > 5", "0 < 1 < 2 < 3", "0 < 1 > 2 < event.missing",
    "1 < 2 < event.missing", "event.amount > 'x'", "event.amount > None", "customer.missing > 1",
    "customer.missing == None", "customer.tier is None", "event.nothing is not None", "1000 is 1000",
    "'ab' is 'ab'", "(1, 2) is (1, 2)", "() is ()", "[] is []", "-1 is -1", "event.after is event.after",
    "event.active is True", "event.amount == 1500.0", "'a' < 'b' <= 'b'",
    # membership
    "'vip' in event.tags", "'x' not in event.tags", "event.channel in ['WEB', 'APP']", "event.channel in ('web',)",
    "'amount' in event", "'nope' in event", "'status' in event.after", "1 in event.amount", "'a' in customer",
    "{'WEB': 1}[event.channel]", "{'web': 1}[event.channel]", "event.items[0] in event.items",
    # boolean operators return the deciding value
    "event.amount and event.name", "event.zero and event.name", "event.zero or event.name", "event.nothing or 0",
    "event.off or event.nothing or event.tags", "event.active and event.tags and event.after",
    "event.zero and event.missing", "event.active or event.missing", "event.active and event.missing",
    "not event.active", "not event.zero", "not event.tags", "not not event.after",
    "(event.zero or event.small) and (event.off or event.price)", "event.off and event.zero or event.name",
    # arithmetic
    "event.amount + 1", "event.amount - 1", "event.amount / 4", "event.amount // 7", "event.amount / event.zero",
    "event.amount // 0", "event.price + event.small", "-event.amount", "+event.price", "-event.name",
    "event.name + 1", "event.name + '!'", "event.tags + ['x']", "event.tags + event.tags", "now - days(1)",
    "now + hours(2) - minutes(5)", "-(-event.small)", "1 / 3", "7 // -2", "event.price - 0.5",
    # if/else
    "event.amount if event.active else 0", "event.name if event.zero else event.missing",
    "'big' if event.amount > 1000 else 'small'", "event.missing if event.active else 0",
    # collections
    "[event.amount, event.name]", "(event.amount,)", "()", "[]", "{}", "{'a': event.amount, 'b': [1, 2]}",
    "{event.name: event.amount}", "{event.tags: 1}", "[event.after]", "[[event.nested]]", "(event.items, 1)",
    "{'a': 1, 'a': 2}", "{1: 'x', 1.0: 'y'}", "[1, 2][event.small]", "(1, 2, 3)[event.small - 2]",
    # functions
    "lower(event.channel) == 'web'", "upper(event.name)", "len(event.items) > 2", "len(event.amount)",
    "len(event.tags)", "abs(-event.amount)", "min(event.small, 2)", "max(event.tags)", "min(event.items)",
    "round(event.price)", "round(event.price, 1)", "round(2.5678, -100)", "int(event.small)", "int('x')",
    "float(event.price)", "str(event.amount)", "bool(event.zero)", "startswith(event.name, 'B')",
    "endswith(event.name, 'b')", "timestamp(event.at) > now - days(1)", "timestamp(event.at)",
    "timestamp(event.epoch)", "timestamp(None)", "timestamp('nope')", "now - timestamp(event.at) < hours(3)",
    "days(event.amount)", "days(10**9)", "hours('x')", "str(event.after)", "len(event.after)",
    "min(event.amount, event.name)", "max(event.nested)",
    # forms compiled expressions leave to simpleeval
    "event.amount * 2", "event.amount ** 2", "event.amount % 7", "event.name[0:2]", "event.tags[::-1]",
    "'%s' % event.name", "event.tags * 2",
]


def _slow(expression: Expression) -> Expression:
    """The same expression evaluated by simpleeval alone."""
    return dataclasses.replace(expression, _compiled=None)


def _outcome(expression: Expression, scope: Scope) -> tuple[str, Any]:
    try:
        result = expression.evaluate(scope)
    except ExpressionFailed as exc:
        return "failed", str(exc)
    # repr: Records (a new one per lookup) and NaN have no useful ==; the type catches 1 vs True.
    return "ok", (type(result), repr(result))


def test_the_differential_list_is_broad():
    assert len(set(EXPRESSIONS)) >= 80
    compiled = [text for text in EXPRESSIONS if parse_expression(text)._compiled is not None]
    assert len(compiled) >= 150


@pytest.mark.parametrize("scope_name", list(SCOPES))
@pytest.mark.parametrize("text", EXPRESSIONS)
def test_compiled_evaluation_matches_simpleeval(text, scope_name):
    scope = SCOPES[scope_name]
    expression = parse_expression(text)
    assert _outcome(expression, scope) == _outcome(_slow(expression), scope)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("event.tags", EVENT["tags"]),
        ("event.amount and event.tags", EVENT["tags"]),
        ("event.zero or event.nothing or event.tags", EVENT["tags"]),
        ("event.items[0]", EVENT["items"][0]),
        ("event.tags if event.active else 0", EVENT["tags"]),
        ("max(event.tags, ['a'])", EVENT["tags"]),
    ],
)
def test_compiled_results_are_the_objects_simpleeval_returns(text, expected):
    expression = parse_expression(text)
    assert expression._compiled is not None
    assert expression._compiled(SCOPES["full"]._names) is expected
    assert _slow(expression).evaluate(SCOPES["full"]) is expected


def test_constants_are_the_parsed_objects():
    expression = parse_expression("100000")
    assert expression._compiled is not None
    assert expression._compiled({}) is expression._tree.value  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "text",
    [
        "event.amount > 1000",
        "event.after.status == 'active'",
        "lower(event.channel) == 'web'",
        "timestamp(event.at) > now - days(1)",
        "len(event.items) > 2",
        "event.channel in ['WEB', 'APP'] and customer.segment != 'vip'",
        "customer.missing is None or event.amount >= 100",
        "event.items[0].sku",
        "event.amount - 1 if event.active else -event.amount",
        "{'WEB': 1}[event.channel] + 1",
        "1 < event.small < 5",
    ],
)
def test_common_expressions_are_compiled_and_evaluated_without_simpleeval(text, monkeypatch):
    expression = parse_expression(text)
    assert expression._compiled is not None
    expected = _slow(expression).evaluate(SCOPES["full"])

    def no_simpleeval(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("simpleeval was used")

    monkeypatch.setattr(expressions._EVALUATOR, "eval", no_simpleeval)
    assert repr(expression.evaluate(SCOPES["full"])) == repr(expected)


@pytest.mark.parametrize(
    "text",
    [
        "event.amount * 2",
        "event.amount ** 2",
        "event.amount % 7",
        "event.amount > 1000 and 2 * event.small > 1",
        "len(event.tags * 2)",
        "event.name[0:2]",
        "event.tags[1:]",
        "event.tags[::2]",
        "'x' * 3 == 'xxx'",
    ],
)
def test_pow_mult_mod_and_slices_are_left_to_simpleeval(text):
    assert parse_expression(text)._compiled is None


def test_an_expression_is_compiled_once_when_parsed():
    expression = parse_expression("event.amount > 1000")
    assert expression._compiled is not None
    assert expression == _slow(expression)  # the compiled function is not part of its identity
    assert "_compiled" not in repr(expression)


def test_attributes_of_non_records_fall_back_to_simpleeval():
    expression = parse_expression("now.year")
    assert expression._compiled is not None
    with pytest.raises(expressions._Fallback):
        expression._compiled(SCOPES["full"]._names)
    assert expression.evaluate(SCOPES["full"]) == 2024


def test_forbidden_values_in_data_are_refused_as_simpleeval_refuses_them():
    scope = SCOPES["hostile data"]
    for text in ["event.amount", "event.small", "len(event.small)", "[event.name]", "event.items.x"]:
        assert parse_expression(text)._compiled is not None
        with pytest.raises(ExpressionFailed, match="FeatureNotAvailable"):
            parse_expression(text).evaluate(scope)


def test_extra_scope_names_are_compiled():
    names = SCOPE_NAMES | {"trigger", "firing"}
    scope = Scope(event=EVENT, customer=None, now=NOW,
                  extra={"trigger": {"id": "t-1", "meta": {"v": 2}}, "firing": {"n": 3}})
    for text in ["trigger.id", "trigger.meta.v + firing.n", "firing.missing", "upper(trigger.id)"]:
        expression = parse_expression(text, names)
        assert expression._compiled is not None
        assert _outcome(expression, scope) == _outcome(_slow(expression), scope)


class LazyNames(dict[str, Any]):
    """A names mapping that builds `customer` on first use, like a lazily read customer row."""

    def __init__(self, names: dict[str, Any], customer: dict[str, Any]) -> None:
        super().__init__(names)
        self.customer = customer
        self.loads = 0

    def __missing__(self, key: str) -> Any:
        if key != "customer":
            raise KeyError(key)
        self.loads += 1
        self[key] = value = Record(self.customer, "customer", missing_is_none=True)
        return value


@pytest.mark.parametrize("text", ["customer.segment == 'gold'", "event.amount > 1 and customer.score > 5",
                                  "customer.missing", "event.amount > 1 or customer.score", "customer"])
def test_names_are_read_as_mapping_items_so_missing_names_can_be_built_lazily(text):
    outcomes = []
    for expression in (parse_expression(text), _slow(parse_expression(text))):
        scope = Scope(event=EVENT, customer=None, now=NOW)
        lazy = LazyNames({k: v for k, v in scope._names.items() if k != "customer"}, CUSTOMER)
        object.__setattr__(scope, "_names", lazy)
        outcomes.append((_outcome(expression, scope), lazy.loads))
    assert outcomes[0] == outcomes[1]


def test_a_slow_compiled_evaluation_fails_with_simpleevals_timeout(monkeypatch):
    monkeypatch.setattr(expressions, "MAX_EVALUATION_SECONDS", -1.0)
    expression = parse_expression("event.amount > 1000")
    assert expression._compiled is not None
    failures = []
    for candidate in (expression, _slow(expression)):
        with pytest.raises(ExpressionFailed) as info:
            candidate.evaluate(SCOPES["full"])
        failures.append(str(info.value))
    assert failures[0] == failures[1]
    assert "EvaluationTimeout" in failures[0]


class _SlowToRead(dict):  # type: ignore[type-arg]
    """Event data whose reads wait (as a thread waiting for the CPU or the interpreter lock
    would) without computing anything."""

    def __getitem__(self, key):
        time.sleep(0.03)
        return super().__getitem__(key)


@pytest.mark.parametrize("text", ["event.a + event.b + event.c > 1", "event.a * event.b * event.c > 0"])
def test_waiting_is_not_counted_against_the_evaluation_deadline(monkeypatch, text):
    """A worker starved of CPU must not turn true conditions false: the deadline counts the
    thread's CPU time, not the wall clock."""
    monkeypatch.setattr(expressions, "MAX_EVALUATION_SECONDS", 0.05)
    scope = Scope(event=_SlowToRead(a=1, b=2, c=3), customer=None, now=NOW)
    assert parse_expression(text).evaluate(scope) is True


def test_deeply_nested_expressions_still_evaluate():
    for text in ["[" * 150 + "]" * 150, "not " * 190 + "1", "-" * 190 + "1", "(" * 150 + "event.amount" + ")" * 150,
                 "1 + " * 130 + "1"]:
        expression = parse_expression(text)
        assert _outcome(expression, SCOPES["full"]) == _outcome(_slow(expression), SCOPES["full"])


LEAVES = st.sampled_from([
    "0", "1", "2", "-3", "1000", "0.5", "'x'", "'WEB'", "[1, 2]", "(1,)", "()", "{'a': 1}", "True", "False", "None",
    "event.amount", "event.small", "event.zero", "event.price", "event.name", "event.channel", "event.tags",
    "event.items", "event.after", "event.after.status", "event.nothing", "event.missing", "customer.score",
    "customer.missing", "customer.profile", "now", "now.year",
])


def _compound(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    operators = ["+", "-", "/", "//", "*", "%", "<", "<=", ">", ">=", "==", "!=", "and", "or", "in", "not in",
                 "is", "is not"]
    return (st.tuples(children, st.sampled_from(operators), children).map(lambda t: f"({t[0]} {t[1]} {t[2]})")
            | st.tuples(children, st.sampled_from(["<", "=="]), children, st.sampled_from(["<", ">", "in"]),
                        children).map(lambda t: f"({' '.join(t)})")
            | st.tuples(st.sampled_from(["-", "+", "not "]), children).map(lambda t: f"({t[0]}{t[1]})")
            | st.tuples(st.sampled_from(["abs", "str", "len", "int", "float", "bool", "lower", "days", "timestamp"]),
                        children).map(lambda t: f"{t[0]}({t[1]})")
            | st.tuples(st.sampled_from(["min", "max", "startswith", "round"]), children, children)
            .map(lambda t: f"{t[0]}({t[1]}, {t[2]})")
            | st.tuples(children, children, children).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})")
            | st.tuples(children, children).map(lambda t: f"{t[0]}[{t[1]}]")
            | st.lists(children, max_size=3).map(lambda items: "[" + ", ".join(items) + "]")
            | st.tuples(children, children).map(lambda t: f"{{{t[0]}: {t[1]}}}"))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.recursive(LEAVES, _compound, max_leaves=12), scope_name=st.sampled_from(list(SCOPES)[:4]))
def test_random_expressions_match_simpleeval(text, scope_name):
    expression = parse_expression(text)
    scope = SCOPES[scope_name]
    assert _outcome(expression, scope) == _outcome(_slow(expression), scope)
