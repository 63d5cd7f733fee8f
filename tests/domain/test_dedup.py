"""The per-customer log of performed firings: replay detection, retention, and the size cap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.domain.dedup import already_performed, remember

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
RETENTION = timedelta(days=7)


def log_of(*ages: timedelta) -> dict[str, str]:
    """f0, f1, ... performed `age` before NOW."""
    return {f"f{i}": (NOW - age).isoformat() for i, age in enumerate(ages)}


@pytest.mark.parametrize("log", [None, {}])
def test_nothing_is_performed_in_an_empty_log(log):
    assert not already_performed(log, "f1")


def test_already_performed_finds_only_logged_firings():
    log = log_of(timedelta(minutes=1))
    assert already_performed(log, "f0")
    assert not already_performed(log, "f1")


def test_remember_then_replay_is_detected():
    log = remember(None, "firing-1", NOW, RETENTION, 100)
    assert log == {"firing-1": NOW.isoformat()}
    assert already_performed(log, "firing-1")
    assert not already_performed(log, "firing-2")


def test_replay_detected_after_other_firings():
    log = None
    for n in range(10):
        log = remember(log, f"f{n}", NOW + timedelta(seconds=n), RETENTION, 100)
    assert all(already_performed(log, f"f{n}") for n in range(10))


def test_remember_does_not_mutate_the_given_log():
    log = log_of(timedelta(minutes=1))
    snapshot = dict(log)
    remember(log, "new", NOW, RETENTION, 100)
    assert log == snapshot


def test_remembering_the_same_firing_again_keeps_one_entry():
    log = remember(None, "f", NOW, RETENTION, 100)
    log = remember(log, "f", NOW + timedelta(minutes=1), RETENTION, 100)
    assert list(log) == ["f"]
    assert log["f"] == (NOW + timedelta(minutes=1)).isoformat()


def test_remember_prunes_entries_older_than_retention():
    log = log_of(timedelta(days=8), timedelta(days=7, seconds=1), timedelta(days=6), timedelta(minutes=5))

    kept = remember(log, "new", NOW, RETENTION, 100)

    assert set(kept) == {"f2", "f3", "new"}
    assert not already_performed(kept, "f0")
    assert not already_performed(kept, "f1")


def test_entry_exactly_at_the_retention_horizon_is_kept():
    kept = remember(log_of(RETENTION), "new", NOW, RETENTION, 100)
    assert "f0" in kept


def test_remember_caps_entries_keeping_the_newest():
    log = log_of(timedelta(hours=5), timedelta(hours=1), timedelta(hours=4), timedelta(hours=2),
                 timedelta(hours=3))

    kept = remember(log, "new", NOW, RETENTION, 3)

    assert len(kept) == 3
    assert set(kept) == {"new", "f1", "f3"}  # the two most recent and the one just performed


def test_cap_of_one_keeps_only_the_latest():
    kept = remember(log_of(timedelta(seconds=1)), "new", NOW, RETENTION, 1)
    assert kept == {"new": NOW.isoformat()}


def test_log_stays_bounded_however_many_firings():
    log = None
    for n in range(500):
        log = remember(log, f"f{n}", NOW + timedelta(seconds=n), RETENTION, 50)
    assert len(log) == 50
    assert set(log) == {f"f{n}" for n in range(450, 500)}


def test_cap_orders_by_time_even_across_microsecond_formats():
    # isoformat() omits microseconds when they are zero; ordering must still be by time.
    log = {"whole": NOW.isoformat(),
           "later": (NOW + timedelta(microseconds=500_000)).isoformat(),
           "earlier": (NOW - timedelta(microseconds=500_000)).isoformat()}
    kept = remember(log, "new", NOW + timedelta(seconds=1), RETENTION, 3)
    assert set(kept) == {"new", "later", "whole"}


def test_pruning_and_capping_together():
    log = log_of(timedelta(days=30), timedelta(hours=3), timedelta(hours=2), timedelta(hours=1))
    kept = remember(log, "new", NOW, RETENTION, 2)
    assert set(kept) == {"f3", "new"}
