"""Sliding-window aggregates: adding events to one customer's entries and reading the value."""

from __future__ import annotations

import copy
import json
import math
import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.models import AggregateFn
from app.domain.windows import (
    BUCKETS_PER_WINDOW,
    MAX_DISTINCT_VALUES,
    MAX_ENTRIES,
    add,
    live_entries,
    value,
)

COUNT, SUM, MIN, MAX, AVG, DISTINCT = (AggregateFn.COUNT, AggregateFn.SUM, AggregateFn.MIN,
                                       AggregateFn.MAX, AggregateFn.AVG, AggregateFn.DISTINCT)
NUMERIC = [SUM, MIN, MAX, AVG]
MINUTE = 60_000
HOUR = 60 * MINUTE


def build(fn, window, events):
    """The entries after adding `events` [(ts, value)] one by one."""
    entries = None
    for ts, v in events:
        entries = add(entries, fn, window, ts, v)
    return entries or []


def reference(fn, window, events, at):
    """What the aggregate should be, from every event, with nothing stored."""
    inside = [v for ts, v in events if at - window <= ts <= at]
    if fn is COUNT:
        return len(inside)
    if fn is DISTINCT:
        return len({json.dumps(v, sort_keys=True) for v in inside
                    if v is not None and not (type(v) is float and not math.isfinite(v))})
    numbers = [v for v in inside if type(v) in (int, float) and math.isfinite(v)]
    if fn is SUM:
        return sum(numbers)
    if not numbers:
        return None
    if fn is MIN:
        return min(numbers)
    if fn is MAX:
        return max(numbers)
    return sum(numbers) / len(numbers)


@pytest.mark.parametrize(
    ("fn", "events", "expected"),
    [
        (COUNT, [(1000, None), (2000, "x"), (3000, 5)], 3),
        (SUM, [(1000, 5), (2000, 7), (3000, -2)], 10),
        (SUM, [(1000, 5), (2000, 2.5)], 7.5),
        (MIN, [(1000, 5), (2000, -7), (3000, 3)], -7),
        (MAX, [(1000, 5), (2000, -7), (3000, 3)], 5),
        (MAX, [(1000, 1), (2000, 1.5)], 1.5),
        (AVG, [(1000, 1), (2000, 2)], 1.5),
        (AVG, [(1000, 2), (2000, 2)], 2.0),
        (DISTINCT, [(1000, "a"), (2000, "b"), (3000, "a")], 2),
        (DISTINCT, [(1000, "a"), (2000, "a"), (3000, "a")], 1),
        (SUM, [(0, 100), (MINUTE, 1), (2 * MINUTE, 2)], 3),  # the first event left the window
        (COUNT, [(0, None), (MINUTE + 1, None), (2 * MINUTE, None)], 2),
        (AVG, [(0, 100), (MINUTE + 500, 4), (2 * MINUTE, 6)], 5.0),
        (DISTINCT, [(0, "a"), (2 * MINUTE, "b")], 1),
    ],
    ids=["count", "sum", "sum-float", "min", "max", "max-float", "avg", "avg-whole", "distinct",
         "distinct-one", "sum-evicted", "count-evicted", "avg-evicted", "distinct-evicted"],
)
def test_known_sequences_at_the_last_event(fn, events, expected):
    entries = build(fn, MINUTE, events)
    got = value(entries, fn, MINUTE, events[-1][0])
    assert got == expected
    assert type(got) is type(expected)


@pytest.mark.parametrize("fn", list(AggregateFn))
@pytest.mark.parametrize(
    ("event_ts", "counted"),
    [(10 * MINUTE - MINUTE, True), (10 * MINUTE - MINUTE - 1, False), (10 * MINUTE, True),
     (10 * MINUTE + 1, False)],
    ids=["exactly-window-before", "one-ms-earlier", "at-the-query", "after-the-query"],
)
def test_window_edges(fn, event_ts, counted):
    at = 10 * MINUTE
    entries = build(fn, MINUTE, [(event_ts, 4)])
    empty = 0 if fn in (COUNT, SUM, DISTINCT) else None
    assert value(entries, fn, MINUTE, at) == (reference(fn, MINUTE, [(event_ts, 4)], at) if counted else empty)
    assert (value(entries, fn, MINUTE, at) != empty) is counted


@pytest.mark.parametrize("fn", list(AggregateFn))
def test_the_current_event_counts(fn):
    entries = build(fn, MINUTE, [(1000, 3), (2000, 9)])
    assert value(entries, fn, MINUTE, 2000) == {COUNT: 2, SUM: 12, MIN: 3, MAX: 9, AVG: 6.0, DISTINCT: 2}[fn]
    assert value(entries, fn, MINUTE, 1999) == {COUNT: 1, SUM: 3, MIN: 3, MAX: 3, AVG: 3.0, DISTINCT: 1}[fn]


