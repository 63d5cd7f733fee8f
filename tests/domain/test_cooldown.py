"""Per-customer cooldown, decided on (clamped) event time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from app.domain.cooldown import CooldownMark, effective_time, may_fire

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
PLUS2 = timezone(timedelta(hours=2))
MINUS7 = timezone(timedelta(hours=-7))
MARK = CooldownMark(fired_at=T0, event_id="e1")


@pytest.mark.parametrize(
    ("mark", "cooldown", "event_id", "at", "expected"),
    [
        (None, 60, "e2", T0, True),
        (None, 0, "e2", T0, True),
        (MARK, 0, "e2", T0, True),
        (MARK, 60, "e2", T0, False),
        (MARK, 60, "e2", T0 + timedelta(minutes=59, seconds=59), False),
        (MARK, 60, "e2", T0 + timedelta(minutes=60), True),
        (MARK, 60, "e2", T0 + timedelta(minutes=61), True),
        (MARK, 0.5, "e2", T0 + timedelta(seconds=29), False),
        (MARK, 0.5, "e2", T0 + timedelta(seconds=30), True),
        (MARK, 60, "e2", T0 - timedelta(hours=5), False),
        (MARK, 60, "e1", T0, True),
        (MARK, 60, "e1", T0 + timedelta(minutes=1), True),
        (MARK, 60, "e2", (T0 + timedelta(minutes=30)).astimezone(PLUS2), False),
        (MARK, 60, "e2", (T0 + timedelta(minutes=60)).astimezone(MINUS7), True),
    ],
    ids=["no-mark", "no-mark-no-cooldown", "cooldown-0", "same-instant", "just-inside",
         "exactly-at-window", "after-window", "fractional-inside", "fractional-boundary",
         "older-event", "replay", "replay-later", "other-offset-inside", "other-offset-boundary"],
)
def test_may_fire(mark, cooldown, event_id, at, expected):
    assert may_fire(mark, cooldown, event_id, at) is expected


@pytest.mark.parametrize(
    ("event_time", "now", "expected"),
    [
        (T0, T0, T0),
        (T0 - timedelta(hours=1), T0, T0 - timedelta(hours=1)),
        (T0 + timedelta(seconds=1), T0, T0),
        (datetime(9999, 12, 31, tzinfo=UTC), T0, T0),
        (datetime(1970, 1, 1, tzinfo=UTC), T0, datetime(1970, 1, 1, tzinfo=UTC)),
        ((T0 + timedelta(hours=1)).astimezone(timezone(timedelta(hours=5))), T0, T0),
    ],
    ids=["equal", "past", "future", "far-future", "epoch", "future-other-offset"],
)
def test_effective_time_clamps_future_timestamps(event_time, now, expected):
    assert effective_time(event_time, now) == expected


def test_clamped_future_event_does_not_start_a_long_cooldown():
    at = effective_time(datetime(2100, 1, 1, tzinfo=UTC), T0)
    mark = CooldownMark(fired_at=at, event_id="e1")
    assert may_fire(mark, 60, "e2", T0 + timedelta(minutes=60)) is True


@pytest.mark.parametrize(
    "mark",
    [MARK, CooldownMark(datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))), "x:1")],
)
def test_mark_json_round_trip(mark):
    data = mark.to_json()
    assert set(data) == {"firedAt", "eventId"}
    assert CooldownMark.from_json(data) == mark
