"""The definition index (which triggers an event can match, in which order) and filter checks."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.definitions import CompiledTrigger, compile_definition
from app.domain.filters import compile_filters
from app.domain.matching import DefinitionIndex, passes_filters
from app.domain.models import Source


def trigger(trigger_id: str, event_type: str = "transaction", source: str = "streaming",
            priority: int = 50, enabled: bool = True, **extra: Any) -> CompiledTrigger:
    return compile_definition({
        "id": trigger_id, "source": source, "eventType": event_type, "priority": priority,
        "enabled": enabled, "action": {"type": "enroll_journey", "journeyId": "j"}, **extra,
    })


def index_of(*triggers: CompiledTrigger) -> DefinitionIndex:
    index = DefinitionIndex()
    for t in triggers:
        index.put(t)
    return index


def ids(index: DefinitionIndex, source: Source = Source.STREAMING, event_type: str = "transaction"):
    return [t.id for t in index.candidates(source, event_type)]


@pytest.mark.parametrize(
    ("triggers", "expected"),
    [
        ([trigger("a")], ["a"]),
        ([trigger("a", priority=10), trigger("b", priority=90)], ["b", "a"]),
        ([trigger("b"), trigger("a"), trigger("c")], ["a", "b", "c"]),
        ([trigger("z", priority=60), trigger("b"), trigger("a"), trigger("y", priority=60)],
         ["y", "z", "a", "b"]),
        ([trigger("a", event_type="*", priority=10), trigger("b", priority=20)], ["b", "a"]),
        ([trigger("a", event_type="*", priority=90), trigger("b", priority=20)], ["a", "b"]),
        ([trigger("b", event_type="*"), trigger("a")], ["a", "b"]),
        ([trigger("a", event_type="click")], []),
        ([trigger("a", source="cdc")], []),
        ([trigger("a", source="cdc", event_type="*")], []),
        ([trigger("a", enabled=False)], []),
        ([trigger("a", enabled=False, event_type="*"), trigger("b")], ["b"]),
    ],
)
def test_candidates_by_source_and_type_in_priority_order(triggers, expected):
    assert ids(index_of(*triggers)) == expected


def test_other_types_and_sources_do_not_appear():
    index = index_of(trigger("t"), trigger("c", event_type="click"), trigger("o", source="outcome"),
                     trigger("w", source="outcome", event_type="*"))
    assert ids(index) == ["t"]
    assert ids(index, event_type="click") == ["c"]
    assert ids(index, Source.OUTCOME, "transaction") == ["o", "w"]
    assert ids(index, Source.OUTCOME, "impression") == ["w"]
    assert ids(index, Source.CDC, "transaction") == []


def test_wildcard_event_type_only_matches_wildcard_definitions_once():
    index = index_of(trigger("w", event_type="*"), trigger("t"))
    assert ids(index, event_type="*") == ["w"]


def test_disabled_definition_is_kept_but_not_a_candidate():
    index = index_of(trigger("a", enabled=False))
    assert "a" in index and len(index) == 1
    assert index.get("a").definition.enabled is False
    assert ids(index) == []


@pytest.mark.parametrize(
    ("replacement", "old_key", "new_key", "expected_new"),
    [
        (trigger("a", priority=99), "transaction", "transaction", ["a", "b"]),
        (trigger("a", event_type="click"), "transaction", "click", ["a"]),
        (trigger("a", enabled=False), "transaction", "transaction", ["b"]),
    ],
)
def test_put_replaces(replacement, old_key, new_key, expected_new):
    index = index_of(trigger("a", priority=10), trigger("b", priority=50))
    assert ids(index) == ["b", "a"]  # fills the candidate cache before the replacement
    index.put(replacement)
    assert len(index) == 2
    assert index.get("a") is replacement
    assert ids(index, event_type=new_key) == expected_new
    if old_key != new_key:
        assert ids(index, event_type=old_key) == ["b"]


def test_re_enabling_makes_a_definition_a_candidate_again():
    index = index_of(trigger("a", enabled=False))
    assert ids(index) == []
    index.put(trigger("a"))
    assert ids(index) == ["a"]


@pytest.mark.parametrize(
    ("remove", "expected"),
    [("a", ["b", "w"]), ("b", ["a", "w"]), ("w", ["a", "b"]), ("missing", ["a", "b", "w"])],
)
def test_remove(remove, expected):
    index = index_of(trigger("a", priority=60), trigger("b"),
                     trigger("w", event_type="*", priority=1))
    assert ids(index) == ["a", "b", "w"]
    index.remove(remove)
    assert ids(index) == expected
    assert remove not in index
    assert index.get(remove) is None


def test_remove_last_of_a_type_then_put_again():
    index = index_of(trigger("a"))
    index.remove("a")
    assert (len(index), ids(index)) == (0, [])
    index.put(trigger("a"))
    assert ids(index) == ["a"]


def test_all_lists_every_definition_including_disabled():
    index = index_of(trigger("a"), trigger("b", enabled=False))
    assert sorted(t.id for t in index.all()) == ["a", "b"]


@pytest.mark.parametrize(
    ("filters", "fields", "passes"),
    [
        ({}, {}, True),
        ({}, {"channel": "web"}, True),
        ({"channel": "web"}, {"channel": "web"}, True),
        ({"channel": "web"}, {"channel": "app"}, False),
        ({"channel": "web"}, {"channel": "Web"}, False),
        ({"channel": "web"}, {}, False),
        ({"channel": None}, {}, False),
        ({"channel": None}, {"channel": None}, True),
        ({"channel": "web", "country": "NO"}, {"channel": "web", "country": "NO"}, True),
        ({"channel": "web", "country": "NO"}, {"channel": "web", "country": "SE"}, False),
        ({"channel": "web", "country": "NO"}, {"channel": "web"}, False),
        ({"channel": ["web", "app"]}, {"channel": "app"}, True),
        ({"channel": ["web", "app"]}, {"channel": "email"}, False),
        ({"channel": []}, {"channel": "web"}, False),
        ({"channel": ["web", None]}, {"channel": None}, True),
        ({"amount": 10}, {"amount": 10}, True),
        ({"amount": 10}, {"amount": 10.0}, True),
        ({"amount": 10}, {"amount": "10"}, False),
        ({"flag": True}, {"flag": True}, True),
        ({"flag": True}, {"flag": 1}, False),
        ({"flag": 1}, {"flag": True}, False),
        ({"flag": False}, {"flag": 0}, False),
        ({"flag": 0}, {"flag": False}, False),
        ({"flag": [1, 2]}, {"flag": True}, False),
        ({"flag": [True]}, {"flag": 1}, False),
        ({"flag": [False, 5]}, {"flag": False}, True),
    ],
)
def test_passes_filters(filters, fields, passes):
    assert passes_filters(filters, fields) is passes


# -- compiled filters give passes_filters' answer for every input -----------------------------

_scalars = st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from([0.0, 1.0, 2.5, -1.0]) \
    | st.sampled_from(["", "web", "app", "1", "true"])
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2), max_leaves=6)
_names = st.sampled_from(["channel", "amount", "flag", "tags", "x"])


@given(st.dictionaries(_names, _values | st.lists(_values, max_size=4), max_size=3),
       st.dictionaries(_names, _values, max_size=5))
@settings(max_examples=2000, deadline=None)
def test_compiled_filters_agree_with_passes_filters(filters: dict[str, Any], fields: dict[str, Any]) -> None:
    assert compile_filters(filters)(fields) is passes_filters(filters, fields)


@pytest.mark.parametrize(("filters", "fields"), [
    ({"flag": True}, {"flag": 1}), ({"flag": 1}, {"flag": True}), ({"flag": [1, "a"]}, {"flag": True}),
    ({"flag": [True]}, {"flag": 1}), ({"n": 1}, {"n": 1.0}), ({"n": [1.0]}, {"n": 1}),
    ({"n": [None]}, {"n": None}), ({"n": [[1]]}, {"n": [1]}), ({"n": [1]}, {"n": [1]}),
    ({"n": {"a": 1}}, {"n": {"a": 1}}), ({"n": []}, {"n": 1}), ({}, {}), ({"n": None}, {}),
])
def test_compiled_filters_agree_on_the_corners(filters: dict[str, Any], fields: dict[str, Any]) -> None:
    assert compile_filters(filters)(fields) is passes_filters(filters, fields)


# -- the prefilter by one field's value never changes which candidates match ----------------

_filter_values = st.none() | st.booleans() | st.integers(0, 2) | st.sampled_from([1.0, "web", "app", "1"]) \
    | st.lists(st.none() | st.booleans() | st.integers(0, 2) | st.sampled_from([1.0, "web", "app"]), max_size=3)

_filter_sets = st.dictionaries(st.sampled_from(["channel", "flag", "x"]), _filter_values, max_size=2)
_event_values = st.none() | st.booleans() | st.integers(0, 2) | st.sampled_from([1.0, 2.0, "web", "app", "1"]) \
    | st.just([1]) | st.just({"a": 1})


@given(st.lists(_filter_sets, min_size=1, max_size=12),
       st.dictionaries(st.sampled_from(["channel", "flag", "x"]), _event_values, max_size=3))
@settings(max_examples=1500, deadline=None)
def test_matching_gives_the_candidates_whose_filters_pass(filter_sets: list[dict[str, Any]],
                                                          fields: dict[str, Any]) -> None:
    index = DefinitionIndex()
    for n, filters in enumerate(filter_sets):
        index.put(trigger(f"t{n}", priority=n % 3 * 10 + 1, filters=filters))
    expected = tuple(t for t in index.candidates(Source.STREAMING, "transaction")
                     if passes_filters(t.definition.filters, fields))
    assert index.matching(Source.STREAMING, "transaction", fields) == expected


def test_many_definitions_told_apart_by_a_filter_are_looked_up_not_scanned() -> None:
    index = DefinitionIndex()
    for n in range(500):
        index.put(trigger(f"t{n}", filters={"channel": f"c{n}"}))
    index.put(trigger("any"))  # no filter: a candidate for every event
    assert [t.id for t in index.matching(Source.STREAMING, "transaction", {"channel": "c7"})] == ["any", "t7"]
    prefiltered = index._prefiltered[(Source.STREAMING, "transaction")]
    assert prefiltered.field == "channel" and len(prefiltered.possible({"channel": "c7"})) == 2
