"""The Part 2 trigger fields (delay, cancelOn, aggregates) at the edge: accepted when valid,
the whole definition rejected otherwise with the field named; aggregate ids by what they compute."""

from __future__ import annotations

from typing import Any

import pytest

from app.domain.definitions import compile_definition
from app.domain.models import AggregateFn, Source
from app.errors import InvalidDefinition

LOGIN = {"id": "t1", "source": "streaming", "eventType": "login",
         "action": {"type": "enroll_journey", "journeyId": "welcome"}}
SCHEDULED = {"id": "t1", "source": "scheduled", "eventType": "tick", "schedule": "0 9 * * *",
             "action": {"type": "enroll_journey", "journeyId": "welcome"}}
HOUR_COUNT = {"fn": "count", "window": {"hours": 1}}


def definition(**changes: Any) -> dict[str, Any]:
    return {**LOGIN, **changes}


def with_aggregate(**aggregate: Any) -> dict[str, Any]:
    return definition(aggregates={"x": aggregate})


def problems(value: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidDefinition) as info:
        compile_definition(value)
    assert info.value.trigger_id == value["id"]
    return info.value.errors


def one_problem(value: dict[str, Any]) -> str:
    [problem] = problems(value)
    return problem


# -- accepted ----------------------------------------------------------------------------------

def test_a_delay_with_cancel_rules_and_aggregates_compiles_with_every_part_kept() -> None:
    trigger = compile_definition(definition(
        delay={"minutes": 30},
        cancelOn=[{"source": "streaming", "eventType": "purchase", "filters": {"channel": "web"},
                   "sameFields": ["cartId"]},
                  {"source": "outcome", "eventType": "*"}],
        aggregates={"fails": {"fn": "count", "window": {"minutes": 10}, "eventType": "login_failed"},
                    "spent": {"fn": "sum", "of": "event.amount", "window": {"days": 90},
                              "source": "outcome", "eventType": "order", "filters": {"currency": "EUR"}}},
        conditions=["agg.fails >= 3", "agg['spent'] > 100"]))
    assert trigger.delay_ms == 30 * 60_000
    [purchase, outcome] = trigger.cancel_on
    assert (purchase.source, purchase.event_type, purchase.same_fields) == (Source.STREAMING, "purchase", ("cartId",))
    assert (outcome.source, outcome.event_type) == (Source.OUTCOME, "*")
    fails, spent = trigger.aggregates
    assert (fails.name, fails.fn, fails.window_ms, fails.source, fails.event_type, fails.of) == (
        "fails", AggregateFn.COUNT, 600_000, Source.STREAMING, "login_failed", None)
    assert (spent.name, spent.fn, spent.window_ms, spent.source, spent.event_type) == (
        "spent", AggregateFn.SUM, 90 * 86_400_000, Source.OUTCOME, "order")
    assert spent.of is not None and dict(spent.filters) == {"currency": "EUR"}


@pytest.mark.parametrize("duration, millis", [
    ({"seconds": 1}, 1_000), ({"minutes": 5}, 300_000), ({"hours": 2}, 7_200_000),
    ({"days": 90}, 90 * 86_400_000), ({"hours": 2160}, 90 * 86_400_000), ({"seconds": 7_776_000}, 7_776_000_000),
])
def test_every_unit_up_to_exactly_90_days_is_a_valid_delay_and_window(duration: dict[str, int], millis: int) -> None:
    trigger = compile_definition(definition(delay=duration, aggregates={"n": {"fn": "count", "window": duration}}))
    assert trigger.delay_ms == millis
    assert trigger.aggregates[0].window_ms == millis


def test_an_aggregate_defaults_to_the_triggers_own_source_and_event_type() -> None:
    [aggregate] = compile_definition(with_aggregate(**HOUR_COUNT)).aggregates
    assert (aggregate.source, aggregate.event_type) == (Source.STREAMING, "login")


@pytest.mark.parametrize("where", ["conditions", "action.attributes", "action.payload"])
def test_agg_names_defined_in_aggregates_may_be_read_in_conditions_attributes_and_payloads(where: str) -> None:
    aggregates = {"fails": HOUR_COUNT}
    value = {
        "conditions": definition(aggregates=aggregates, conditions=["agg.fails > 2"]),
        "action.attributes": definition(aggregates=aggregates, action={
            "type": "update_attribute", "attributes": {"recentFails": "agg.fails"}}),
        "action.payload": definition(aggregates=aggregates, action={
            "type": "webhook", "url": "https://hooks.example/x", "payload": {"fails": "{{agg.fails}}"}}),
    }[where]
    assert compile_definition(value).aggregates[0].name == "fails"


