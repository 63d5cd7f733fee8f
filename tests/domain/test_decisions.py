"""Decision flows: eligible offers ranked by score descending, ties by id, at most maxOffers."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from app.domain.decisions import CompiledDecisionFlow, decide, decision_id
from app.domain.definitions import compile_decision_flow
from app.domain.expressions import Scope
from app.errors import InvalidDefinition

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def flow(*offers: dict[str, Any], max_offers: int = 10, flow_id: str = "next-best-offer") -> CompiledDecisionFlow:
    return compile_decision_flow({"id": flow_id, "maxOffers": max_offers, "offers": list(offers)})


def scope(event: dict[str, Any] | None = None, customer: dict[str, Any] | None = None) -> Scope:
    return Scope(event=event if event is not None else {"amount": 1500}, customer=customer, now=NOW)


def ranked(compiled: CompiledDecisionFlow, sc: Scope | None = None) -> list[str]:
    offers, errors = decide(compiled, sc or scope())
    assert errors == []
    return [offer["id"] for offer in offers]


def flow_errors(value: Any, key: str | None = None) -> list[str]:
    with pytest.raises(InvalidDefinition) as info:
        compile_decision_flow(value, key)
    assert info.value.errors
    return info.value.errors


# --- the contract example ---------------------------------------------------------------------


def test_contract_example():
    compiled = compile_decision_flow({
        "id": "next-best-offer", "maxOffers": 1,
        "offers": [{"id": "card-upgrade", "conditions": ["customer.tier == 'gold'"],
                    "score": "event.amount / 100"}],
    }, key="next-best-offer")
    assert compiled.id == "next-best-offer"

    offers, errors = decide(compiled, scope({"amount": 1500}, {"tier": "gold"}))
    assert errors == []
    assert offers == [{"id": "card-upgrade", "score": 15.0}]

    offers, errors = decide(compiled, scope({"amount": 1500}, {"tier": "silver"}))
    assert (offers, errors) == ([], [])


# --- ranking ----------------------------------------------------------------------------------


def test_offers_are_ranked_by_score_descending():
    compiled = flow({"id": "low", "score": "1"}, {"id": "high", "score": "30"}, {"id": "mid", "score": "2.5"})
    offers, _ = decide(compiled, scope())
    assert [(o["id"], o["score"]) for o in offers] == [("high", 30.0), ("mid", 2.5), ("low", 1.0)]


def test_ties_are_broken_by_offer_id():
    compiled = flow({"id": "c", "score": "5"}, {"id": "a", "score": "5"}, {"id": "b", "score": "5"},
                    {"id": "z", "score": "6"})
    assert ranked(compiled) == ["z", "a", "b", "c"]


def test_negative_scores_rank_below_the_default():
    compiled = flow({"id": "neg", "score": "-1"}, {"id": "zero"})
    assert ranked(compiled) == ["zero", "neg"]


def test_ranking_does_not_depend_on_definition_order():
    offers = [{"id": "a", "score": "1"}, {"id": "b", "score": "3"}, {"id": "c", "score": "2"}]
    assert ranked(flow(*offers)) == ranked(flow(*reversed(offers))) == ["b", "c", "a"]


@pytest.mark.parametrize(("max_offers", "expected"), [(1, ["b"]), (2, ["b", "c"]), (3, ["b", "c", "a"]),
                                                      (100, ["b", "c", "a"])])
def test_max_offers_cuts_after_ranking(max_offers, expected):
    compiled = flow({"id": "a", "score": "1"}, {"id": "b", "score": "3"}, {"id": "c", "score": "2"},
                    max_offers=max_offers)
    assert ranked(compiled) == expected


def test_max_offers_defaults_to_one():
    compiled = compile_decision_flow({"id": "f", "offers": [{"id": "a"}, {"id": "b", "score": "1"}]})
    assert compiled.definition.max_offers == 1
    assert ranked(compiled) == ["b"]


def test_score_defaults_to_zero():
    offers, errors = decide(flow({"id": "plain"}), scope())
    assert errors == []
    assert offers == [{"id": "plain", "score": 0}]
    assert isinstance(offers[0]["score"], float)


def test_score_is_a_float_even_for_integer_expressions():
    offers, _ = decide(flow({"id": "a", "score": "event.amount // 100"}), scope({"amount": 1550}))
    assert offers[0]["score"] == 15.0
    assert isinstance(offers[0]["score"], float)


# --- eligibility ---------------------------------------------------------------------------------


def test_offers_whose_conditions_are_false_are_excluded():
    compiled = flow(
        {"id": "all-true", "conditions": ["event.amount > 1000", "customer.tier == 'gold'"]},
        {"id": "one-false", "conditions": ["event.amount > 1000", "customer.tier == 'silver'"]},
        {"id": "no-conditions"},
    )
    assert ranked(compiled, scope({"amount": 1500}, {"tier": "gold"})) == ["all-true", "no-conditions"]


def test_no_eligible_offer_gives_an_empty_result():
    compiled = flow({"id": "a", "conditions": ["event.amount > 10**6"]})
    assert decide(compiled, scope()) == ([], [])


def test_customer_and_event_are_in_scope():
    compiled = flow({"id": "a", "conditions": ["customer.segment == event.segment"],
                     "score": "event.amount * customer.weight"})
    offers, errors = decide(compiled, scope({"amount": 10, "segment": "x"}, {"segment": "x", "weight": 2}))
    assert errors == []
    assert offers == [{"id": "a", "score": 20.0}]


def test_missing_customer_attribute_is_absent_not_an_error():
    compiled = flow({"id": "a", "conditions": ["customer.tier is None"]})
    assert ranked(compiled, scope(customer=None)) == ["a"]


def test_now_is_in_scope():
    compiled = flow({"id": "a", "conditions": ["now.year == 2024"]})
    assert ranked(compiled) == ["a"]


@pytest.mark.parametrize(("bad", "where"), [
    ({"conditions": ["event.missing > 1"]}, "condition reads a missing event field"),
    ({"score": "event.amount / 0"}, "score divides by zero"),
    ({"score": "'not a number'"}, "score is text"),
    ({"score": "customer.nothing"}, "score is None"),
    ({"score": "[1, 2]"}, "score is a list"),
])
def test_failing_expression_makes_only_that_offer_ineligible_and_is_reported(bad, where):
    compiled = flow({"id": "broken", **bad}, {"id": "fine", "score": "1"})

    offers, errors = decide(compiled, scope({"amount": 1500}))

    assert [o["id"] for o in offers] == ["fine"], where
    assert len(errors) == 1
    assert "'broken'" in errors[0]


def test_every_failing_offer_is_reported():
    compiled = flow({"id": "x", "score": "event.nope"}, {"id": "y", "conditions": ["event.nope"]}, {"id": "ok"})
    offers, errors = decide(compiled, scope())
    assert [o["id"] for o in offers] == ["ok"]
    assert len(errors) == 2
    assert "'x'" in errors[0] and "'y'" in errors[1]


def test_condition_false_before_a_failing_one_is_not_an_error():
    # all() stops at the first false condition, so the failing one is never evaluated.
    compiled = flow({"id": "a", "conditions": ["event.amount < 0", "event.nope > 1"]})
    assert decide(compiled, scope()) == ([], [])


def test_extra_offer_fields_are_passed_through():
    compiled = flow({"id": "card", "title": "Card upgrade", "channel": "email",
                     "meta": {"campaign": 7, "tags": ["a", "b"]}, "score": "2",
                     "conditions": ["event.amount > 0"]})

    offers, _ = decide(compiled, scope())

    assert offers == [{"id": "card", "title": "Card upgrade", "channel": "email",
                       "meta": {"campaign": 7, "tags": ["a", "b"]}, "score": 2.0}]
    assert "conditions" not in offers[0]
    json.dumps(offers, allow_nan=False)  # publishable as is


def test_result_score_is_the_value_not_the_expression_text():
    offers, _ = decide(flow({"id": "a", "score": "event.amount"}), scope({"amount": 3}))
    assert offers[0]["score"] == 3.0


def test_decide_is_repeatable():
    compiled = flow({"id": "a", "score": "event.amount"}, {"id": "b", "score": "2"})
    assert decide(compiled, scope()) == decide(compiled, scope())


def test_nan_score_does_not_disturb_the_ranking_of_other_offers():
    compiled = flow({"id": "b", "score": "2"}, {"id": "n", "score": "float('nan')"},
                    {"id": "c", "score": "3"}, {"id": "a", "score": "1"})
    offers, _ = decide(compiled, scope())
    assert [o["id"] for o in offers if o["id"] != "n"] == ["c", "b", "a"]


@pytest.mark.parametrize("score", ["float('nan')", "float('inf')", "10**400"])
def test_non_finite_score_makes_the_offer_ineligible(score):
    compiled = flow({"id": "weird", "score": score}, {"id": "fine", "score": "1"})
    offers, errors = decide(compiled, scope())
    assert [o["id"] for o in offers] == ["fine"]
    assert len(errors) == 1 and "'weird'" in errors[0]


# --- compile_decision_flow ------------------------------------------------------------------------


@pytest.mark.parametrize(("offer", "fragment"), [
    ({"id": "o2", "score": "event.amount +"}, "syntax"),
    ({"id": "o2", "conditions": ["secret.value > 1"]}, "unknown name"),
    ({"id": "o2", "conditions": ["__import__('os')"]}, ""),
    ({"id": "o2", "conditions": [""]}, "empty"),
])
def test_bad_expressions_are_rejected_naming_the_offer(offer, fragment):
    with pytest.raises(InvalidDefinition) as info:
        compile_decision_flow({"id": "f", "offers": [{"id": "o1"}, offer]})
    assert info.value.trigger_id == "f"
    message = " ".join(info.value.errors)
    assert "offer 'o2'" in message
    assert "offer 'o1'" not in message
    assert fragment in message


@pytest.mark.parametrize("max_offers", [0, -1, 101, "2", True, 1.5])
def test_max_offers_bounds_and_type(max_offers):
    errors = flow_errors({"id": "f", "maxOffers": max_offers, "offers": [{"id": "a"}]})
    assert any("maxOffers" in e for e in errors)


@pytest.mark.parametrize("max_offers", [1, 100])
def test_max_offers_limits_are_inclusive(max_offers):
    compiled = compile_decision_flow({"id": "f", "maxOffers": max_offers, "offers": [{"id": "a"}]})
    assert compiled.definition.max_offers == max_offers


@pytest.mark.parametrize("value", [{"id": "f", "offers": []}, {"id": "f"}])
def test_a_flow_needs_at_least_one_offer(value):
    errors = flow_errors(value)
    assert any("offers" in e for e in errors)


@pytest.mark.parametrize("offer", [{"score": "1"}, {"id": ""}, {"id": "a", "conditions": "event.x"},
                                   {"id": "a", "score": 5}])
def test_malformed_offers_are_rejected(offer):
    flow_errors({"id": "f", "offers": [offer]})


def test_unknown_flow_fields_are_rejected():
    errors = flow_errors({"id": "f", "offers": [{"id": "a"}], "max_offers": 2})
    assert any("max_offers" in e for e in errors)


def test_flow_id_must_match_the_key():
    errors = flow_errors({"id": "f", "offers": [{"id": "a"}]}, key="g")
    assert any("does not match" in e for e in errors)


def test_flow_id_pattern():
    flow_errors({"id": "bad id", "offers": [{"id": "a"}]})


def test_compile_decision_flow_accepts_json_bytes():
    compiled = compile_decision_flow(json.dumps({"id": "f", "offers": [{"id": "a"}]}).encode(), key="f")
    assert [o.offer.id for o in compiled.offers] == ["a"]


# --- decision ids --------------------------------------------------------------------------------


def test_decision_id_is_deterministic_per_firing():
    assert decision_id("firing-1") == decision_id("firing-1")
    assert decision_id("firing-1") != decision_id("firing-2")
    uuid.UUID(decision_id("firing-1"))


def test_decision_id_differs_from_the_enrollment_id_of_the_same_firing():
    from app.domain.journeys import enrollment_id

    assert decision_id("firing-1") != enrollment_id("firing-1")
