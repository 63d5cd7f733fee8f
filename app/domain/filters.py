"""Trigger filters: equality on named fields, a list meaning "one of"."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

FilterCheck = Callable[[Mapping[str, Any]], bool]
_MISSING = object()


def compile_filters(filters: Mapping[str, Any]) -> FilterCheck:
    """`passes_filters` for these filters, decided once per definition instead of per event
    (the same answer for every input: tests compare the two)."""
    checks = tuple((name, _value_check(expected)) for name, expected in filters.items())
    if not checks:
        return lambda fields: True

    def passes(fields: Mapping[str, Any]) -> bool:
        for name, check in checks:
            actual = fields.get(name, _MISSING)
            if actual is _MISSING or not check(actual):
                return False
        return True
    return passes


def _value_check(expected: Any) -> Callable[[Any], bool]:
    if isinstance(expected, list):
        return _options_check(expected)
    if isinstance(expected, bool) or expected is None:
        return lambda actual: actual is expected  # singletons
    if isinstance(expected, str):
        return lambda actual: actual == expected  # nothing but an equal str equals a str
    if isinstance(expected, int | float):
        return lambda actual: actual == expected and not isinstance(actual, bool)
    return lambda actual: _equal(actual, expected)


def _options_check(options: list[Any]) -> Callable[[Any], bool]:
    if not all(isinstance(o, str | int | float | bool) or o is None for o in options):
        return lambda actual: any(_equal(actual, option) for option in options)
    bools = frozenset(o for o in options if isinstance(o, bool))
    others = frozenset(o for o in options if not isinstance(o, bool))

    def one_of(actual: Any) -> bool:
        if isinstance(actual, bool):
            return actual in bools
        try:
            return actual in others
        except TypeError:  # a list or an object: unhashable, and equal to no scalar option
            return False
    return one_of


def passes_filters(filters: Mapping[str, Any], fields: Mapping[str, Any]) -> bool:
    """Equality on each named field; a list means "one of". A missing field never passes."""
    for name, expected in filters.items():
        if name not in fields:
            return False
        actual = fields[name]
        if isinstance(expected, list):
            if not any(_equal(actual, option) for option in expected):
                return False
        elif not _equal(actual, expected):
            return False
    return True


def _equal(actual: Any, expected: Any) -> bool:
    # JSON true must not equal 1, which Python's == would allow.
    if isinstance(actual, bool) or isinstance(expected, bool):
        return type(actual) is type(expected) and actual == expected
    return bool(actual == expected)