@pytest.mark.parametrize("fn", list(AggregateFn))
@pytest.mark.parametrize("fresh", [None, []], ids=["none", "empty-list"])
def test_no_events(fn, fresh):
    expected = 0 if fn in (COUNT, SUM, DISTINCT) else None
    assert value(fresh, fn, MINUTE, 1000) == expected
    entries = build(fn, MINUTE, [(1000, 5)])
    assert value(entries, fn, MINUTE, 1000 + MINUTE + 1) == expected  # all out of the window
    assert value(entries, fn, MINUTE, 999) == expected  # all after the query


def test_out_of_order_events_are_inserted_in_order():
    events = [(5000, 5), (1000, 1), (3000, 3), (4000, 4), (2000, 2)]
    entries = build(SUM, MINUTE, events)
    assert [e[0] for e in entries] == [1000, 2000, 3000, 4000, 5000]
    assert value(entries, SUM, MINUTE, 5000) == 15
    assert value(entries, SUM, MINUTE, 3000) == 6  # a replayed event sees the window as it was
    assert value(build(MIN, MINUTE, events), MIN, MINUTE, 5000) == 1


def test_out_of_order_distinct_keeps_the_latest_sighting():
    entries = build(DISTINCT, MINUTE, [(1000, "a"), (5000, "b"), (3000, "a"), (2000, "a")])
    assert entries == [[3000, '"a"'], [5000, '"b"']]
    assert value(entries, DISTINCT, MINUTE, 5000) == 2
    assert value(entries, DISTINCT, MINUTE, 3001 + MINUTE) == 1  # only "b" is left


@pytest.mark.parametrize(
    ("fn", "values", "entry"),
    [
        (COUNT, [1, 2, 3], [1000, 3, 0, 0, 0]),
        (SUM, [4, -1, 2], [1000, 3, 5, -1, 4]),
        (MIN, [4, -1.5, 2], [1000, 3, 4.5, -1.5, 4]),
        (AVG, [4, "x", 2], [1000, 2, 6, 2, 4]),
    ],
    ids=["count", "sum", "min-float", "avg-skips-text"],
)
def test_events_in_the_same_millisecond_share_an_entry(fn, values, entry):
    entries = build(fn, MINUTE, [(500, 1)] + [(1000, v) for v in values])
    assert entries[-1] == entry
    assert len(entries) == 2


def test_an_out_of_order_event_merges_into_its_millisecond():
    entries = build(MAX, MINUTE, [(1000, 1), (3000, 3), (1000, 7)])
    assert entries == [[1000, 2, 8, 1, 7], [3000, 1, 3, 3, 3]]


@pytest.mark.parametrize("fn", list(AggregateFn))
def test_eviction_keeps_only_what_a_later_query_can_need(fn):
    entries = build(fn, MINUTE, [(0, 1), (1000, 2), (MINUTE + 500, 3)])
    assert [e[0] for e in entries] == [1000, MINUTE + 500]  # 0 < newest - window; 1000 is not
    assert add(entries, fn, MINUTE, 499, 9) == entries  # older than any query can reach: not kept
    assert add(entries, fn, MINUTE, 500, 9)[0][0] == 500  # exactly window before the newest: kept
    assert len(add(entries, fn, MINUTE, 10 * MINUTE, 4)) == 1  # a jump forward clears the rest


@pytest.mark.parametrize(
    "skipped",
    [None, "5", True, False, math.nan, math.inf, -math.inf, {"a": 1}, [1], 2**2000],
    ids=["none", "text", "true", "false", "nan", "inf", "-inf", "object", "list", "beyond-float"],
)
def test_values_that_are_not_finite_numbers_are_skipped_but_counted_by_count(skipped):
    events = [(1000, 2), (2000, skipped), (3000, 4)]
    for fn, expected in [(SUM, 6), (MIN, 2), (MAX, 4), (AVG, 3.0), (COUNT, 3)]:
        assert value(build(fn, MINUTE, events), fn, MINUTE, 3000) == expected, fn
    for fn in NUMERIC:
        assert build(fn, MINUTE, [(1000, skipped)]) == []
        assert value(build(fn, MINUTE, [(1000, skipped)]), fn, MINUTE, 1000) == (0 if fn is SUM else None)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, "1", 1.0, True], 4),
        ([{"a": 1, "b": [2, 3]}, {"b": [2, 3], "a": 1}], 1),
        ([[1, 2], [2, 1]], 2),
        ([None, None, "x"], 1),
        ([None, math.nan, math.inf], 0),
        ([0, False, "", [], {}], 5),
        ([2**70, 2**70, 2**70 + 1, str(2**70)], 3),
        (["é", "\u00e9", "e\u0301"], 2),
        (["x" * 500, "x" * 500, "x" * 499 + "y", {"k": "v" * 300}], 3),
    ],
    ids=["number-text-bool", "object-key-order", "list-order", "none", "not-json",
         "falsy", "beyond-64-bits", "unicode", "long-values"],
)
def test_distinct_tells_values_apart_by_their_json(values, expected):
    entries = build(DISTINCT, MINUTE, [(1000 + i, v) for i, v in enumerate(values)])
    assert value(entries, DISTINCT, MINUTE, 2000) == expected
    assert orjson.loads(orjson.dumps(entries)) == entries  # the state stays storable
    assert all(len(e[1]) <= 64 for e in entries)


