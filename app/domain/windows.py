"""Sliding-window aggregates of one customer's events: the stored entries, adding an event, reading a value."""

from __future__ import annotations

import hashlib
import json
import math
import operator
import sys
from bisect import bisect_left, bisect_right
from operator import itemgetter
from typing import Any

import orjson

from app.domain.models import AggregateFn

# Entries are exact (one per distinct millisecond) up to this many per aggregate and customer;
# beyond it they are merged into buckets of 1/BUCKETS_PER_WINDOW of the window.
MAX_ENTRIES = 120
BUCKETS_PER_WINDOW = 60
# A distinct aggregate keeps at most this many values per customer; beyond, the values seen
# longest ago are forgotten, so the count is then a lower bound.
MAX_DISTINCT_VALUES = 1000
# A canonical key longer than this is stored as a digest, so that 1000 large values (whole
# objects, long strings) cannot make one customer's state megabytes large.
MAX_KEY_CHARS = 64

# Entry layouts. Numeric fns: [ts_ms, n, total, lo, hi]. distinct: [ts_ms, key].
_TS = itemgetter(0)
_N = itemgetter(1)
_TOTAL = itemgetter(2)
_LO = itemgetter(3)
_HI = itemgetter(4)
_KEY = itemgetter(1)

# The state is written with orjson, which refuses integers beyond 64 bits and writes an
# infinite float as null; totals are kept inside what it can write and read back.
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_FLOAT_MAX = sys.float_info.max

_EMPTY: dict[str, int | None] = {
    AggregateFn.COUNT: 0, AggregateFn.SUM: 0, AggregateFn.DISTINCT: 0,
    AggregateFn.MIN: None, AggregateFn.MAX: None, AggregateFn.AVG: None,
}


def add(entries: list[list[Any]] | None, fn: AggregateFn, window_ms: int, ts_ms: int,
        value: Any) -> list[list[Any]]:
    """The entries after one qualifying event at `ts_ms` whose `of` result is `value`.

    Always a new list; neither `entries` nor any entry in it is changed (the old state may
    still be read). Which events are included:
    - count: every event; `value` is ignored.
    - sum/min/max/avg: only when `value` is an int or a float, not a bool, and finite. Any
      other value (None, a string, a bool, NaN, an infinity, an object) leaves the aggregate
      as it was: the event is not counted, not even in avg's denominator. An int beyond 64
      bits is taken as a float (the state is stored with orjson).
    - distinct: any JSON value except None (and a non-finite float, which JSON has no value
      for), told apart by its canonical JSON text, so 1, 1.0, "1" and true are four values.

    An event older than the window ending at the newest entry is not kept: no query can
    need it (the engine asks for the value at the current event, never before the newest).
    Events in the same millisecond share an entry. Beyond MAX_ENTRIES entries (numeric fns)
    they are merged per bucket of window/60 ms, each bucket dated by its latest event, so an
    event counts at most one bucket longer than exactly, never shorter. A distinct aggregate
    keeps the latest time each value was seen, and at most MAX_DISTINCT_VALUES values.
    Sums of ints stay ints; a float among them makes a float.
    """
    old = entries or []
    if fn == AggregateFn.DISTINCT:
        return _add_distinct(old, window_ms, ts_ms, value)
    if fn == AggregateFn.COUNT:
        return _add_number(old, window_ms, ts_ms, 0)
    number = _number(value)
    if number is None:
        return list(old)
    return _add_number(old, window_ms, ts_ms, number)


def value(entries: list[list[Any]] | None, fn: AggregateFn, window_ms: int, at_ms: int) -> int | float | None:
    """The aggregate over [at_ms - window_ms, at_ms], both ends included.

    Like Kafka Streams' sliding windows, an event exactly `window` before counts. Entries
    after `at_ms` are left out, so a replayed older event sees the window as it was (as far
    as eviction and bucketing kept it). No events: 0 for count/sum/distinct, None for
    min/max/avg; avg is total / n as a float.
    """
    if not entries:
        return _EMPTY[fn]
    since = at_ms - window_ms
    # The common query is at the newest event with nothing stale left: the whole list.
    start = 0 if entries[0][0] >= since else bisect_left(entries, since, key=_TS)
    end = len(entries) if entries[-1][0] <= at_ms else bisect_right(entries, at_ms, key=_TS)
    if start >= end:
        return _EMPTY[fn]
    if fn == AggregateFn.DISTINCT:
        return end - start
    span = entries if start == 0 and end == len(entries) else entries[start:end]
    if fn == AggregateFn.COUNT:
        return sum(map(_N, span))  # type: ignore[no-any-return]
    if fn == AggregateFn.SUM:
        return sum(map(_TOTAL, span))  # type: ignore[no-any-return]
    if fn == AggregateFn.MIN:
        return min(map(_LO, span))  # type: ignore[no-any-return]
    if fn == AggregateFn.MAX:
        return max(map(_HI, span))  # type: ignore[no-any-return]
    if fn == AggregateFn.AVG:
        return sum(map(_TOTAL, span)) / sum(map(_N, span))  # type: ignore[no-any-return]
    raise ValueError(f"unknown aggregate fn {fn!r}")


