"""Cron ticks on a controllable clock, DST changes included, and the scheduled audience rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.domain.definitions import compile_definition
from app.domain.engine import evaluate_scheduled
from app.domain.internal_records import Tick
from app.domain.models import Schedule
from app.domain.schedules import latest_tick, tick_to_run


def schedule(cron: str, timezone: str = "UTC") -> Schedule:
    return Schedule.model_validate({"cron": cron, "timezone": timezone})


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.mark.parametrize(("cron", "zone", "after", "until", "expected"), [
    ("* * * * *", "UTC", utc(2026, 1, 1, 12, 0, 30), utc(2026, 1, 1, 12, 3), [
        utc(2026, 1, 1, 12, 1), utc(2026, 1, 1, 12, 2), utc(2026, 1, 1, 12, 3)]),
    # 09:00 Berlin is 08:00 UTC in winter, 07:00 UTC in summer.
    ("0 9 * * *", "Europe/Berlin", utc(2026, 3, 28), utc(2026, 3, 30, 12), [
        utc(2026, 3, 28, 8), utc(2026, 3, 29, 7), utc(2026, 3, 30, 7)]),
    # 02:30 does not exist on 29 March in Berlin: it runs at the shifted instant, once.
    ("30 2 * * *", "Europe/Berlin", utc(2026, 3, 28), utc(2026, 3, 30, 12), [
        utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 0, 30)]),
    # 02:30 happens twice on 25 October in Berlin: it runs once.
    ("30 2 * * *", "Europe/Berlin", utc(2026, 10, 24, 12), utc(2026, 10, 26, 12), [
        utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]),
    ("0 0 * * 1", "UTC", utc(2026, 11, 24), utc(2026, 12, 8), [utc(2026, 11, 30), utc(2026, 12, 7)]),
])
def test_latest_tick_on_a_clock_checking_every_minute(cron: str, zone: str, after: datetime, until: datetime,
                                                      expected: list[datetime]) -> None:
    """The ticks a clock asking every minute of (after, until] sees, each once, DST changes included."""
    checks = [after + timedelta(minutes=n) for n in range(1, int((until - after) / timedelta(minutes=1)) + 1)]
    seen: list[datetime] = []
    for now in [*checks, until]:
        tick = latest_tick(schedule(cron, zone), now)
        if tick > after and tick not in seen:
            seen.append(tick)
    assert seen == expected


def test_daily_and_weekly_shorthands() -> None:
    assert schedule("daily").cron == "0 0 * * *"
    assert schedule("weekly").cron == "0 0 * * 1"


NOW = utc(2026, 1, 1, 12, 0, 30)


@pytest.mark.parametrize(("checked_until", "now", "expected"), [
    (None, NOW, utc(2026, 1, 1, 12, 0)),                           # new leader: latest missed tick runs
    (NOW, NOW + timedelta(seconds=20), None),                       # no tick since the last check
    (NOW, NOW + timedelta(seconds=40), utc(2026, 1, 1, 12, 1)),      # one tick due
    (NOW, NOW + timedelta(minutes=5), utc(2026, 1, 1, 12, 5)),       # several due: only the latest runs
])
def test_tick_to_run_coalesces_missed_ticks(checked_until: datetime | None, now: datetime,
                                            expected: datetime | None) -> None:
    assert tick_to_run(schedule("* * * * *"), checked_until, now, timedelta(hours=1)) == expected


def test_catch_up_window_limits_how_far_back_a_new_leader_looks() -> None:
    daily = schedule("0 9 * * *")
    assert tick_to_run(daily, None, utc(2026, 1, 1, 9, 30), timedelta(hours=1)) == utc(2026, 1, 1, 9)
    assert tick_to_run(daily, None, utc(2026, 1, 1, 11, 0), timedelta(hours=1)) is None


SCHEDULED = compile_definition({
    "id": "winback", "source": "scheduled", "eventType": "schedule.tick", "schedule": "daily",
    "filters": {"country": ["DE", "AT"]}, "conditions": ["customer.tier == 'gold'", "event.triggerId == 'winback'"],
    "action": {"type": "enroll_journey", "journeyId": "win-back"}, "cooldownMinutes": 60})
TICK = utc(2026, 1, 1, 9)


@pytest.mark.parametrize(("row", "fires"), [
    ({"country": "DE", "tier": "gold"}, True),
    ({"country": "AT", "tier": "gold"}, True),
    ({"country": "FR", "tier": "gold"}, False),   # filters apply to the customer's row
    ({"country": "DE", "tier": "silver"}, False),  # conditions read customer and the tick
    ({"tier": "gold"}, False),
])
def test_scheduled_audience_is_filtered_on_the_customer_row(row: dict[str, str], fires: bool) -> None:
    event = Tick("winback", TICK).event_for("c-1")
    result = evaluate_scheduled(SCHEDULED, event, row, lambda _: None, TICK + timedelta(seconds=1))
    assert bool(result.firings) is fires


def test_tick_events_give_each_customer_its_own_firing_and_respect_cooldown() -> None:
    first = evaluate_scheduled(SCHEDULED, Tick("winback", TICK).event_for("c-1"), {"country": "DE", "tier": "gold"},
                               lambda _: None, TICK)
    other = evaluate_scheduled(SCHEDULED, Tick("winback", TICK).event_for("c-2"), {"country": "DE", "tier": "gold"},
                               lambda _: None, TICK)
    assert first.firings[0].firing_id != other.firings[0].firing_id
    mark = first.cooldown_marks["winback"]
    again = evaluate_scheduled(SCHEDULED, Tick("winback", TICK + timedelta(minutes=30)).event_for("c-1"),
                               {"country": "DE", "tier": "gold"}, lambda _: mark, TICK + timedelta(minutes=30))
    assert again.firings == [] and again.cooled_down == ["winback"]


def test_a_stale_check_never_runs_a_tick_older_than_the_catch_up_window() -> None:
    # A worker that was leader a day ago and becomes leader again must not run yesterday's tick.
    hourly = schedule("0 * * * *")
    assert tick_to_run(hourly, utc(2026, 1, 1, 0, 30), utc(2026, 1, 2, 12, 30), timedelta(minutes=10)) is None
    assert tick_to_run(hourly, utc(2026, 1, 1, 0, 30), utc(2026, 1, 2, 12, 5), timedelta(minutes=10)) == utc(
        2026, 1, 2, 12)


def test_the_latest_tick_is_found_however_many_ticks_the_window_holds() -> None:
    every_minute = schedule("* * * * *")
    now = utc(2026, 1, 1, 12, 0, 30)
    assert tick_to_run(every_minute, None, now, timedelta(days=30)) == utc(2026, 1, 1, 12, 0)