def test_sums_stay_ints_until_a_float_arrives():
    entries = build(SUM, MINUTE, [(1000, 2), (1000, 3), (2000, 4)])
    assert type(value(entries, SUM, MINUTE, 2000)) is int
    entries = add(entries, SUM, MINUTE, 3000, 0.5)
    assert value(entries, SUM, MINUTE, 3000) == 9.5
    assert type(value(build(SUM, MINUTE, [(1000, 1), (1000, 2.0)]), SUM, MINUTE, 1000)) is float
    assert type(value(build(AVG, MINUTE, [(1000, 4)]), AVG, MINUTE, 1000)) is float


def test_totals_stay_storable_as_json():
    big = 2**62
    entries = build(SUM, MINUTE, [(1000, big), (1000, big), (1000, big), (2000, 2**64), (3000, 1e308), (3000, 1e308)])
    assert orjson.loads(orjson.dumps(entries)) == entries
    assert entries[0][2] == float(3 * big)
    assert entries[1][2] == float(2**64)
    assert entries[2][2] == pytest.approx(1.7976931348623157e308)


def test_coarsening_keeps_count_and_sum_exact():
    window = 60 * 100  # buckets of 100 ms
    events = [(i * 10, i) for i in range(MAX_ENTRIES + 1)]  # 121 distinct ms, all in one window
    sums = build(SUM, window, events)
    counts = build(COUNT, window, events)
    assert len(sums) == len(counts) == 13
    assert value(sums, SUM, window, 1200) == sum(range(MAX_ENTRIES + 1))
    assert value(counts, COUNT, window, 1200) == MAX_ENTRIES + 1
    assert value(build(AVG, window, events), AVG, window, 1200) == MAX_ENTRIES / 2