def live_entries(entries: list[list[Any]] | None, fn: AggregateFn, window_ms: int, now_ms: int) -> list[list[Any]]:
    """The entries a query at `now_ms` or later can still count: those at or after now - window.

    For a store that compacts idle customers' state by the clock (an empty result means the
    state can be deleted). Every fn's entries start with their timestamp; `fn` is taken so
    that callers pass the same arguments as to add() and value().
    """
    if not entries:
        return []
    horizon = now_ms - window_ms
    if entries[0][0] >= horizon:
        return list(entries)
    return entries[bisect_left(entries, horizon, key=_TS):]


def _number(value: Any) -> int | float | None:
    """`value` as a number the numeric fns include, or None when the event is not included."""
    kind = type(value)  # not isinstance: a bool is an int, and is not a number here
    if kind is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            return value  # type: ignore[no-any-return]
        try:
            return float(value)
        except OverflowError:  # more than 1e308: no finite float holds it
            return None
    if kind is float and math.isfinite(value):
        return value  # type: ignore[no-any-return]
    return None


def _storable(total: int | float) -> int | float:
    """A sum as the state can store it: an int within 64 bits, else a finite float."""
    if type(total) is int:
        return total if _INT64_MIN <= total <= _INT64_MAX else float(total)
    if math.isfinite(total):
        return total
    # Only finite floats are added, so this is an overflow past 1.8e308: saturate.
    return math.copysign(_FLOAT_MAX, total)


def _merged(entry: list[Any], number: int | float) -> list[Any]:
    lo = entry[3]
    hi = entry[4]
    return [entry[0], entry[1] + 1, _storable(entry[2] + number),
            number if number < lo else lo, number if number > hi else hi]


def _add_number(old: list[list[Any]], window_ms: int, ts_ms: int, number: int | float) -> list[list[Any]]:
    new = list(old)
    if not new or ts_ms > new[-1][0]:
        new.append([ts_ms, 1, number, number, number])
        newest = ts_ms
    else:
        newest = new[-1][0]
        if ts_ms == newest:
            new[-1] = _merged(new[-1], number)
        elif ts_ms < newest - window_ms:
            return new
        else:
            i = bisect_left(new, ts_ms, key=_TS)  # < len(new): ts_ms is below the last entry's
            if new[i][0] == ts_ms:
                new[i] = _merged(new[i], number)
            else:
                new.insert(i, [ts_ms, 1, number, number, number])
    _evict(new, newest - window_ms)
    if len(new) > MAX_ENTRIES:
        new = _coarsen(new, max(1, window_ms // BUCKETS_PER_WINDOW))
    return new


def _evict(new: list[list[Any]], horizon: int) -> None:
    """Drop, in place, the entries of a sorted list older than `horizon`."""
    if new and new[0][0] < horizon:
        del new[:bisect_left(new, horizon, key=_TS)]


def _coarsen(entries: list[list[Any]], bucket_ms: int) -> list[list[Any]]:
    """One entry per bucket of `bucket_ms`, dated by its latest member so it is evicted last.

    After eviction the entries span window + 1 ms, which touch at most window // bucket + 2
    buckets: 120 one-ms buckets for a window under 120 ms, at most 91 for a longer one. So
    one pass brings them within MAX_ENTRIES; the loop only guards a smaller MAX_ENTRIES.
    """
    while True:
        out: list[list[Any]] = []
        current = entries[0]
        current_bucket = current[0] // bucket_ms
        for entry in entries[1:]:
            bucket = entry[0] // bucket_ms
            if bucket == current_bucket:
                # A new list: `current` may be an entry of the caller's old state.
                current = [entry[0], current[1] + entry[1], _storable(current[2] + entry[2]),
                           min(current[3], entry[3]), max(current[4], entry[4])]
            else:
                out.append(current)
                current = entry
                current_bucket = bucket
        out.append(current)
        if len(out) <= MAX_ENTRIES:
            return out
        entries = out
        bucket_ms *= 2


def _add_distinct(old: list[list[Any]], window_ms: int, ts_ms: int, value: Any) -> list[list[Any]]:
    new = list(old)
    key = _canonical(value)
    if key is None:
        return new
    newest = new[-1][0] if new and new[-1][0] > ts_ms else ts_ms
    if ts_ms < newest - window_ms:
        return new
    try:
        i = operator.indexOf(map(_KEY, new), key)  # a C loop: this is the hot path of distinct
    except ValueError:
        pass
    else:
        if new[i][0] >= ts_ms:
            return new  # already seen at or after this event: nothing changes
        del new[i]
    entry = [ts_ms, key]
    if not new or ts_ms >= new[-1][0]:
        new.append(entry)
    else:
        new.insert(bisect_right(new, ts_ms, key=_TS), entry)
    _evict(new, newest - window_ms)
    if len(new) > MAX_DISTINCT_VALUES:
        del new[:len(new) - MAX_DISTINCT_VALUES]
    return new


def _canonical(value: Any) -> str | None:
    """The key telling distinct values apart, or None for a value that is not counted."""
    if value is None or (type(value) is float and not math.isfinite(value)):
        return None
    try:
        text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError:
        # orjson refuses integers beyond 64 bits and lone surrogates; the standard encoder
        # writes both (as ASCII escapes, which the state's codec can store).
        try:
            text = json.dumps(value, sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError, RecursionError):
            return None
    if len(text) <= MAX_KEY_CHARS:
        return text
    # "#" starts no JSON text, so a digest never equals a short value's key.
    return "#" + hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
