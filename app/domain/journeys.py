"""Journey enrollment: the deduplication modes and the end of an enrollment, as pure functions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import Field

from app.domain import limits
from app.domain.models import ID_PATTERN, Contract, Deduplication

_ENROLLMENT_NAMESPACE = uuid.UUID("0b7e6a0c-59a4-4d4e-8f3c-5c1b8a2d7e91")


class JourneyDefinition(Contract):
    """`journeys.definitions`: `{"id", "name", "maxDurationDays"}` (no limit when absent)."""

    id: str = Field(pattern=ID_PATTERN)
    name: str = Field(default="", max_length=limits.MAX_NAME_LENGTH)
    max_duration_days: float | None = Field(default=None, alias="maxDurationDays", gt=0, le=36600,
                                            allow_inf_nan=False, strict=True)


@dataclass(frozen=True)
class Enrollment:
    enrollment_id: str
    journey_id: str
    firing_id: str
    started_at: datetime
    ends_at: datetime | None

    def active(self, now: datetime) -> bool:
        return self.ends_at is None or now < self.ends_at

    def to_json(self) -> dict[str, Any]:
        return {"enrollmentId": self.enrollment_id, "journeyId": self.journey_id,
                "firingId": self.firing_id, "startedAt": self.started_at.isoformat(),
                "endsAt": self.ends_at.isoformat() if self.ends_at else None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Enrollment:
        ends_at = data.get("endsAt")
        return cls(data["enrollmentId"], data["journeyId"], data["firingId"],
                   datetime.fromisoformat(data["startedAt"]),
                   datetime.fromisoformat(ends_at) if ends_at else None)


@dataclass(frozen=True)
class EnrollmentDecision:
    status: str  # "enrolled" | "skipped" | "restarted"
    enrollment_id: str


def enrollment_id(firing_id: str) -> str:
    """Deterministic, so a replayed firing re-publishes the same enrollment."""
    return str(uuid.uuid5(_ENROLLMENT_NAMESPACE, firing_id))


def enroll(enrollments: list[Enrollment], journey: JourneyDefinition, mode: Deduplication,
           firing_id: str, now: datetime, ever_enrolled: frozenset[str] = frozenset()
           ) -> tuple[list[Enrollment], EnrollmentDecision]:
    """Apply one enroll_journey firing to a customer's active enrollments.

    skip_if_active: an active enrollment in the journey wins, the firing is `skipped`.
    restart: active enrollments in the journey end and a new one starts (`restarted`).
    allow_multiple: a new enrollment runs alongside any active ones.
    skip_if_ever_enrolled: no re-entry: skipped if the customer was ever enrolled in the journey.
    A replayed firing finds its own enrollment and changes nothing.
    """
    live = _active(enrollments, now)
    new_id = enrollment_id(firing_id)
    if any(e.enrollment_id == new_id for e in live):
        return live, EnrollmentDecision("enrolled", new_id)
    active = [e for e in live if e.journey_id == journey.id]
    if mode is Deduplication.SKIP_IF_ACTIVE and active:
        return live, EnrollmentDecision("skipped", active[0].enrollment_id)
    if mode is Deduplication.SKIP_IF_EVER_ENROLLED and (active or journey.id in ever_enrolled):
        return live, EnrollmentDecision("skipped", active[0].enrollment_id if active else new_id)
    status = "restarted" if mode is Deduplication.RESTART and active else "enrolled"
    if mode is Deduplication.RESTART:
        live = [e for e in live if e not in active]
    days = journey.max_duration_days
    new = Enrollment(new_id, journey.id, firing_id, now,
                     now + timedelta(days=days) if days else None)
    return [*live, new], EnrollmentDecision(status, new.enrollment_id)


def end(enrollments: list[Enrollment], journey_id: str, enrollment_id_: str | None,
        now: datetime) -> tuple[list[Enrollment], list[Enrollment]]:
    """End the named enrollment (or every active one in the journey when no id is given);
    returns (still active, ended)."""
    live = _active(enrollments, now)
    ended = [e for e in live
             if e.journey_id == journey_id and enrollment_id_ in (None, e.enrollment_id)]
    return [e for e in live if e not in ended], ended


def _active(enrollments: list[Enrollment], now: datetime) -> list[Enrollment]:
    # Only active enrollments are kept: ended or expired ones no longer affect a decision.
    return [e for e in enrollments if e.active(now)]
