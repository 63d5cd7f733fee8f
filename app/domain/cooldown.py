"""Per-customer cooldown: whether a trigger may fire again, decided on event time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class CooldownMark:
    """The last firing of one trigger for one customer."""

    fired_at: datetime
    event_id: str

    def to_json(self) -> dict[str, Any]:
        return {"firedAt": self.fired_at.isoformat(), "eventId": self.event_id}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CooldownMark:
        return cls(datetime.fromisoformat(data["firedAt"]), str(data["eventId"]))


def may_fire(mark: CooldownMark | None, cooldown_minutes: float, event_id: str, at: datetime) -> bool:
    """True if a trigger with this cooldown may fire for the event at `at`.

    The same event seen again (a replay after a crash) may always fire: its firing
    carries the same firingId, so sinks recognise it, and refusing it could lose a
    firing whose action never left the worker.
    """
    if mark is None or cooldown_minutes <= 0 or mark.event_id == event_id:
        return True
    return at >= mark.fired_at + timedelta(minutes=cooldown_minutes)


def effective_time(event_time: datetime, now: datetime) -> datetime:
    """Event time, but never in the future: a clock-skewed or hostile timestamp must
    not start a cooldown that lasts until some far-off date."""
    return min(event_time, now)
