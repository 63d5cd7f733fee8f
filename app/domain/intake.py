"""Raw messages from the event topics turned into one typed Event, or a MalformedEvent saying why."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from app.domain.models import Event, Source
from app.errors import MalformedEvent

MAX_ID_LENGTH = 256
RESERVED = ("id", "type", "customerId", "timestamp", "source")
_CDC_OPERATIONS = {"c": "insert", "r": "insert", "u": "update", "d": "delete"}


def parse_event(raw: bytes | None, source: Source, fallback_id: str, arrival: datetime) -> Event:
    """A flat JSON event (`events.streaming`, `events.outcomes`, `events.schema`).

    `fallback_id` must be stable for this message (topic, partition, offset) so a
    replayed message gets the same event id and therefore the same firingIds.
    """
    data = json_object(raw)
    event_type: Any = data.get("type")
    customer_id: Any = data.get("customerId")
    event_id: Any = data.get("id")
    if not (_short_text(event_type) and _short_text(customer_id)
            and (event_id is None or event_id == "" or _short_text(event_id))):
        # The checks one by one, for the reason (the test above is their quick form).
        event_type = _required_text(data, "type")
        customer_id = _required_text(data, "customerId")
        event_id = _optional_text(data, "id")
    timestamp = _timestamp(data.get("timestamp"), arrival)
    for name in RESERVED:  # what remains of the parsed object (ours alone) are the event's fields
        data.pop(name, None)
    return Event(
        id=event_id or fallback_id,
        type=event_type,
        customer_id=customer_id,
        source=source,
        timestamp=timestamp,
        fields=data,
    )


def parse_cdc_event(raw: bytes | None, fallback_id: str, arrival: datetime,
                    customer_column: str) -> Event:
    """A Debezium change event, with or without the `schema`/`payload` wrapper.

    The event's fields are the row's columns (after the change, or before a delete)
    plus `table`, `op`, `before` and `after`; its type is `<table>.<insert|update|delete>`.
    """
    data = json_object(raw)
    if "payload" in data and isinstance(data["payload"], dict):
        data = data["payload"]
    operation = _CDC_OPERATIONS.get(str(data.get("op")))
    if operation is None:
        raise MalformedEvent(f"CDC event has unknown op {data.get('op')!r} (expected c, r, u or d)")
    source_block = data.get("source")
    table = source_block.get("table") if isinstance(source_block, dict) else None
    if not isinstance(table, str) or not table:
        raise MalformedEvent("CDC event lacks source.table")
    before, after = data.get("before"), data.get("after")
    row = before if operation == "delete" else after
    if not isinstance(row, dict):
        raise MalformedEvent(f"CDC {operation} event has no row in {'before' if operation == 'delete' else 'after'}")
    customer = row.get(customer_column)
    if isinstance(customer, bool) or not isinstance(customer, str | int) or customer == "":
        raise MalformedEvent(f"CDC row has no customer id in column {customer_column!r}")
    customer_id = str(customer)
    # The streaming path's caps: a longer id or type would be refused there, and keys state.
    if len(customer_id) > MAX_ID_LENGTH:
        raise MalformedEvent(f"CDC customer id in column {customer_column!r} is longer than "
                             f"{MAX_ID_LENGTH} characters")
    event_type = f"{table}.{operation}"
    if len(event_type) > MAX_ID_LENGTH:
        raise MalformedEvent(f"CDC event type {event_type[:64]!r}... (source.table + operation) is longer "
                             f"than {MAX_ID_LENGTH} characters")
    timestamp = _epoch_millis(data.get("ts_ms"), arrival)
    fields = {k: v for k, v in row.items() if k not in RESERVED}
    fields.update({"table": table, "op": operation, "before": before, "after": after})
    return Event(
        id=fallback_id,
        type=event_type,
        customer_id=customer_id,
        source=Source.CDC,
        timestamp=timestamp,
        fields=fields,
    )


def _epoch_millis(value: Any, default: datetime) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default  # Debezium always sets it; other CDC tools may not
    try:
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise MalformedEvent(f"CDC field 'ts_ms' is out of range: {value!r}") from None


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; echoing them into commands would emit invalid JSON.
    raise ValueError(f"{name} is not a valid JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:32]} is too large for a number")
    return value


MAX_JSON_DEPTH = 64
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_json_value(value: Any, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuse what parses but cannot be written back out: nesting deeper than `max_depth`
    (the JSON encoder gives up at 256, Python's recursion sooner) and lone UTF-16 surrogates
    (no UTF-8 encoding exists for them)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if not node.isascii() and _SURROGATE.search(node):
                raise ValueError("text contains a lone UTF-16 surrogate")
            continue
        if not isinstance(node, dict | list):
            continue
        if depth > max_depth:
            raise ValueError(f"nested deeper than {max_depth} levels")
        items = node.items() if isinstance(node, dict) else ((None, v) for v in node)
        for key, item in items:
            if key is not None:
                stack.append((key, depth))
            stack.append((item, depth + 1))


# What decides whether orjson may read a message, in one C pass over its bytes: every digit
# becomes "0" and both opening brackets "[", so 19 zeros in a row are 19 digits in a row (an
# integer that may not fit in 64 bits, which orjson reads as a float) and counting "["
# counts the brackets that bound the nesting depth.
_SHAPE = bytes(ord("0") if byte in b"0123456789" else ord("[") if byte in b"[{" else ord(".")
               for byte in range(256))
_LONG_DIGITS = b"0" * 19


def load_json(raw: bytes | str) -> Any:
    """Strict JSON: no NaN, no Infinity, no number that only parses as infinity, nothing
    nested deeper than MAX_JSON_DEPTH, no lone surrogates."""
    if isinstance(raw, bytes) and _plain(raw):
        # orjson refuses NaN, Infinity, numbers too large for a float and lone surrogates
        # itself, and fewer brackets than the depth limit cannot nest deeper than it: the
        # result is what the strict parser below would give, at a fraction of the cost.
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # the strict parser says why (or accepts what orjson does not, e.g. a BOM)
    return strict_json(raw)


def strict_json(raw: bytes | str) -> Any:
    """`load_json` without the fast path: the reference it must agree with."""
    value = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    check_json_value(value)
    return value


class DuplicateKeys(ValueError):
    """An object names the same key twice: JSON parsers disagree on which value counts (ours
    would silently keep the last), so a definition that does it is refused."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def load_unique_json(raw: bytes | str) -> Any:
    """`strict_json`, and DuplicateKeys naming every repeated key and where it is
    (`duplicate key 'priority' at top level`, `... at action.headers`, `... at offers[2]`)."""
    # id() of an object -> (the object, its repeated keys). Holding the object keeps its id
    # from being reused when a repeated key discards it.
    repeated: dict[int, tuple[dict[str, Any], list[str]]] = {}

    def unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) < len(pairs):
            counts = Counter(key for key, _ in pairs)
            repeated[id(obj)] = (obj, [key for key, count in counts.items() if count > 1])
        return obj

    value = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float,
                       object_pairs_hook=unique_pairs)
    check_json_value(value)
    if repeated:  # the hook sees objects before their parents: find where each one sits
        # Repeats inside a value that a repeated key discarded are not located: fixing the
        # outer repeat brings them back into view.
        problems = [f"duplicate key {key!r} at {path or 'top level'}"
                    for path, node in _objects(value) for key in repeated.get(id(node), ({}, []))[1]]
        raise DuplicateKeys(problems)
    return value


