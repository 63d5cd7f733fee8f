"""Dead-letter records and the size bound on every record the engine produces."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from app.domain.encoding import encode

# The producer refuses a record larger than its max request size (1,000,000 bytes by
# default, batch overhead included) at send time. Every record the engine writes is checked
# against this bound first, so a large value becomes a dead letter instead of an exception.
MAX_RECORD_BYTES = 990_000
# The original value embedded in a dead letter (as text and as base64) is cut to this many
# bytes: even text made of control characters (6 bytes each once escaped) then stays far
# below MAX_RECORD_BYTES.
MAX_EMBEDDED_BYTES = 65_536
MAX_REASON_CHARS = 1_000

_INT64 = (-(2**63), 2**63 - 1)


class RecordTooLarge(ValueError):
    """A record would exceed MAX_RECORD_BYTES; the producer would refuse it."""

    def __init__(self, topic: str, size: int) -> None:
        super().__init__(f"a record for {topic} would be {size} bytes, more than the "
                         f"{MAX_RECORD_BYTES}-byte limit")
        self.size = size


class Unstorable(ValueError):
    """A value that parses as JSON but that the tables' codec cannot write."""


def check_storable(value: Any) -> None:
    """Raise Unstorable unless faust's table codec (orjson) can write `value`: it refuses
    integers beyond 64 bits, lone surrogates and nesting deeper than 254, and it would
    silently write NaN as null, which is refused here too."""
    try:
        orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise Unstorable(f"value cannot be stored: {exc}") from None
    # orjson writes unsigned 64-bit integers too; another client reading the row may not.
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, bool):
            continue
        if isinstance(node, int):
            if not _INT64[0] <= node <= _INT64[1]:
                raise Unstorable("value cannot be stored: integer outside the signed 64-bit range")
        elif isinstance(node, float):
            if node != node or node in (float("inf"), float("-inf")):
                raise Unstorable(f"value cannot be stored: {node!r} is not a finite number")
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)


def short_reason(reason: str) -> str:
    """Reasons may quote a value; a huge one must not make the dead letter huge."""
    if len(reason) <= MAX_REASON_CHARS:
        return reason
    return f"{reason[:MAX_REASON_CHARS]}… ({len(reason)} characters)"


def raw_value_fields(raw: bytes | None) -> dict[str, Any]:
    """`value` (UTF-8 text, undecodable bytes replaced) and `valueBase64` (the bytes) of an
    original value, cut to MAX_EMBEDDED_BYTES with `truncated` and the original `size`."""
    data = raw or b""
    fields: dict[str, Any] = {}
    if len(data) > MAX_EMBEDDED_BYTES:
        fields = {"truncated": True, "size": len(data)}
        data = data[:MAX_EMBEDDED_BYTES]
    return {"value": data.decode("utf-8", "replace"), "valueBase64": base64.b64encode(data).decode(),
            **fields}


def bounded(value: Any) -> tuple[Any, int | None]:
    """`value` if its JSON fits in MAX_EMBEDDED_BYTES, else (None, its size in bytes)."""
    try:
        size = len(encode(value))
    except (TypeError, ValueError, RecursionError):
        return None, -1
    return (value, None) if size <= MAX_EMBEDDED_BYTES else (None, size)


def event_dead_letter(reason: str, topic: str, partition: int, offset: int, key: str | None,
                      raw: bytes | None, at: str) -> dict[str, Any]:
    """`events.deadletter`: a record from an input topic that could not take effect."""
    return {"reason": short_reason(reason), "topic": topic, "partition": partition, "offset": offset,
            "key": key, **raw_value_fields(raw), "at": at}


def row_load_dead_letter(reason: str, table: str, customer_id: str, attributes: dict[str, Any] | None,
                         at: str, origin: dict[str, Any] | None = None) -> dict[str, Any]:
    """`events.deadletter`: a row load refused by its table (attributes dropped when huge)."""
    kept, size = bounded(attributes)
    record: dict[str, Any] = {
        "reason": short_reason(reason),
        "load": {"table": table[:256], "customer_id": customer_id[:256], "attributes": kept},
        "at": at, **(origin or {})}
    if size is not None:
        record |= {"truncated": True, "size": size}
    return record


def action_dead_letter(action_type: str, reason: str, at: str, attempts: list[dict[str, Any]],
                       command: dict[str, Any] | None, origin: dict[str, Any] | None,
                       raw: bytes | None = None) -> dict[str, Any]:
    """`actions.deadletter`: a command that was not performed. A huge command keeps its
    action and ids but loses its `event` (`truncated`, `size`)."""
    record: dict[str, Any] = {"actionType": action_type, "reason": short_reason(reason), "at": at,
                              "attempts": attempts}
    if command is not None:
        kept, size = bounded(command)
        if size is not None:
            kept = {**command, "event": None}
            record |= {"truncated": True, "size": size}
        record |= {"firingId": command.get("firingId"), "triggerId": command.get("triggerId"),
                   "customerId": command.get("customerId"), "command": kept}
    else:
        record |= raw_value_fields(raw)
        record.pop("valueBase64")
    return {**record, **(origin or {})}