@pytest.mark.parametrize("fn", ["sum", "min", "max", "avg", "distinct"])
def test_every_fn_but_count_is_accepted_with_an_of_over_the_event(fn: str) -> None:
    [aggregate] = compile_definition(with_aggregate(fn=fn, of="event.amount * 2", window={"hours": 1})).aggregates
    assert aggregate.fn == AggregateFn(fn)
    assert aggregate.value_of({"amount": 4}) == 8
    assert aggregate.value_of({}) is None  # a missing field contributes nothing; no exception


# -- rejected, the field named -----------------------------------------------------------------

@pytest.mark.parametrize("duration, field, says", [
    ({"minutes": 0}, "delay.minutes", "greater than 0"),
    ({"minutes": -5}, "delay.minutes", "greater than 0"),
    ({"seconds": -1}, "delay.seconds", "greater than 0"),
    ({"minutes": 1.5}, "delay.minutes", "integer"),
    ({"minutes": 2.0}, "delay.minutes", "integer"),  # strict: a float is not a count of minutes
    ({"minutes": "30"}, "delay.minutes", "integer"),
    ({"minutes": True}, "delay.minutes", "integer"),
    ({"minutes": 1, "seconds": 30}, "delay", "exactly one of seconds, minutes, hours, days"),
    ({}, "delay", "exactly one of seconds, minutes, hours, days"),
    ({"weeks": 1}, "delay.weeks", "Extra inputs"),
    ("30m", "delay", "valid dictionary"),
    (30, "delay", "valid dictionary"),
    ({"days": 91}, "delay", "at most 90 days"),
    ({"hours": 2161}, "delay", "at most 90 days"),
    ({"seconds": 7_776_001}, "delay", "at most 90 days"),
], ids=["zero", "negative", "negative-seconds", "float", "whole-float", "string-number", "bool", "two-units",
        "no-unit", "unknown-unit", "string", "bare-number", "91-days", "2161-hours", "90-days-and-a-second"])
def test_an_invalid_delay_is_rejected_naming_the_field(duration: Any, field: str, says: str) -> None:
    problem = one_problem(definition(delay=duration))
    assert problem.startswith(f"{field}: ") and says in problem


@pytest.mark.parametrize("window", [{"days": 91}, {"hours": 2161}, {"minutes": 0}, {"hours": 1, "days": 1}, "1h"])
def test_an_invalid_window_is_rejected_naming_the_aggregate(window: Any) -> None:
    problem = one_problem(with_aggregate(fn="count", window=window))
    assert problem.startswith("aggregates.x.window")


def test_a_window_over_90_days_says_the_limit() -> None:
    problem = one_problem(with_aggregate(fn="count", window={"days": 91}))
    assert problem == "aggregates.x.window: Value error, at most 90 days"


@pytest.mark.parametrize("fn", ["median", "COUNT", "", None, 1])
def test_an_unknown_fn_is_rejected_naming_the_aggregate(fn: Any) -> None:
    assert one_problem(with_aggregate(fn=fn, of="event.amount", window={"hours": 1})).startswith("aggregates.x.fn: ")


@pytest.mark.parametrize("fn", ["sum", "min", "max", "avg", "distinct"])
def test_of_is_required_unless_fn_is_count(fn: str) -> None:
    problem = one_problem(with_aggregate(fn=fn, window={"hours": 1}))
    assert problem.startswith("aggregates.x: ") and f"fn '{fn}' needs `of`" in problem


@pytest.mark.parametrize("of, unknown", [("customer.balance", "customer"), ("agg.y", "agg"), ("now", "now"),
                                         ("event.amount + customer.bonus", "customer")])
def test_of_reads_the_event_only(of: str, unknown: str) -> None:
    problem = one_problem(with_aggregate(fn="sum", of=of, window={"hours": 1}))
    assert problem.startswith("aggregates.x.of: ") and f"unknown name '{unknown}'" in problem


def test_an_of_that_does_not_parse_is_rejected_naming_the_aggregate() -> None:
    assert one_problem(with_aggregate(fn="sum", of="event.amount +", window={"hours": 1})).startswith(
        "aggregates.x.of: invalid expression")


