"""Which firings a sink already performed for a customer: a small, self-pruning log."""

from __future__ import annotations

from datetime import datetime, timedelta

# firingId -> when it was performed (ISO 8601); one such log per customer and sink.
PerformedLog = dict[str, str]


def already_performed(log: PerformedLog | None, firing_id: str) -> bool:
    return bool(log) and firing_id in log  # type: ignore[operator]


def remember(log: PerformedLog | None, firing_id: str, now: datetime, retention: timedelta,
             max_entries: int) -> PerformedLog:
    """Add a firing and drop entries older than `retention` or beyond `max_entries` (oldest
    first), so the log stays bounded however many firings a customer gets. A replay older
    than the retention window would be performed again; the window is chosen far longer
    than any plausible redelivery (see docs)."""
    horizon = now - retention
    kept = {fid: at for fid, at in (log or {}).items() if datetime.fromisoformat(at) >= horizon}
    kept[firing_id] = now.isoformat()
    if len(kept) > max_entries:
        newest = sorted(kept.items(), key=lambda item: item[1])[-max_entries:]
        kept = dict(newest)
    return kept