def _objects(value: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every object in a parsed JSON value with its path, in document order."""
    found: list[tuple[str, dict[str, Any]]] = []
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            found.append((path, node))
            children = [(f"{path}.{key}" if path else str(key), item) for key, item in node.items()]
        elif isinstance(node, list):
            children = [(f"{path}[{index}]", item) for index, item in enumerate(node)]
        else:
            continue
        stack.extend(reversed(children))
    return found


def _plain(raw: bytes) -> bool:
    shape = raw.translate(_SHAPE)
    return shape.count(b"[") <= MAX_JSON_DEPTH and _LONG_DIGITS not in shape


def json_object(raw: bytes | None, what: str = "an event") -> dict[str, Any]:
    """`raw` as a JSON object, or MalformedEvent saying why not (`what` names the record)."""
    if raw is None:
        raise MalformedEvent("empty message (null value)")
    try:
        data = load_json(raw)
    except (ValueError, RecursionError) as exc:
        raise MalformedEvent(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedEvent(f"{what} is a JSON object, not {type(data).__name__}")
    return data


def _short_text(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= MAX_ID_LENGTH


def _required_text(data: dict[str, Any], name: str) -> str:
    if name not in data:
        raise MalformedEvent(f"missing required field {name!r}")
    value = _optional_text(data, name)
    if not value:
        raise MalformedEvent(f"field {name!r} must be a non-empty string")
    return value


def _optional_text(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedEvent(f"field {name!r} must be a string, not {type(value).__name__}")
    if len(value) > MAX_ID_LENGTH:
        raise MalformedEvent(f"field {name!r} is longer than {MAX_ID_LENGTH} characters")
    return value


def _timestamp(value: Any, arrival: datetime) -> datetime:
    if value is None:
        return arrival
    if not isinstance(value, str):
        raise MalformedEvent("field 'timestamp' must be an ISO 8601 string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise MalformedEvent(f"field 'timestamp' is not ISO 8601: {value[:64]!r}") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    offset = moment.utcoffset()
    if offset is not None and offset % timedelta(minutes=1):
        # An offset with seconds (+05:30:15, a historic local mean time) does not survive
        # pydantic's JSON round trip when the event is forwarded; the same instant in UTC does.
        return moment.astimezone(UTC)
    return moment
