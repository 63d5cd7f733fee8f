"""app/domain/backtest.py: a trigger decided over events handed in, in private state — cooldown,
limit, delays and cancels, aggregates, the report's shape, times and the reader's skip test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.domain.backtest import (
    Backtest,
    NotBacktestable,
    backtestable,
    check_range,
    day_range,
    event_types_read,
    may_matter,
    parse_time,
    reads_customer,
    relevant_needles,
)
from app.domain.definitions import CompiledTrigger, compile_definition
from app.domain.engine import firing_id
from app.domain.models import Event, Source
from app.domain.timers import to_millis

START = datetime(2026, 11, 1, tzinfo=UTC)
END = START + timedelta(days=3)


def trigger(**extra: Any) -> CompiledTrigger:
    return compile_definition({"id": "t", "source": "streaming", "eventType": "purchase",
                               "conditions": ["event.amount > 100"],
                               "action": {"type": "enroll_journey", "journeyId": "j"}, **extra})


def event(event_id: str, minutes: float, type_: str = "purchase", customer: str = "c1", **fields: Any) -> Event:
    return Event(id=event_id, type=type_, customer_id=customer, source=Source.STREAMING,
                 timestamp=START + timedelta(minutes=minutes), fields={"amount": 500, **fields})


def run(definition: CompiledTrigger, *events: Event, rows: dict[str, Any] | None = None) -> dict[str, Any]:
    backtest = Backtest(definition, to_millis(START), to_millis(END), (rows or {}).get)
    for item in events:
        backtest.handle(0, item)
    backtest.finish()
    return backtest.report(len(events), truncated=False, seconds=0.5)


def test_cooldown_holds_back_a_second_firing_within_its_minutes() -> None:
    report = run(trigger(cooldownMinutes=60), event("e1", 0), event("e2", 30), event("e3", 61),
                 event("e4", 62, amount=5))
    assert (report["matched"], report["wouldFire"], report["cooledDown"]) == (3, 2, 1)
    assert [s["eventId"] for s in report["samples"]] == ["e1", "e3"]
    assert report["samples"][0]["firingId"] == firing_id("t", "e1")  # the live firing's id
    assert report["samples"][0]["firedAt"].startswith("2026-11-01T00:00:00")  # the event's time


def test_the_trigger_limit_suppresses_and_does_not_start_cooldown() -> None:
    report = run(trigger(limit={"max": 2}), *(event(f"e{n}", n) for n in range(5)))
    assert report["wouldFire"] == 2 and report["suppressed"] == {"trigger_limit": 3}


def test_a_delayed_firing_fires_at_its_due_time_unless_cancelled_before() -> None:
    delayed = trigger(delay={"minutes": 30},
                      cancelOn=[{"source": "streaming", "eventType": "refund", "sameFields": ["orderId"]}])
    report = run(delayed,
                 event("kept", 0, orderId="o1"),
                 event("refunded", 1, orderId="o2"),
                 event("refund", 10, type_="refund", orderId="o2"),
                 event("late-refund", 40, type_="refund", orderId="o1"))  # after the due time: too late
    assert report["wouldFire"] == 1 and [s["eventId"] for s in report["samples"]] == ["kept"]
    assert report["samples"][0]["firedAt"].startswith("2026-11-01T00:30:00")  # decided at its due time


def test_a_firing_due_after_the_range_is_pending_not_fired() -> None:
    report = run(trigger(delay={"hours": 2}), event("e1", 3 * 24 * 60 - 60))
    assert (report["matched"], report["wouldFire"], report["pending"]) == (1, 0, 1)


def test_a_due_firing_is_decided_before_a_later_event_of_its_partition() -> None:
    """As a worker reading a backlog: the partition's time passes the due time at the next
    event (another customer's), so the cooldown it starts holds back the customer's next match."""
    definition = trigger(delay={"minutes": 10}, cooldownMinutes=60)
    report = run(definition, event("e1", 0), event("other", 11, type_="page_view", customer="c2"),
                 event("e2", 20))
    assert report["wouldFire"] == 1 and report["pending"] == 0
    assert report["cooledDown"] == 1  # e2, at its own due time (30), is within e1's cooldown (10 + 60)


def test_aggregates_count_the_customers_events_in_the_window() -> None:
    definition = trigger(conditions=["agg.spend >= 1000"],
                         aggregates={"spend": {"fn": "sum", "of": "event.amount", "window": {"hours": 1}}})
    report = run(definition, event("e1", 0), event("e2", 10), event("e3", 100), event("e4", 105, customer="c2"))
    assert [s["eventId"] for s in report["samples"]] == ["e2"]
    assert report["samples"][0]["aggregates"] == {"spend": 1000}


def test_conditions_on_customer_read_the_rows_given() -> None:
    definition = trigger(conditions=["customer.tier == 'gold'"])
    assert reads_customer(definition) and not reads_customer(trigger())
    report = run(definition, event("e1", 0), event("e2", 1, customer="c2"), rows={"c1": {"tier": "gold"}})
    assert [s["customerId"] for s in report["samples"]] == ["c1"]


def test_the_report_has_every_day_and_band_and_the_contract_names() -> None:
    report = run(trigger(priority=95), event("e1", 0), event("e2", 60 * 24 + 5))
    assert list(report) == ["triggerId", "from", "to", "eventsRead", "matched", "wouldFire", "cooledDown",
                            "suppressed", "pending", "perDay", "perBand", "samples", "truncated", "seconds"]
    assert report["perDay"] == [{"day": "2026-11-01", "firings": 1}, {"day": "2026-11-02", "firings": 1},
                                {"day": "2026-11-03", "firings": 0}]
    assert report["perBand"] == {"critical": 2, "high": 0, "medium": 0, "low": 0}
    assert (report["from"], report["to"]) == ("2026-11-01T00:00:00.000Z", "2026-11-04T00:00:00.000Z")


def test_samples_are_the_earliest_twenty_whatever_the_order_read() -> None:
    backtest = Backtest(trigger(), to_millis(START), to_millis(END))
    for n in reversed(range(30)):  # another partition read first: later events come in first
        backtest.handle(n % 4, event(f"e{n:02}", n, customer=f"c{n}"))
    samples = backtest.report(30, False, 1.0)["samples"]
    assert [s["eventId"] for s in samples] == [f"e{n:02}" for n in range(20)]


def test_day_range_covers_every_day_the_range_touches() -> None:
    assert day_range(to_millis(START), to_millis(START + timedelta(days=1))) == [START.date()]
    assert len(day_range(to_millis(START + timedelta(hours=23)), to_millis(START + timedelta(hours=25)))) == 2


def test_times_iso_relative_and_refused() -> None:
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert parse_time("2026-11-30", now, "--from") == datetime(2026, 11, 30, tzinfo=UTC)
    assert parse_time("2026-11-30T08:00:00Z", now, "--from") == datetime(2026, 11, 30, 8, tzinfo=UTC)
    assert parse_time("2026-11-30T09:00+01:00", now, "--from") == datetime(2026, 11, 30, 8, tzinfo=UTC)
    assert parse_time("-7d", now, "--from") == now - timedelta(days=7)
    assert parse_time("-12h", now, "--to") == now - timedelta(hours=12)
    assert parse_time("now", now, "--to") == now
    with pytest.raises(ValueError, match="--from: 'last week' is not a time"):
        parse_time("last week", now, "--from")
    with pytest.raises(ValueError, match="must be before"):
        check_range(now, now)


def test_scheduled_triggers_are_refused_and_disabled_ones_run() -> None:
    scheduled = compile_definition({"id": "s", "source": "scheduled", "eventType": "tick", "schedule": "daily",
                                    "action": {"type": "enroll_journey", "journeyId": "j"}})
    with pytest.raises(NotBacktestable, match="scheduled"):
        backtestable(scheduled)
    assert backtestable(trigger(enabled=False)).definition.enabled
    assert run(trigger(enabled=False), event("e1", 0))["wouldFire"] == 1


def test_the_reader_skips_only_events_that_cannot_matter() -> None:
    definition = trigger(cancelOn=[{"source": "outcome", "eventType": "refund"}], delay={"minutes": 5})
    assert event_types_read(definition) == {Source.STREAMING: {"purchase"}, Source.OUTCOME: {"refund"}}
    needles = relevant_needles(definition, Source.STREAMING)
    assert not may_matter(b'{"type": "page_view", "customerId": "c1"}', needles)
    assert may_matter(b'{"type": "purchase", "customerId": "c1"}', needles)
    assert may_matter(b'{"type": "purch\\u0061se", "customerId": "c1"}', needles)  # an escape may hide it
    assert relevant_needles(trigger(eventType="*"), Source.STREAMING) is None
    assert relevant_needles(definition, Source.CDC) is None


def test_samples_mask_the_actions_secrets() -> None:
    hook = trigger(action={"type": "webhook", "url": "https://user:pw@hooks.example/h?token=abc",
                           "secret": "s3cret", "headers": {"Authorization": "Bearer xyz"}})
    action = run(hook, event("e1", 0))["samples"][0]["action"]
    assert "s3cret" not in str(action) and "xyz" not in str(action) and "pw@" not in action["url"]
    assert "abc" not in action["url"] and action["headerNames"] == ["Authorization"]


def test_a_run_stopped_early_leaves_what_it_did_not_reach_pending() -> None:
    backtest = Backtest(trigger(delay={"minutes": 30}), to_millis(START), to_millis(END))
    backtest.handle(0, event("e1", 0))
    backtest.handle(0, event("e2", 40))  # the partition's time passes e1's due time, not e2's
    backtest.finish(complete=False)
    report = backtest.report(2, truncated=True, seconds=0.1)
    assert (report["wouldFire"], report["pending"], report["truncated"]) == (1, 1, True)
