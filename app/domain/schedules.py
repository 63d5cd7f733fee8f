"""When scheduled triggers tick: cron in an IANA time zone, and which missed tick still runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from app.domain.models import Schedule

MAX_TICKS = 1000


def ticks_between(schedule: Schedule, after: datetime, until: datetime) -> list[datetime]:
    """Tick times (UTC) in (after, until], computed on the schedule's local wall clock.

    Across DST changes a local time that does not exist (spring forward) runs at the
    shifted instant, and a repeated local time (fall back) runs once.
    """
    zone = ZoneInfo(schedule.timezone)
    # croniter keeps the start's UTC offset across DST changes, so iterate on naive local
    # wall-clock times and attach the zone to each tick (fold=0: the first of a repeated time).
    iterator = croniter(schedule.cron, after.astimezone(zone).replace(tzinfo=None))
    ticks: list[datetime] = []
    while len(ticks) < MAX_TICKS:
        tick = iterator.get_next(datetime).replace(tzinfo=zone).astimezone(UTC)
        if tick > until:
            break
        if tick > after and (not ticks or tick > ticks[-1]):
            ticks.append(tick)
    return ticks


def tick_to_run(schedule: Schedule, checked_until: datetime | None, now: datetime,
                catch_up: timedelta) -> datetime | None:
    """The one tick to run now, if any: the latest tick since the last check. A scheduler
    that has not checked before (a worker just became leader) looks back `catch_up`, so a
    tick missed while no worker ran runs once on start; older missed ticks are skipped."""
    after = checked_until if checked_until is not None else now - catch_up
    due = ticks_between(schedule, after, now)
    return due[-1] if due else None
