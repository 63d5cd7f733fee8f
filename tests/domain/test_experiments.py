"""Experiments without I/O: the `experiment` field validated whole, the deterministic
assignment (holdout share and weights within ±4% over many ids, stable per customer), the
variant's action on the firing, conversion windows (inside once, outside never, replays,
expiry, the bound) and a report's counts per group."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from app.domain import experiments
from app.domain.definitions import CompiledTrigger, compile_definition
from app.domain.engine import evaluate
from app.domain.experiments import (
    DEFAULT_VARIANT,
    MAX_OPEN_WINDOWS,
    Window,
    assign,
    bucket,
    convert,
    count_groups,
    open_windows,
)
from app.domain.matching import DefinitionIndex
from app.domain.models import HOLDOUT, Event, Experiment, Source
from app.errors import InvalidDefinition

NOW = datetime(2026, 1, 1, 9, tzinfo=UTC)
IDS = [f"customer-{n}" for n in range(20_000)]
WEBHOOK = {"type": "webhook", "url": "https://hooks.example/a"}
JOURNEY = {"type": "enroll_journey", "journeyId": "vip-welcome"}
CONVERSION = {"source": "outcome", "eventType": "conversion", "within": {"days": 7}}


def definition(experiment: Any, **extra: Any) -> dict[str, Any]:
    return {"id": "offer", "source": "streaming", "eventType": "visit", "action": WEBHOOK,
            "experiment": experiment, **extra}


def errors_of(experiment: Any) -> list[str]:
    with pytest.raises(InvalidDefinition) as caught:
        compile_definition(definition(experiment))
    return caught.value.errors


def shares(experiment: Experiment, trigger_id: str = "offer") -> dict[str, float]:
    counts = Counter(assign(experiment, trigger_id, customer) for customer in IDS)
    return {group: n / len(IDS) for group, n in counts.items()}


# -- validation -----------------------------------------------------------------------------

@pytest.mark.parametrize(("experiment", "field", "words"), [
    ({"variants": [{"name": "A", "weight": 0, "action": WEBHOOK}]}, "experiment.variants.0.weight", "greater"),
    ({"variants": [{"name": "A", "weight": 1.5, "action": WEBHOOK}]}, "experiment.variants.0.weight", "integer"),
    ({"variants": [{"name": "A", "weight": "2", "action": WEBHOOK}]}, "experiment.variants.0.weight", "integer"),
    ({"holdoutPercent": 95}, "experiment.holdoutPercent", "90"),
    ({"holdoutPercent": -1}, "experiment.holdoutPercent", "0"),
    ({"holdoutPercent": 10.5}, "experiment.holdoutPercent", "integer"),
    ({"variants": [{"name": "A", "weight": 1, "action": WEBHOOK}, {"name": "A", "weight": 1, "action": JOURNEY}]},
     "experiment.variants", "unique"),
    ({"variants": [{"name": "holdout", "weight": 1, "action": WEBHOOK}]}, "experiment.variants", "holdout"),
    ({"conversion": {"source": "outcome", "eventType": "conversion"}}, "experiment.conversion.within", "required"),
    ({"variants": [{"name": "A", "weight": 1, "action": {"type": "webhook"}}]}, "experiment.variants.0.action",
     "url"),
    ({"holdoutPercent": 10, "colour": "red"}, "experiment.colour", "Extra"),
])
def test_a_bad_experiment_is_rejected_naming_the_field(experiment: Any, field: str, words: str) -> None:
    problems = errors_of(experiment)
    assert any(problem.startswith(field) and words.lower() in problem.lower() for problem in problems), problems


def test_every_problem_of_an_experiment_is_reported_at_once() -> None:
    problems = errors_of({"holdoutPercent": 91, "variants": [{"name": "A", "weight": 0, "action": WEBHOOK}],
                          "conversion": {"source": "outcome", "eventType": "conversion"}})
    assert {p.split(":")[0] for p in problems} >= {"experiment.holdoutPercent", "experiment.variants.0.weight",
                                                   "experiment.conversion.within"}, problems


def test_a_variant_action_is_validated_like_the_trigger_action() -> None:
    bad_payload = {**WEBHOOK, "payload": {"x": "{{ nosuch.name }}"}}
    problems = errors_of({"variants": [{"name": "A", "weight": 1, "action": bad_payload}]})
    assert any(p.startswith("experiment.variants.0.action.payload") for p in problems), problems


def test_a_valid_experiment_compiles_and_reads_back() -> None:
    compiled = compile_definition(definition({"holdoutPercent": 10, "conversion": CONVERSION, "variants": [
        {"name": "A", "weight": 1, "action": WEBHOOK}, {"name": "B", "weight": 3, "action": JOURNEY}]}))
    assert compiled.variant_actions["B"] == JOURNEY | {"deduplication": "skip_if_active"}
    assert compiled.definition.public_dict()["experiment"]["holdoutPercent"] == 10


# -- assignment ----------------------------------------------------------------------------

def test_the_bucket_is_sha256_of_trigger_and_customer() -> None:
    import hashlib
    digest = hashlib.sha256(b"offer\x00c-1").digest()
    assert bucket("offer", "c-1") == int.from_bytes(digest[:8], "big") % 10_000


def test_a_20_percent_holdout_holds_out_20_percent_within_4_points() -> None:
    assert abs(shares(Experiment(holdoutPercent=20))[HOLDOUT] - 0.20) <= 0.04


def test_without_variants_the_rest_is_the_default_group() -> None:
    assert set(shares(Experiment(holdoutPercent=20))) == {HOLDOUT, DEFAULT_VARIANT}


@pytest.mark.parametrize("holdout", [0, 10, 50, 90])
def test_weighted_variants_split_the_rest_by_weight_within_4_points(holdout: int) -> None:
    experiment = Experiment.model_validate({"holdoutPercent": holdout, "variants": [
        {"name": "A", "weight": 1, "action": WEBHOOK}, {"name": "B", "weight": 3, "action": JOURNEY}]})
    got = shares(experiment)
    rest = 1 - holdout / 100
    assert abs(got.get(HOLDOUT, 0) - holdout / 100) <= 0.04
    assert abs(got["A"] - rest / 4) <= 0.04 and abs(got["B"] - rest * 3 / 4) <= 0.04


def test_the_same_customer_gets_the_same_group_and_other_triggers_draw_anew() -> None:
    experiment = Experiment(holdoutPercent=50)
    first = [assign(experiment, "offer", customer) for customer in IDS[:2000]]
    assert first == [assign(experiment, "offer", customer) for customer in IDS[:2000]]
    other = [assign(experiment, "other-trigger", customer) for customer in IDS[:2000]]
    assert first != other  # independent draws per trigger, not one global split


def test_raising_the_holdout_moves_only_customers_between_the_boundaries() -> None:
    before, after = Experiment(holdoutPercent=10), Experiment(holdoutPercent=20)
    for customer in IDS[:3000]:
        old, new = assign(before, "offer", customer), assign(after, "offer", customer)
        if old == HOLDOUT:
            assert new == HOLDOUT
        elif new == HOLDOUT:
            assert 1000 <= bucket("offer", customer) < 2000


def test_a_firing_carries_its_group_and_its_variant_action() -> None:
    compiled = compile_definition(definition({"holdoutPercent": 30, "variants": [
        {"name": "A", "weight": 1, "action": WEBHOOK}, {"name": "B", "weight": 1, "action": JOURNEY}]}))
    index = DefinitionIndex()
    index.put(compiled)
    seen: dict[str, str] = {}
    for customer in IDS[:300]:
        event = Event(id=f"e-{customer}", type="visit", customer_id=customer, source=Source.STREAMING,
                      timestamp=NOW, fields={})
        [firing] = evaluate(index, event, None, lambda _: None, NOW).firings
        assert firing.group == assign(compiled.definition.experiment, "offer", customer)  # type: ignore[arg-type]
        seen[firing.group] = firing.action["type"]
        assert firing.to_json()["group"] == firing.group
    assert seen == {HOLDOUT: "webhook", "A": "webhook", "B": "enroll_journey"}


def test_a_trigger_without_experiment_has_no_group() -> None:
    compiled: CompiledTrigger = compile_definition({"id": "plain", "source": "streaming", "eventType": "visit",
                                                    "action": WEBHOOK})
    index = DefinitionIndex()
    index.put(compiled)
    event = Event(id="e", type="visit", customer_id="c", source=Source.STREAMING, timestamp=NOW, fields={})
    [firing] = evaluate(index, event, None, lambda _: None, NOW).firings
    assert firing.group is None and "group" not in firing.to_json()


# -- conversion windows ------------------------------------------------------------------------

def window(firing_id: str = "f-1", opened: int = 1000, until: int = 2000, trigger: str = "offer") -> Window:
    return Window(firing_id, trigger, "A", opened, until)


def test_an_event_inside_the_window_converts_once_and_a_replay_converts_nothing() -> None:
    windows, converted = convert([window()], {"offer"}, 1500)
    assert [w.firing_id for w in converted] == ["f-1"] and windows[0].converted
    again, twice = convert(windows, {"offer"}, 1600)
    assert twice == [] and again == windows


def test_an_event_outside_the_window_converts_nothing() -> None:
    assert convert([window()], {"offer"}, 999)[1] == []
    after, converted = convert([window()], {"offer"}, 2001)
    assert converted == [] and after == []  # expired: dropped


def test_each_open_firing_of_the_trigger_is_converted_by_the_first_qualifying_event() -> None:
    windows = [window("f-1", 1000, 5000), window("f-2", 2000, 6000), window("f-3", 1000, 5000, trigger="other")]
    after, converted = convert(windows, {"offer"}, 3000)
    assert [w.firing_id for w in converted] == ["f-1", "f-2"]
    assert [w.firing_id for w in convert(after, {"offer", "other"}, 3500)[1]] == ["f-3"]


def test_opening_keeps_a_replayed_firing_and_drops_expired_windows() -> None:
    converted = Window("f-1", "offer", "A", 1000, 5000, converted=True)
    kept = open_windows([converted, window("old", 0, 10)], [window("f-1", 1000, 5000)], now_ms=100)
    assert kept == [converted]


def test_a_customer_keeps_at_most_the_bound_of_open_windows_newest_first() -> None:
    opened = [window(f"f-{n}", n, 10**9) for n in range(MAX_OPEN_WINDOWS + 20)]
    kept = open_windows([], opened, now_ms=0)
    assert len(kept) == MAX_OPEN_WINDOWS and kept[0].firing_id == "f-20"


def test_a_window_reads_back_from_its_stored_form() -> None:
    stored = Window("f", "offer", HOLDOUT, 1, 2, converted=True)
    assert Window.from_json(stored.to_json()) == stored


def test_counts_per_group_count_each_firing_and_conversion_once_and_only_in_range() -> None:
    counts = count_groups([("f1", HOLDOUT), ("f2", HOLDOUT), ("f3", "A"), ("f3", "A"), ("f4", "A")],
                          ["f1", "f3", "f3", "outside"])
    assert list(counts) == [HOLDOUT, "A"]
    assert (counts[HOLDOUT].firings, counts[HOLDOUT].conversions) == (2, 1)
    assert (counts["A"].firings, counts["A"].conversions, counts["A"].rate) == (2, 1, 0.5)


def test_variant_action_finds_a_variant_by_name() -> None:
    experiment = Experiment.model_validate({"variants": [{"name": "A", "weight": 1, "action": JOURNEY}]})
    assert experiments.variant_action(experiment, "A") is not None
    assert experiments.variant_action(experiment, HOLDOUT) is None
