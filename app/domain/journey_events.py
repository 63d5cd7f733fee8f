"""`journeys.events` records (a journey service saying an enrollment ended), read and validated."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from app.domain.intake import load_json
from app.errors import MalformedEvent

JOURNEY_END_STATUSES = ("completed", "exited")
# The kind of a journey event's envelope on the rerouted topic.
REROUTED_KIND = "journey_event"


@dataclass(frozen=True)
class JourneyEnd:
    customer_id: str
    journey_id: str
    enrollment_id: str | None  # None: every active enrollment in the journey ends
    status: str


def parse_journey_event(raw: bytes | None) -> JourneyEnd:
    try:
        data = load_json(raw or b"null")
    except ValueError as exc:
        raise MalformedEvent(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedEvent("a journey event is a JSON object")
    customer_id, journey_id = data.get("customerId"), data.get("journeyId")
    enrollment_id, status = data.get("enrollmentId"), data.get("status")
    if not isinstance(customer_id, str) or not customer_id:
        raise MalformedEvent("field 'customerId' must be a non-empty string")
    if not isinstance(journey_id, str) or not journey_id:
        raise MalformedEvent("field 'journeyId' must be a non-empty string")
    if enrollment_id is not None and not isinstance(enrollment_id, str):
        raise MalformedEvent("field 'enrollmentId' must be a string")
    if status not in JOURNEY_END_STATUSES:
        raise MalformedEvent(f"field 'status' must be one of {', '.join(JOURNEY_END_STATUSES)}")
    return JourneyEnd(customer_id, journey_id, enrollment_id, status)


def journey_event_envelope(raw: bytes | None) -> bytes:
    """The record on the rerouted topic for a journey event read in the wrong partition."""
    return json.dumps({"kind": REROUTED_KIND, "value": (raw or b"").decode()}, separators=(",", ":")).encode()


def rerouted_journey_event(data: dict[str, Any]) -> JourneyEnd:
    """The journey event in an envelope; MalformedEvent for one this engine did not write."""
    value = data.get("value")
    if not isinstance(value, str):
        raise MalformedEvent("a rerouted journey event has a text 'value'")
    return parse_journey_event(value.encode())
