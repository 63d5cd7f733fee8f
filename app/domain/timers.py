"""Pending (delayed) firings of one customer, as stored in the timers table: pure functions
over the stored record, so the rules are tested without a worker.

A customer's record: {"pos": {"<topic>": <offset>}, "pending": [<entry>, ...]}, entries in
due order. `pos` is the last record of each topic whose effects are in the record: a record
read again after a crash (at-least-once) schedules nothing twice."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.domain.models import Event
from app.domain.positions import Position, with_position

# Pending firings one customer may have at once (all triggers together); more are dropped,
# with the reason on `triggers.pending`. Bounds the record, which is rewritten per change.
MAX_PENDING_PER_CUSTOMER = 100

Record = dict[str, Any]


@dataclass(frozen=True, slots=True)
class PendingFiring:
    firing_id: str
    trigger_id: str
    customer_id: str
    event_id: str
    due_ms: int
    event: dict[str, Any]  # the matching event as JSON: `event` when it fires

    def entry(self) -> dict[str, Any]:
        return {"firingId": self.firing_id, "triggerId": self.trigger_id, "eventId": self.event_id,
                "dueMs": self.due_ms, "event": self.event}

    @classmethod
    def from_entry(cls, customer_id: str, entry: Mapping[str, Any]) -> PendingFiring:
        return cls(firing_id=entry["firingId"], trigger_id=entry["triggerId"], customer_id=customer_id,
                   event_id=entry["eventId"], due_ms=int(entry["dueMs"]), event=entry["event"])

    def status(self, status: str, at: datetime, reason: str | None = None) -> dict[str, Any]:
        """Its record on `triggers.pending`."""
        record = {"firingId": self.firing_id, "triggerId": self.trigger_id, "customerId": self.customer_id,
                  "eventId": self.event_id, "dueAt": millis_iso(self.due_ms), "status": status,
                  "at": at.isoformat()}
        if reason is not None:
            record["reason"] = reason
        return record


def millis_iso(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, tz=UTC).isoformat(timespec="milliseconds")


def to_millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def pending_of(customer_id: str, record: Record | None) -> list[PendingFiring]:
    return [PendingFiring.from_entry(customer_id, entry) for entry in (record or {}).get("pending", [])]


def schedule(record: Record | None, firings: list[PendingFiring], position: Position | None
             ) -> tuple[Record, list[PendingFiring], list[PendingFiring]]:
    """The record with `firings` added: (record, scheduled, dropped). A firing already pending
    is not added twice, but takes the new due time if it has one (held until quiet hours end);
    beyond MAX_PENDING_PER_CUSTOMER the rest are dropped."""
    entries = list((record or {}).get("pending", []))
    pending_ids = {entry["firingId"] for entry in entries}
    scheduled, dropped = [], []
    for firing in firings:
        if firing.firing_id in pending_ids:
            for index, entry in enumerate(entries):
                if entry["firingId"] == firing.firing_id and int(entry["dueMs"]) != firing.due_ms:
                    entries[index] = {**entry, "dueMs": firing.due_ms}
                    scheduled.append(firing)
            continue
        if len(entries) >= MAX_PENDING_PER_CUSTOMER:
            dropped.append(firing)
            continue
        entries.append(firing.entry())
        pending_ids.add(firing.firing_id)
        scheduled.append(firing)
    entries.sort(key=_due_then_id)
    return with_position({**(record or {}), "pending": entries}, position), scheduled, dropped


def _due_then_id(entry: Mapping[str, Any]) -> tuple[int, str]:
    return int(entry["dueMs"]), str(entry["firingId"])


CancelCheck = Callable[[PendingFiring], bool]


def cancel(record: Record | None, customer_id: str, cancels: CancelCheck, position: Position | None
           ) -> tuple[Record | None, list[PendingFiring]]:
    """The record without the pending firings `cancels` says the current event cancels."""
    if not record or not record.get("pending"):
        return record, []
    kept, cancelled = [], []
    for entry in record["pending"]:
        firing = PendingFiring.from_entry(customer_id, entry)
        if cancels(firing):
            cancelled.append(firing)
        else:
            kept.append(entry)
    if not cancelled:
        return record, []
    return with_position({**record, "pending": kept}, position), cancelled


def cancels_pending(event: Event, event_json: Mapping[str, Any], event_ms: int,
                    rules_of: Callable[[str], tuple[Any, ...]]) -> CancelCheck:
    """Whether `event` cancels a pending firing: it must come before the due time (event time,
    however late it is read) and match one of the firing's trigger's `cancelOn` rules."""
    def check(firing: PendingFiring) -> bool:
        if event_ms >= firing.due_ms or event.id == firing.event_id:
            return False
        return any(rule.cancels(firing.event, event, event_json) for rule in rules_of(firing.trigger_id))
    return check


def due(record: Record | None, customer_id: str, until_ms: int) -> list[PendingFiring]:
    """The pending firings due at or before `until_ms`, in due order."""
    return [PendingFiring.from_entry(customer_id, entry) for entry in (record or {}).get("pending", [])
            if int(entry["dueMs"]) <= until_ms]


def without(record: Record | None, firing_ids: set[str]) -> Record | None:
    """The record without these firings; None when nothing is left to keep (no pending firing)."""
    if record is None:
        return None
    kept = [entry for entry in record.get("pending", []) if entry["firingId"] not in firing_ids]
    return {**record, "pending": kept}


def earliest_due(record: Record | None) -> int | None:
    entries = (record or {}).get("pending")
    return int(entries[0]["dueMs"]) if entries else None