@pytest.mark.parametrize("name", ["1fails", "a-b", "a b", "agg.x", "", "é", "a" * 65])
def test_a_bad_aggregate_name_is_rejected_naming_it(name: str) -> None:
    problem = one_problem(definition(aggregates={name: HOUR_COUNT}))
    assert problem.startswith(f"aggregates.{name[:64]}") and "should match pattern" in problem


def test_a_64_character_name_starting_with_an_underscore_is_a_good_name() -> None:
    name = "_" + "a" * 63
    assert compile_definition(definition(aggregates={name: HOUR_COUNT})).aggregates[0].name == name


def test_an_aggregate_over_scheduled_ticks_is_rejected() -> None:
    problem = one_problem(with_aggregate(fn="count", window={"hours": 1}, source="scheduled"))
    assert problem.startswith("aggregates.x: ") and "scheduled" in problem


@pytest.mark.parametrize("aggregates, defined", [(None, "(the trigger defines no aggregates)"),
                                                 ({"bar": HOUR_COUNT, "baz": HOUR_COUNT}, "(defined: bar, baz)")])
@pytest.mark.parametrize("where", ["conditions", "action.attributes", "action.payload"])
def test_agg_names_not_in_aggregates_are_rejected_where_they_are_read(
        where: str, aggregates: dict[str, Any] | None, defined: str) -> None:
    extra: dict[str, Any] = {} if aggregates is None else {"aggregates": aggregates}
    value = {
        "conditions": definition(conditions=["event.ok", "agg.foo > 1"], **extra),
        "action.attributes": definition(action={"type": "update_attribute", "attributes": {
            "n": "agg.foo + 1"}}, **extra),
        "action.payload": definition(action={"type": "webhook", "url": "https://hooks.example/x", "payload": {
            "nested": ["{{agg.foo}}"]}}, **extra),
    }[where]
    assert one_problem(value) == f"{where}: agg.foo is not defined in aggregates {defined}"


def test_subscripted_agg_names_are_checked_too_and_every_unknown_one_is_listed() -> None:
    errors = problems(definition(aggregates={"bar": HOUR_COUNT},
                                 conditions=["agg['foo'] > 1 and agg.bar > 0 and agg.qux < 3"]))
    assert errors == ["conditions: agg.foo is not defined in aggregates (defined: bar)",
                      "conditions: agg.qux is not defined in aggregates (defined: bar)"]


def test_cancel_on_without_a_delay_is_rejected() -> None:
    problem = one_problem(definition(cancelOn=[{"source": "streaming", "eventType": "purchase"}]))
    assert "cancelOn: needs a delay" in problem


@pytest.mark.parametrize("rule, field", [
    ({"source": "nowhere", "eventType": "purchase"}, "cancelOn.0.source"),
    ({"source": "streaming"}, "cancelOn.0.eventType"),
    ({"source": "streaming", "eventType": "purchase", "sameFields": "cartId"}, "cancelOn.0.sameFields"),
    ({"source": "streaming", "eventType": "purchase", "unless": 1}, "cancelOn.0.unless"),
])
def test_a_malformed_cancel_rule_is_rejected_naming_it(rule: dict[str, Any], field: str) -> None:
    assert one_problem(definition(delay={"minutes": 5}, cancelOn=[rule])).startswith(f"{field}: ")


def test_more_than_20_cancel_rules_or_aggregates_are_rejected() -> None:
    rules = [{"source": "streaming", "eventType": f"e{n}"} for n in range(21)]
    assert one_problem(definition(delay={"minutes": 5}, cancelOn=rules)).startswith("cancelOn: ")
    aggregates = {f"a{n}": HOUR_COUNT for n in range(21)}
    assert one_problem(definition(aggregates=aggregates)).startswith("aggregates: ")


@pytest.mark.parametrize("extra, says", [
    ({"delay": {"minutes": 5}}, "delay: not allowed on a scheduled trigger"),
    ({"delay": {"minutes": 5}, "cancelOn": [{"source": "streaming", "eventType": "purchase"}]},
     "delay: not allowed on a scheduled trigger"),
    ({"aggregates": {"n": HOUR_COUNT}}, "aggregates: not available on a scheduled trigger"),
])
def test_delay_and_aggregates_are_refused_on_a_scheduled_trigger(extra: dict[str, Any], says: str) -> None:
    compile_definition(SCHEDULED)  # the same trigger without them is fine
    assert says in one_problem({**SCHEDULED, **extra})


