"""When scheduled triggers tick: cron in an IANA time zone, and which missed tick still runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from app.domain.models import Schedule


def latest_tick(schedule: Schedule, until: datetime) -> datetime:
    """The last tick at or before `until` (UTC), on the schedule's local wall clock."""
    zone = ZoneInfo(schedule.timezone)
    local = until.astimezone(zone).replace(tzinfo=None)
    iterator = croniter(schedule.cron, local + timedelta(microseconds=1))
    while True:
        tick: datetime = iterator.get_prev(datetime).replace(tzinfo=zone).astimezone(UTC)
        if tick <= until:
            return tick


def tick_to_run(schedule: Schedule, checked_until: datetime | None, now: datetime,
                catch_up: timedelta) -> datetime | None:
    """The one tick to run now, if any: the latest tick since the last check, never one
    older than `catch_up`. A scheduler that has not checked before (a worker just became
    leader) so runs a tick missed while no worker ran once; older missed ticks are skipped."""
    after = max(checked_until, now - catch_up) if checked_until is not None else now - catch_up
    tick = latest_tick(schedule, now)
    return tick if tick > after else None
