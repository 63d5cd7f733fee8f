"""The records the engine writes to its own internal topics (rerouted work, schedule ticks), and
how they are read back: validated like any input, since anyone can produce to those topics."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from app.domain.encoding import encode
from app.domain.intake import json_object
from app.domain.models import Event, EventEnvelope, Source
from app.domain.rows import RowLoad
from app.errors import MalformedEvent

# -- rerouted work: an event or a row load, re-published keyed by its customer id ----------------


def envelope(work: Event | RowLoad) -> bytes:
    """The record on `triggers.internal.rerouted` for work owned by another partition."""
    if isinstance(work, RowLoad):
        row = {"table": work.table, "customer_id": work.customer_id, "attributes": work.attributes}
        return encode({"kind": "row", "row": row})
    return encode({"kind": "event", "event": work.to_envelope()})


def rerouted_work(data: dict[str, Any]) -> Event | RowLoad:
    """The work in an envelope of kind "row" or "event"; MalformedEvent for anything else."""
    kind = data.get("kind")
    if kind == "row":
        return _rerouted_row(data.get("row"))
    if kind == "event":
        try:
            return EventEnvelope.model_validate(data.get("event")).event()
        except ValidationError as exc:
            raise MalformedEvent(f"invalid rerouted event: {_validation_summary(exc)}") from None
    raise MalformedEvent(f"unknown rerouted record kind {str(kind)[:64]!r}")


def _rerouted_row(row: Any) -> RowLoad:
    if not isinstance(row, dict):
        raise MalformedEvent("a rerouted row load has an object 'row'")
    table, customer_id, attributes = row.get("table"), row.get("customer_id"), row.get("attributes")
    if not isinstance(table, str) or not table or not isinstance(customer_id, str) or not customer_id:
        raise MalformedEvent("a rerouted row load has non-empty text 'table' and 'customer_id'")
    if attributes is not None and not isinstance(attributes, dict):
        raise MalformedEvent("a rerouted row load's 'attributes' is an object or null")
    return RowLoad(table, customer_id, attributes)


# -- schedule ticks: one record per partition, written by the leader's clock -----------------


@dataclass(frozen=True)
class Tick:
    """A scheduled trigger is due at `scheduled_at`."""

    trigger_id: str
    scheduled_at: datetime

    def record(self) -> bytes:
        return encode({"triggerId": self.trigger_id, "scheduledAt": self.scheduled_at.isoformat()})

    def event_for(self, customer_id: str) -> Event:
        """The event a scheduled trigger sees: one per tick and customer, so firingIds differ."""
        at = self.scheduled_at.isoformat()
        return Event(id=f"tick:{self.trigger_id}:{at}:{customer_id}", type="schedule.tick",
                     customer_id=customer_id, source=Source.SCHEDULED, timestamp=self.scheduled_at,
                     fields={"scheduledAt": at, "triggerId": self.trigger_id})


def read_tick(raw: bytes | None) -> Tick:
    """`{"triggerId": ..., "scheduledAt": <ISO 8601 with offset>}`, as `Tick.record` writes it."""
    tick = json_object(raw, "a tick")
    trigger_id, scheduled = tick.get("triggerId"), tick.get("scheduledAt")
    if not isinstance(trigger_id, str) or not trigger_id or not isinstance(scheduled, str):
        raise MalformedEvent("a tick has text fields 'triggerId' and 'scheduledAt'")
    try:
        scheduled_at = datetime.fromisoformat(scheduled)
    except ValueError:
        raise MalformedEvent(f"tick field 'scheduledAt' is not ISO 8601: {scheduled[:64]!r}") from None
    if scheduled_at.tzinfo is None:
        raise MalformedEvent("tick field 'scheduledAt' has no time zone")
    return Tick(trigger_id, scheduled_at)


def _validation_summary(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors()[:10])