def test_coarsening_bounds_the_entries_and_never_undercounts():
    window = HOUR
    bucket = window // BUCKETS_PER_WINDOW
    rng = random.Random(7)
    ts = 0
    events = []
    entries = None
    first = 0  # events before this index are older than any window asked about here
    for _ in range(4000):
        ts += rng.randint(0, 3000)
        v = rng.randint(1, 100)
        events.append((ts, v))
        entries = add(entries, SUM, window, ts, v)
        assert len(entries) <= MAX_ENTRIES
        assert [e[0] for e in entries] == sorted(e[0] for e in entries)
        while events[first][0] < ts - window - bucket:
            first += 1
        recent = events[first:]
        # at least the exact answer, at most one bucket's worth of events beyond the window
        assert reference(SUM, window, recent, ts) <= value(entries, SUM, window, ts)
        assert value(entries, SUM, window, ts) <= reference(SUM, window + bucket - 1, recent, ts)
    assert value(entries, SUM, window, ts) > reference(SUM, window, events, ts)  # bucketing did show
    counts = build(COUNT, window, [(t, None) for t, _ in events])
    assert len(counts) <= MAX_ENTRIES
    # later queries, as time passes without events
    for later in range(ts, ts + window + 2 * bucket, bucket // 3):
        exact = reference(SUM, window, events, later)
        widened = reference(SUM, window + bucket - 1, events, later)
        assert exact <= value(entries, SUM, window, later) <= widened
        assert reference(COUNT, window, events, later) <= value(counts, COUNT, window, later)
        assert value(counts, COUNT, window, later) <= reference(COUNT, window + bucket - 1, events, later)


def test_coarsening_merges_min_and_max_of_a_bucket():
    window = 60 * 100  # buckets of 100 ms
    events = [(i * 10, i) for i in range(MAX_ENTRIES + 1)]  # 121 distinct ms within 1.21 s
    entries = build(MAX, window, events)
    assert len(entries) == 13
    assert entries[0] == [90, 10, sum(range(10)), 0, 9]  # dated by its latest member
    assert value(entries, MAX, window, 1200) == MAX_ENTRIES
    assert value(build(MIN, window, events), MIN, window, 1200) == 0


@pytest.mark.parametrize("window", [1, 59, 60, 119, 120, 121, 7 * 24 * HOUR])
def test_coarsening_stays_within_the_bound_for_any_window(window):
    rng = random.Random(window)
    entries = None
    ts = 10**12
    for _ in range(3000):
        ts += rng.randint(0, max(1, window // 50))
        entries = add(entries, COUNT, window, ts, None)
        assert len(entries) <= MAX_ENTRIES


def test_distinct_forgets_the_values_seen_longest_ago():
    entries = build(DISTINCT, HOUR, [(1000 + i, f"v{i}") for i in range(MAX_DISTINCT_VALUES + 500)])
    assert len(entries) == MAX_DISTINCT_VALUES
    assert value(entries, DISTINCT, HOUR, 10_000) == MAX_DISTINCT_VALUES
    assert entries[0] == [1500, '"v500"']
    entries = add(entries, DISTINCT, HOUR, 20_000, "v0")  # forgotten, so it counts as new
    assert entries[-1] == [20_000, '"v0"'] and entries[0] == [1501, '"v501"']
    entries = add(entries, DISTINCT, HOUR, 20_001, "v900")  # known: moves, nothing is forgotten
    assert entries[-1] == [20_001, '"v900"'] and entries[0] == [1501, '"v501"']


@pytest.mark.parametrize("fn", list(AggregateFn))
@pytest.mark.parametrize(
    ("ts", "v"),
    [(5000, 1), (4000, 1), (2500, 2), (4500, 2), (5000 - HOUR - 1, 2), (10 * HOUR, 3), (5000, "skip")],
    ids=["same-ms-as-last", "merge-earlier", "insert", "move-distinct", "too-old", "evicts-all", "skipped"],
)
def test_the_input_is_never_changed(fn, ts, v):
    entries = build(fn, HOUR, [(1000, 1), (2000, 2), (3000, 3), (4000, 1), (5000, 9)])
    before = copy.deepcopy(entries)
    after = add(entries, fn, HOUR, ts, v)
    assert entries == before
    assert after is not entries


@pytest.mark.parametrize("fn", [COUNT, SUM, DISTINCT])
def test_the_input_is_never_changed_by_coarsening(fn):
    window = 60 * 100
    entries = build(fn, window, [(i * 10, i) for i in range(MAX_ENTRIES)])
    before = copy.deepcopy(entries)
    after = add(entries, fn, window, MAX_ENTRIES * 10, -1)
    assert entries == before
    assert len(after) == (MAX_ENTRIES + 1 if fn is DISTINCT else 13)


def test_live_entries():
    entries = build(SUM, MINUTE, [(1000, 1), (2000, 2), (3000, 3)])
    assert live_entries(entries, SUM, MINUTE, 3000) == entries
    assert live_entries(entries, SUM, MINUTE, 2000 + MINUTE) == [[2000, 1, 2, 2, 2], [3000, 1, 3, 3, 3]]
    assert live_entries(entries, SUM, MINUTE, 3001 + MINUTE) == []
    assert live_entries(None, SUM, MINUTE, 0) == []


VALUES = st.one_of(
    st.integers(-1000, 1000),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from([None, True, False, math.nan, math.inf, "a", "b", "1", [1], {"k": 1}]),
)
WINDOWS = st.sampled_from([1, 10, 60, 1000, MINUTE])


def _same(got, expected):
    if isinstance(expected, float) or isinstance(got, float):
        return got == pytest.approx(expected, rel=1e-9, abs=1e-6)
    return got == expected and type(got) is type(expected)


@settings(max_examples=300, deadline=None)
@given(
    fn=st.sampled_from(list(AggregateFn)),
    window=WINDOWS,
    steps=st.lists(st.tuples(st.integers(0, 2000), VALUES), max_size=MAX_ENTRIES - 1),
)
def test_in_order_events_match_a_brute_force_reference(fn, window, steps):
    events = []
    entries = None
    ts = 0
    for gap, v in steps:
        ts += gap
        events.append((ts, v))
        entries = add(entries, fn, window, ts, v)
        assert _same(value(entries, fn, window, ts), reference(fn, window, events, ts))
    for later in (ts + 1, ts + window, ts + window + 1):
        assert _same(value(entries, fn, window, later), reference(fn, window, events, later))


@settings(max_examples=300, deadline=None)
@given(
    fn=st.sampled_from(list(AggregateFn)),
    window=WINDOWS,
    events=st.lists(st.tuples(st.integers(0, 3000), VALUES), max_size=MAX_ENTRIES - 1),
)
def test_any_order_matches_the_reference_at_the_newest_event(fn, window, events):
    entries = None
    seen = []
    for ts, v in events:
        seen.append((ts, v))
        entries = add(entries, fn, window, ts, v)
        newest = max(t for t, _ in seen)
        assert _same(value(entries, fn, window, newest), reference(fn, window, seen, newest))
    assert orjson.loads(orjson.dumps(entries or [])) == (entries or [])
