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
    event_ms: int = 0  # the matching event's time: only events from then to the due time cancel
    shadow: bool = False  # scheduled by a shadow trigger: fires to triggers.shadow, whatever the mode then

    def entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"firingId": self.firing_id, "triggerId": self.trigger_id,
                                 "eventId": self.event_id, "dueMs": self.due_ms, "eventMs": self.event_ms,
                                 "event": self.event}
        if self.shadow:
            entry["shadow"] = True
        return entry

    @classmethod
    def from_entry(cls, customer_id: str, entry: Mapping[str, Any]) -> PendingFiring:
        return cls(firing_id=entry["firingId"], trigger_id=entry["triggerId"], customer_id=customer_id,
                   event_id=entry["eventId"], due_ms=int(entry["dueMs"]), event=entry["event"],
                   event_ms=int(entry.get("eventMs", 0)), shadow=entry.get("shadow") is True)

    def status(self, status: str, at: datetime, reason: str | None = None) -> dict[str, Any]:
        """Its record on `triggers.pending`."""
        record: dict[str, Any] = {
            "firingId": self.firing_id, "triggerId": self.trigger_id, "customerId": self.customer_id,
            "eventId": self.event_id, "dueAt": millis_iso(self.due_ms), "status": status, "at": at.isoformat()}
        if reason is not None:
            record["reason"] = reason
        if self.shadow:
            record["shadow"] = True
        return record


def millis_iso(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, tz=UTC).isoformat(timespec="milliseconds")


def to_millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def pending_of(customer_id: str, record: Record | None) -> list[PendingFiring]:
    return [PendingFiring.from_entry(customer_id, entry) for entry in (record or {}).get("pending", [])]


def schedule(record: Record | None, firings: list[PendingFiring], position: Position | None,
             cancelled_by: Callable[[PendingFiring], dict[str, Any] | None] = lambda firing: None
             ) -> tuple[Record, list[PendingFiring], list[PendingFiring], list[tuple[PendingFiring, dict[str, Any]]]]:
    """The record with `firings` added: (record, scheduled, dropped, cancelled). A firing
    already pending is not added twice, but takes the new due time if it has one (held until
    quiet hours end); one that a remembered cancel event already cancels (`cancelled_by`
    returns that event) is not added; beyond MAX_PENDING_PER_CUSTOMER the rest are dropped."""
    entries = list((record or {}).get("pending", []))
    pending_ids = {entry["firingId"] for entry in entries}
    scheduled, dropped, cancelled = [], [], []
    for firing in firings:
        if firing.firing_id not in pending_ids and (canceller := cancelled_by(firing)) is not None:
            cancelled.append((firing, canceller))
            continue
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
    return with_position({**(record or {}), "pending": entries}, position), scheduled, dropped, cancelled


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


def cancels_pending(event_json: Mapping[str, Any], event_ms: int,
                    rules_of: Callable[[str], tuple[Any, ...]]) -> CancelCheck:
    """Whether an event cancels a pending firing: its time must lie from the matching event's
    time up to (not including) the due time — event time, in whatever order the two are
    read — and it must match one of the firing's trigger's `cancelOn` rules."""
    def check(firing: PendingFiring) -> bool:
        if not firing.event_ms <= event_ms < firing.due_ms or event_json.get("id") == firing.event_id:
            return False
        return any(rule.cancels(firing.event, event_json) for rule in rules_of(firing.trigger_id))
    return check


# Cancel events remembered per customer, for firings scheduled after them (read later, from
# another topic or out of order, but matching an earlier event): the newest ones, within the
# longest delay of any trigger with cancelOn.
MAX_REMEMBERED_CANCELS = 20


def remember_cancel(record: Record | None, event_json: Mapping[str, Any], event_ms: int, keep_fields: frozenset[str],
                    horizon_ms: int, position: Position | None) -> Record:
    """The record remembering this cancel event: its source, type, id and time, and only the
    fields some cancelOn rule reads (filters, sameFields), so it stays small."""
    kept = {name: event_json[name] for name in ("source", "type", "id", *keep_fields) if name in event_json}
    newest = max([event_ms, *(entry[0] for entry in (record or {}).get("cancels", []))])
    remembered = [entry for entry in (record or {}).get("cancels", []) if entry[0] >= newest - horizon_ms]
    remembered = sorted([*remembered, [event_ms, kept]], key=lambda entry: entry[0])[-MAX_REMEMBERED_CANCELS:]
    return with_position({**(record or {}), "cancels": remembered}, position)


def cancelled_earlier(record: Record | None, rules_of: Callable[[str], tuple[Any, ...]]
                      ) -> Callable[[PendingFiring], dict[str, Any] | None]:
    """For a firing about to be scheduled: the remembered cancel event that cancels it, if any."""
    remembered = (record or {}).get("cancels", [])

    def find(firing: PendingFiring) -> dict[str, Any] | None:
        for event_ms, event_json in remembered:
            if cancels_pending(event_json, event_ms, rules_of)(firing):
                return dict(event_json)
        return None
    return find


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