def test_every_problem_is_reported_at_once() -> None:
    errors = problems(definition(aggregates={"n": HOUR_COUNT, "s": {"fn": "sum", "of": "customer.x",
                                                                     "window": {"hours": 1}}},
                                 conditions=["agg.n > 1", "agg.m > 1"]))
    assert [error.split(":")[0] for error in errors] == ["aggregates.s.of", "conditions"]


def test_a_scheduled_trigger_with_both_a_delay_and_aggregates_is_told_of_both() -> None:
    errors = " ".join(problems({**SCHEDULED, "delay": {"minutes": 5}, "aggregates": {"n": HOUR_COUNT}}))
    assert "delay: not allowed" in errors and "aggregates: not available" in errors


def test_an_undefined_agg_name_is_reported_along_with_a_field_error() -> None:
    errors = problems(definition(aggregates={"n": {"fn": "count", "window": {"days": 91}}},
                                 conditions=["agg.n > 1", "agg.nope > 1"]))
    assert errors == ["aggregates.n.window: Value error, at most 90 days",
                      "conditions: agg.nope is not defined in aggregates (defined: n)"]


# -- aggregate identity and the public form ----------------------------------------------------

def aggregate_id(aggregate: dict[str, Any], trigger_id: str = "t1", **trigger: Any) -> str:
    compiled = compile_definition({**definition(id=trigger_id, **trigger), "aggregates": {"any_name": aggregate}})
    return compiled.aggregates[0].id


def test_identical_aggregates_in_two_triggers_share_one_id_whatever_their_names() -> None:
    fails = {"fn": "count", "window": {"minutes": 10}, "eventType": "login_failed", "filters": {"ip": "x"}}
    first = compile_definition(definition(id="a", aggregates={"fails": fails}))
    second = compile_definition(definition(id="b", eventType="purchase", priority=90, aggregates={"failures": fails}))
    assert first.aggregates[0].id == second.aggregates[0].id


def test_an_omitted_source_or_event_type_is_the_same_aggregate_as_the_triggers_own_written_out() -> None:
    assert aggregate_id(HOUR_COUNT) == aggregate_id({**HOUR_COUNT, "source": "streaming", "eventType": "login"})
    # ...but the defaults follow the trigger: the same text on another type is another aggregate.
    assert aggregate_id(HOUR_COUNT) != aggregate_id(HOUR_COUNT, eventType="purchase")


def test_a_window_written_in_other_units_is_the_same_aggregate() -> None:
    assert aggregate_id(HOUR_COUNT) == aggregate_id({"fn": "count", "window": {"minutes": 60}})


@pytest.mark.parametrize("change", [
    {"fn": "distinct"}, {"of": "event.price"}, {"window": {"hours": 2}}, {"source": "outcome"},
    {"eventType": "purchase"}, {"filters": {"currency": "EUR"}}, {"filters": {"currency": "USD"}},
])
def test_aggregates_differing_in_anything_they_compute_have_different_ids(change: dict[str, Any]) -> None:
    base = {"fn": "sum", "of": "event.amount", "window": {"hours": 1}, "filters": {"currency": "GBP"}}
    assert aggregate_id(base) != aggregate_id({**base, **change})


def test_a_trigger_without_cancel_on_or_aggregates_shows_neither_key_and_one_with_them_shows_both() -> None:
    plain = compile_definition(LOGIN).definition.public_dict()
    assert "cancelOn" not in plain and "aggregates" not in plain and "delay" not in plain
    delayed_only = compile_definition(definition(delay={"minutes": 5})).definition.public_dict()
    assert delayed_only["delay"] == {"minutes": 5}
    assert "cancelOn" not in delayed_only and "aggregates" not in delayed_only
    full = compile_definition(definition(delay={"minutes": 5},
                                         cancelOn=[{"source": "streaming", "eventType": "purchase"}],
                                         aggregates={"n": HOUR_COUNT})).definition.public_dict()
    assert full["cancelOn"] == [{"source": "streaming", "eventType": "purchase", "filters": {}, "sameFields": []}]
    assert full["aggregates"] == {"n": {"fn": "count", "window": {"hours": 1}, "filters": {}}}
