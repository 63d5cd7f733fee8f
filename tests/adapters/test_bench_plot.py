"""The bench plot's rates: cumulative counter samples to events per second per window."""

from __future__ import annotations

import pytest

from bench.plot import rates


def test_rates_are_events_over_each_window_of_at_least_a_quarter_second() -> None:
    # Samples every 0.1 s; 1,000 events per 0.1 s for 0.3 s, then 500 per 0.1 s.
    timeline = [(0.0, 0), (0.1, 1000), (0.2, 2000), (0.3, 3000), (0.4, 3500), (0.5, 4000), (0.6, 4500)]
    times, per_second = rates(timeline)
    assert times == pytest.approx([0.15, 0.45])
    assert per_second == pytest.approx([10_000, 5_000])


def test_a_timeline_shorter_than_a_window_has_no_rate() -> None:
    assert rates([(0.0, 0), (0.1, 100)]) == ([], [])
