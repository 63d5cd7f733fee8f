"""What the console shows of the engine's output topics: compile errors by field, firings per
trigger in a window, and records selected by trigger and customer. Pure: time passed in."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.domain.replay import parse_time
from app.domain.secrets import mask_url, mask_urls_in_text

# `conditions[0]: name 'evnt' is not defined` -> field `conditions[0]`; a message without a
# field path before its first colon (`a scheduled trigger needs a schedule`) is the definition's.
_FIELD = re.compile(r"^([A-Za-z_][A-Za-z0-9_\-]*(?:\[\d+\])*(?:\.[^\s:]+)*): (.*)$", re.DOTALL)
DEFINITION_FIELD = "definition"
_URL_FIELDS = ("url", "deliveryUrl")


def field_errors(errors: Iterable[str]) -> list[dict[str, str]]:
    """Compile errors as `{"field", "message"}`, the field as the author wrote it."""
    found = []
    for error in errors:
        match = _FIELD.match(error)
        if match is None:
            found.append({"field": DEFINITION_FIELD, "message": error})
        else:
            found.append({"field": match.group(1), "message": match.group(2)})
    return found


@dataclass(frozen=True)
class FiringCounts:
    """Firings per trigger since `since`; `complete` is False when the records read may not
    reach back that far (the read was bounded and its oldest record is newer than `since`)."""

    since: datetime
    counts: dict[str, int]
    complete: bool

    def as_json(self) -> dict[str, Any]:
        return {"since": self.since.isoformat(), "counts": self.counts, "complete": self.complete}


def firing_counts(firings: Iterable[Mapping[str, Any]], now: datetime, window: timedelta,
                  bounded_partitions_start: Iterable[datetime | None]) -> FiringCounts:
    """Count `firings` (firing records) whose `firedAt` is within `window` before `now`.
    `bounded_partitions_start`: for each partition read only in part, the time of the oldest
    record read (None: nothing read)."""
    since = now - window
    counts: Counter[str] = Counter()
    for firing in firings:
        at = parse_time(firing.get("firedAt"))
        trigger_id = firing.get("triggerId")
        if at is not None and at >= since and isinstance(trigger_id, str):
            counts[trigger_id] += 1
    complete = all(start is None or start < since for start in bounded_partitions_start)
    return FiringCounts(since, dict(sorted(counts.items())), complete)


def selects(value: Any, trigger_id: str | None, customer_id: str | None) -> bool:
    """Whether a firing, suppression or dead letter belongs to the trigger and the customer
    asked for (None: any). A dead letter names them at its top or in its command."""
    if not isinstance(value, dict):
        return trigger_id is None and customer_id is None
    found = value.get("command")
    command: dict[str, Any] = found if isinstance(found, dict) else {}
    if trigger_id is not None and trigger_id not in (value.get("triggerId"), command.get("triggerId")):
        return False
    if customer_id is not None:
        return customer_id in (value.get("customerId"), command.get("customerId"), value.get("key"))
    return True


def shown(value: Any) -> Any:
    """A record as the console shows it: secrets inside URLs masked, the dead letter's
    base64 copy of the original left out (its `value` text says the same)."""
    if not isinstance(value, dict):
        return value
    data = {key: item for key, item in value.items() if key != "valueBase64"}
    for name in ("action",):
        if isinstance(data.get(name), dict):
            data[name] = _masked_action(data[name])
    if isinstance(data.get("command"), dict) and isinstance(data["command"].get("action"), dict):
        data["command"] = {**data["command"], "action": _masked_action(data["command"]["action"])}
    for name in ("reason", "value"):
        if isinstance(data.get(name), str):
            data[name] = mask_urls_in_text(data[name])
    return data


def _masked_action(action: dict[str, Any]) -> dict[str, Any]:
    return {key: mask_url(item) if key in _URL_FIELDS and isinstance(item, str) else item
            for key, item in action.items()}
