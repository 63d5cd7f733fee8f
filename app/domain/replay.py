"""Dead letters back to where they came from: which are selected, and what each re-publishes
(or why it cannot be). Pure: no I/O, time passed in."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.domain.encoding import encode
from app.domain.secrets import mask_urls_in_text

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Selection:
    """--topic (source topic, with or without the prefix), --trigger, --since."""

    topics: frozenset[str] | None = None
    trigger_id: str | None = None
    since: datetime | None = None

    def selects(self, letter: dict[str, Any]) -> bool:
        if self.topics is not None and letter.get("topic") not in self.topics:
            return False
        if self.trigger_id is not None and letter.get("triggerId") != self.trigger_id:
            return False
        if self.since is not None:
            at = parse_time(letter.get("at"))
            return at is not None and at >= self.since
        return True


@dataclass(frozen=True)
class Replay:
    """One record to re-publish: the original key and value, to its source topic and partition."""

    topic: str
    partition: int | None
    key: bytes | None
    value: bytes


@dataclass(frozen=True)
class Skip:
    """A selected dead letter that cannot be replayed, and why (said per record, counted)."""

    reason: str


def replay_of(letter: Any) -> Replay | Skip:
    """What re-publishing `letter` (a decoded dead-letter value) means."""
    if not isinstance(letter, dict) or not isinstance(letter.get("topic"), str):
        return Skip("not a dead letter with a source topic")
    if letter.get("truncated"):
        return Skip(f"truncated: the original ({letter.get('size', '?')} bytes) was cut, it cannot be replayed")
    partition = letter.get("partition") if isinstance(letter.get("partition"), int) else None
    if "actionType" in letter:
        return _action_replay(letter, partition)
    if "load" in letter:
        return Skip("a row load keeps no original record: load the row again with `rows load`")
    encoded = letter.get("valueBase64")
    if not isinstance(encoded, str):
        return Skip("no original value kept")
    try:
        value = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return Skip("the original value is not valid base64")
    key = letter.get("key")
    return Replay(letter["topic"], partition, key.encode() if isinstance(key, str) else None, value)


def _action_replay(letter: dict[str, Any], partition: int | None) -> Replay | Skip:
    command = letter.get("command")
    if not isinstance(command, dict):
        return Skip("the original was not a valid action command: replaying it would dead-letter it again")
    customer = command.get("customerId")
    # Commands are keyed by customer id (every topic keyed by customer is co-partitioned).
    return Replay(letter["topic"], partition, customer.encode() if isinstance(customer, str) else None,
                  encode(command))


def describe(letter: Any) -> str:
    """One line naming a dead letter without its key or value (they may hold personal data),
    its reason's URLs masked."""
    if not isinstance(letter, dict):
        return "(not a JSON object)"
    where = f"{letter.get('topic')}/{letter.get('partition')}@{letter.get('offset')}"
    ids = " ".join(f"{name}={letter[name]}" for name in ("triggerId", "firingId") if letter.get(name))
    reason = mask_urls_in_text(str(letter.get("reason", "")))[:200]
    return " ".join(part for part in (where, ids, f"at={letter.get('at')}", f"reason={reason!r}") if part)


def parse_since(text: str, now: datetime) -> datetime:
    """--since: an ISO time with a zone (`2026-12-01T10:00:00Z`) or a duration back from
    `now` (`90s`, `30m`, `2h`, `7d`, `1h30m`). ValueError names the option."""
    stripped = text.strip().lower()
    if stripped and _DURATION.sub("", stripped).strip() == "":
        seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION.findall(stripped))
        return now - timedelta(seconds=seconds)
    moment = parse_time(text.strip())
    if moment is None:
        raise ValueError(f"--since: {text!r} is neither an ISO time with a zone "
                         "(2026-12-01T10:00:00Z) nor a duration (30m, 2h, 7d)")
    return moment


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None
