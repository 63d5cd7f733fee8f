"""The timed path over in-memory doubles: delayed firings scheduled, cancelled and decided at
their due time (in the partition's event time while a backlog is read, on the clock's pass
once caught up), and windowed aggregates counted once per record and read as `agg.<name>`."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from faust.types import TP

from app.domain.engine import firing_id
from app.domain.timers import to_millis
from tests.adapters.engine_parts import EngineParts
from tests.adapters.fakes import Record, record

A, B = "c-1", "c-3"  # two customers of one partition
ELSEWHERE = "c-4"  # a customer of another partition
T0 = datetime(2026, 1, 1, 8, tzinfo=UTC)  # events start an hour before the clock (09:00): a backlog
STREAMING, OUTCOMES = "events.streaming", "events.outcomes"
ENROLL = {"type": "enroll_journey", "journeyId": "welcome"}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def abandoned(trigger_id: str = "abandoned", seconds: int = 60, **overrides: Any) -> dict[str, Any]:
    """A cart left `seconds` without a purchase of that cart."""
    return {"id": trigger_id, "source": "streaming", "eventType": "cart_add", "delay": {"seconds": seconds},
            "cancelOn": [{"source": "streaming", "eventType": "purchase", "sameFields": ["cartId"]}],
            "action": ENROLL, **overrides}


class Timed:
    """EngineParts fed records one at a time, offsets counted per topic."""

    def __init__(self) -> None:
        self.parts = EngineParts()
        self.partition = self.parts.partition_of(A)
        assert self.parts.partition_of(B) == self.partition != self.parts.partition_of(ELSEWHERE)
        self.offsets: Counter[str] = Counter()
        self.ids = 0
        self.backlog(STREAMING)

    def define(self, **definition: Any) -> None:
        self.parts.define(**definition)

    def delete(self, trigger_id: str) -> None:
        self.parts.catalogs.triggers.apply(trigger_id, None)

    def backlog(self, *topics: str) -> None:
        """Only `topics` (of every partition) have records left to read; the rest are caught up."""
        self.parts.caught_up.clear()
        self.parts.caught_up.update(TP(topic, partition) for topic in self.parts.event_time.source_topics
                                    for partition in range(self.parts.partitions) if topic not in topics)

    def live(self) -> None:
        self.backlog()

    async def send(self, event_type: str, seconds: float, customer: str = A, topic: str = STREAMING,
                   event_id: str | None = None, **fields: Any) -> Record:
        """An event of `customer` at T0 + `seconds`, read as the next record of `topic`; its id
        e1, e2, ... in the order sent, unless given."""
        self.ids += 1
        value = {"type": event_type, "customerId": customer, "id": event_id or f"e{self.ids}",
                 "timestamp": at(seconds).isoformat(), **fields}
        sent = record(topic, customer, value, self.parts.partition_of(customer), self.offsets[topic])
        self.offsets[topic] += 1
        await self.replay(sent)
        return sent

    async def replay(self, sent: Record) -> None:
        await self.parts.intake.on_source_batch(TP(sent.topic, sent.partition), [sent])

    async def clock_pass(self, partition: int | None = None) -> None:
        partition = self.partition if partition is None else partition
        await self.parts.timers.fire_due_now(partition, to_millis(self.parts.clock()))

    def pending(self) -> list[tuple[str, str, str | None]]:
        """(status, eventId, reason) of each `triggers.pending` record, in order."""
        return [(p["status"], p["eventId"], p.get("reason")) for p in self.parts.sent("triggers.pending")]

    def fired(self) -> list[str]:
        """The eventIds of the firings, in order."""
        return [f["eventId"] for f in self.parts.sent("triggers.firings")]

    def firings(self) -> list[dict[str, Any]]:
        return self.parts.sent("triggers.firings")

    def stored_pending(self, customer: str = A) -> list[str]:
        """The eventIds of the customer's pending firings in the timers table."""
        return [entry["eventId"] for entry in self.parts.timers_table.get(customer, {}).get("pending", [])]

    def no_failures(self) -> None:
        assert self.parts.sent("events.deadletter") == []
        assert self.parts.publisher.counters["record_failures"] == 0


@pytest.fixture
def timed() -> Timed:
    return Timed()


# -- scheduling ----------------------------------------------------------------------------------

async def test_a_delayed_match_is_scheduled_on_triggers_pending_and_nothing_acts_yet(timed: Timed) -> None:
    timed.define(**abandoned())
    await timed.send("cart_add", 0, cartId="k1")
    [scheduled] = timed.parts.sent("triggers.pending")
    assert scheduled == {"firingId": firing_id("abandoned", "e1"), "triggerId": "abandoned", "customerId": A,
                         "eventId": "e1", "dueAt": "2026-01-01T08:01:00.000+00:00", "status": "scheduled",
                         "at": timed.parts.clock().isoformat()}
    assert timed.parts.producer.topics() == ["triggers.pending"]
    assert timed.parts.producer.keys("triggers.pending") == [A]
    assert timed.stored_pending() == ["e1"] and timed.parts.timers.store.next_due(timed.partition) == to_millis(at(60))


async def test_a_match_whose_conditions_fail_schedules_nothing(timed: Timed) -> None:
    timed.define(**abandoned(conditions=["event.value > 10"]))
    await timed.send("cart_add", 0, cartId="k1", value=5)
    await timed.send("cart_add", 1, cartId="k1", zzz=1)  # a condition error: also nothing
    assert timed.parts.producer.sent == [] and timed.stored_pending() == []
    timed.no_failures()


# -- due in event time, while a backlog is read ---------------------------------------------------

async def test_in_a_backlog_a_later_event_past_the_due_time_fires_it_before_being_handled(timed: Timed) -> None:
    timed.define(**abandoned())
    timed.define(id="viewed", source="streaming", eventType="page_view", action=ENROLL)
    await timed.send("cart_add", 0, cartId="k1")
    await timed.send("page_view", 30, customer=B)
    await timed.send("page_view", 59.999, customer=B)
    assert timed.fired() == ["e2", "e3"]  # B's own firings; A's is not due yet
    await timed.send("page_view", 60, customer=B)  # due at or before the partition's time: fires first
    assert timed.fired() == ["e2", "e3", "e1", "e4"]
    firing = timed.firings()[2]
    assert (firing["firingId"], firing["triggerId"], firing["customerId"]) == (
        firing_id("abandoned", "e1"), "abandoned", A)
    assert firing["event"]["cartId"] == "k1" and "aggregates" not in firing
    assert timed.parts.sent("actions.enroll_journey")[2] == firing  # the command, then its record
    assert [s for s, *_ in timed.pending()] == ["scheduled", "fired"]
    assert timed.stored_pending() == []


async def test_an_event_of_another_partition_fires_nothing_here(timed: Timed) -> None:
    timed.define(**abandoned())
    await timed.send("cart_add", 0, cartId="k1")
    await timed.send("page_view", 600, customer=ELSEWHERE)
    assert timed.fired() == [] and timed.stored_pending() == ["e1"]


async def test_a_source_with_a_backlog_not_read_yet_holds_the_partitions_time_back(timed: Timed) -> None:
    timed.define(**abandoned())
    timed.backlog(STREAMING, OUTCOMES)
    await timed.send("cart_add", 0, cartId="k1")
    await timed.send("page_view", 600, customer=B)
    await timed.clock_pass()
    assert timed.fired() == []  # events.outcomes may still hold an earlier purchase of the cart
    await timed.send("order_paid", 30, customer=B, topic=OUTCOMES)
    assert timed.fired() == []  # the partition's time is 30 s: outcomes' newest
    await timed.send("order_paid", 60, customer=B, topic=OUTCOMES)
    assert timed.fired() == ["e1"]


# -- cancelOn ----------------------------------------------------------------------------------

async def test_a_cancel_before_the_due_time_cancels_even_when_read_after_later_events_of_another_customer(
        timed: Timed) -> None:
    timed.define(**abandoned())
    await timed.send("cart_add", 0, cartId="k1")
    for seconds in (10, 40, 59):
        await timed.send("page_view", seconds, customer=B)
    await timed.send("purchase", 59.999, cartId="k1")
    await timed.send("page_view", 600, customer=B)
    await timed.clock_pass()
    assert timed.fired() == []
    assert timed.pending() == [("scheduled", "e1", None), ("cancelled", "e1", "purchase event e5 before the due time")]
    assert timed.stored_pending() == []


@pytest.mark.parametrize("seconds, cancelled", [(30, True), (59.999, True), (60, False), (61, False)])
async def test_a_cancel_on_a_topic_still_behind_counts_by_its_own_timestamp(
        timed: Timed, seconds: float, cancelled: bool) -> None:
    """Read after another customer's events far past the due time (on events.streaming): the
    partition's time waits for events.outcomes, so the cancel is decided by its timestamp."""
    timed.define(**abandoned(cancelOn=[{"source": "outcome", "eventType": "order_paid", "sameFields": ["cartId"]}]))
    timed.backlog(STREAMING, OUTCOMES)
    await timed.send("cart_add", 0, cartId="k1")
    await timed.send("page_view", 900, customer=B)
    await timed.send("order_paid", seconds, topic=OUTCOMES, cartId="k1")
    timed.live()
    await timed.clock_pass()
    assert timed.fired() == ([] if cancelled else ["e1"])
    assert [status for status, *_ in timed.pending()] == ["scheduled", "cancelled" if cancelled else "fired"]


async def test_a_cancel_at_or_after_the_due_time_cancels_nothing_even_while_the_firing_is_pending(
        timed: Timed) -> None:
    timed.define(**abandoned())
    timed.backlog(STREAMING, OUTCOMES)  # outcomes unread: nothing fires while these are read
    await timed.send("cart_add", 0, cartId="k1")
    await timed.send("purchase", 60, cartId="k1")
    await timed.send("purchase", 3000, cartId="k1")
    assert timed.stored_pending() == ["e1"] and timed.pending() == [("scheduled", "e1", None)]
    timed.live()
    await timed.clock_pass()
    assert timed.fired() == ["e1"]


async def test_same_fields_must_be_present_in_both_events_and_equal(timed: Timed) -> None:
    timed.define(**abandoned())
    await timed.send("cart_add", 0, cartId="k1")  # e1
    await timed.send("cart_add", 1, cartId="k2")  # e2
    await timed.send("cart_add", 2)  # e3: no cartId
    await timed.send("cart_add", 3, cartId=None)  # e4: cartId null
    await timed.send("purchase", 10, cartId="k2", customer=B)  # another customer's purchase of "k2"
    await timed.send("purchase", 11)  # no cartId: cancels neither e3 (absent in both) nor the rest
    await timed.send("purchase", 12, cartId="K1")  # not equal
    await timed.send("purchase", 13, cartId=None)  # null in both: present and equal
    await timed.send("purchase", 14, cartId="k1")
    assert [(s, e) for s, e, _ in timed.pending() if s == "cancelled"] == [("cancelled", "e4"), ("cancelled", "e1")]
    timed.live()
    await timed.clock_pass()
    assert sorted(timed.fired()) == ["e2", "e3"]


async def test_cancel_rules_filter_by_source_type_and_filters_and_a_wildcard_type_matches_any(
        timed: Timed) -> None:
    timed.define(**abandoned(cancelOn=[
        {"source": "streaming", "eventType": "purchase", "filters": {"channel": "web"}},
        {"source": "outcome", "eventType": "*", "sameFields": ["cartId"]}]))
    timed.backlog(STREAMING, OUTCOMES)
    await timed.send("cart_add", 0, cartId="k1")  # e1
    await timed.send("cart_add", 1, cartId="k2")  # e2
    await timed.send("purchase", 5, channel="app")  # filters do not pass
    await timed.send("purchase", 6, topic=OUTCOMES, channel="web", cartId="k3")  # outcome, another cart
    await timed.send("checkout", 7, cartId="k9")  # a streaming type no rule names
    assert timed.stored_pending() == ["e1", "e2"]
    await timed.send("anything", 8, topic=OUTCOMES, cartId="k2")  # "*": any outcome type
    assert timed.stored_pending() == ["e1"]
    await timed.send("purchase", 9, channel="web")  # no sameFields: any purchase on the web
    assert timed.stored_pending() == []


async def test_the_event_that_scheduled_a_firing_never_cancels_it(timed: Timed) -> None:
    # Each new cart_add of a cart cancels the reminder of the previous one.
    timed.define(**abandoned(cancelOn=[{"source": "streaming", "eventType": "cart_add", "sameFields": ["cartId"]}]))
    first = await timed.send("cart_add", 0, cartId="k1")
    assert timed.stored_pending() == ["e1"]
    await timed.replay(first)  # read again (a crash before its commit)
    await timed.send("cart_add", 0, event_id="e1", cartId="k1")  # sent twice by its producer: a new record
    assert timed.stored_pending() == ["e1"] and timed.pending() == [("scheduled", "e1", None)]
    await timed.send("cart_add", 5, cartId="k1")  # e3
    assert timed.stored_pending() == ["e3"]
    assert timed.pending() == [("scheduled", "e1", None), ("cancelled", "e1", "cart_add event e3 before the due time"),
                               ("scheduled", "e3", None)]


# -- the clock's pass, once caught up ---------------------------------------------------------

async def test_the_clock_pass_fires_only_when_every_source_of_the_partition_is_caught_up(timed: Timed) -> None:
    timed.define(**abandoned())
    timed.parts.clock.now = at(10)
    timed.live()
    await timed.send("cart_add", 0, cartId="k1")
    await timed.clock_pass()
    assert timed.fired() == []  # 10 s: not due
    timed.parts.clock.now = at(60)
    for behind in (STREAMING, "events.cdc", OUTCOMES, "events.schema", "triggers.internal.rerouted"):
        timed.backlog(behind)
        await timed.clock_pass()
        assert timed.fired() == [], behind
    timed.live()
    await timed.clock_pass(partition=(timed.partition + 1) % 4)
    assert timed.fired() == []  # another partition's pass
    await timed.clock_pass()
    assert timed.fired() == ["e1"]
    await timed.clock_pass()
    assert timed.fired() == ["e1"] and timed.stored_pending() == []


async def test_live_the_event_path_does_not_fire_ahead_of_the_clock(timed: Timed) -> None:
    """A timestamp in the future (a skewed producer) is no reason to fire: time is never ahead of the clock."""
    timed.define(**abandoned())
    timed.parts.clock.now = at(10)
    timed.live()
    await timed.send("cart_add", 0, cartId="k1")
    await timed.send("page_view", 3600, customer=B)
    await timed.clock_pass()
    assert timed.fired() == []
    timed.parts.clock.now = at(60)
    await timed.send("page_view", 3601, customer=B)
    assert timed.fired() == ["e1"]


# -- replays -----------------------------------------------------------------------------------

async def test_a_replayed_record_schedules_nothing_twice(timed: Timed) -> None:
    timed.define(**abandoned())
    first = await timed.send("cart_add", 0, cartId="k1")
    await timed.replay(first)
    await timed.replay(first)
    assert timed.pending() == [("scheduled", "e1", None)] and timed.stored_pending() == ["e1"]
    await timed.send("page_view", 60, customer=B)
    assert timed.fired() == ["e1"]


async def test_a_replayed_record_whose_firing_was_cancelled_meanwhile_schedules_nothing_again(
        timed: Timed) -> None:
    """A crash after the cancel (read from events.outcomes, committed) but before events.streaming's
    offset was committed: the cart_add is read again. Its firing must stay cancelled."""
    timed.define(**abandoned(cancelOn=[{"source": "outcome", "eventType": "order_paid", "sameFields": ["cartId"]}]))
    timed.backlog(STREAMING, OUTCOMES)
    cart_add = await timed.send("cart_add", 0, cartId="k1")
    await timed.send("order_paid", 30, topic=OUTCOMES, cartId="k1")
    assert timed.stored_pending() == []
    await timed.replay(cart_add)
    timed.live()
    await timed.clock_pass()
    assert timed.fired() == []
    assert timed.stored_pending() == [] and [s for s, *_ in timed.pending()] == ["scheduled", "cancelled"]


async def test_a_replayed_record_whose_firing_fired_meanwhile_schedules_nothing_again(timed: Timed) -> None:
    timed.define(**abandoned())
    cart_add = await timed.send("cart_add", 0, cartId="k1")
    await timed.send("page_view", 60, customer=B)
    assert timed.fired() == ["e1"]
    await timed.replay(cart_add)
    timed.live()
    await timed.clock_pass()
    assert timed.fired() == ["e1"] and timed.stored_pending() == []
    assert [s for s, *_ in timed.pending()] == ["scheduled", "fired"]


async def test_a_replayed_record_counts_nothing_twice_in_aggregates(timed: Timed) -> None:
    timed.define(id="brute", source="streaming", eventType="login", conditions=["agg.fails >= 2"],
                 aggregates={"fails": {"fn": "count", "window": {"minutes": 10}, "eventType": "login_failed"}},
                 action=ENROLL)
    failed = await timed.send("login_failed", 0)
    await timed.replay(failed)
    await timed.replay(failed)
    login = await timed.send("login", 1)
    await timed.replay(login)  # its own read again changes nothing either
    assert timed.fired() == []
    await timed.send("login_failed", 2)
    await timed.send("login", 3)
    assert timed.fired() == ["e4"] and timed.firings()[0]["aggregates"] == {"fails": 2}


# -- decided again at the due time ----------------------------------------------------------------

@pytest.mark.parametrize("change, reason", [("delete", "trigger deleted"), ("disable", "trigger disabled")])
async def test_a_firing_of_a_trigger_deleted_or_disabled_meanwhile_is_dropped(
        timed: Timed, change: str, reason: str) -> None:
    timed.define(**abandoned())
    await timed.send("cart_add", 0, cartId="k1")
    if change == "delete":
        timed.delete("abandoned")
    else:
        timed.define(**abandoned(enabled=False))
    await timed.send("page_view", 60, customer=B)
    assert timed.fired() == [] and timed.parts.sent("actions.enroll_journey") == []
    assert timed.pending() == [("scheduled", "e1", None), ("dropped", "e1", reason)]
    assert timed.stored_pending() == []


async def test_conditions_are_evaluated_again_at_the_due_time_with_the_row_as_it_is_then(timed: Timed) -> None:
    timed.define(**abandoned(conditions=["customer.tier == 'gold'", "event.cartId != 'k0'"]))
    timed.parts.rows[f"customers|{A}"] = {"tier": "gold"}
    await timed.send("cart_add", 0, cartId="k1")
    await timed.send("cart_add", 1, cartId="k2")
    timed.parts.rows[f"customers|{A}"] = {"tier": "silver"}
    await timed.send("page_view", 60, customer=B)  # e1 due
    timed.parts.rows[f"customers|{A}"] = {"tier": "gold"}
    await timed.send("page_view", 61, customer=B)  # e2 due
    assert timed.fired() == ["e2"]
    assert timed.pending()[2:] == [("dropped", "e1", "conditions no longer hold"), ("fired", "e2", None)]


async def test_a_condition_error_at_the_due_time_drops_the_firing_with_the_error(timed: Timed) -> None:
    timed.define(**abandoned(conditions=["customer.spend / customer.orders > 10"]))
    timed.parts.rows[f"customers|{A}"] = {"spend": 500, "orders": 2}
    await timed.send("cart_add", 0, cartId="k1")
    timed.parts.rows[f"customers|{A}"] = {"spend": 500, "orders": 0}
    await timed.send("page_view", 60, customer=B)
    [(status, event_id, reason)] = timed.pending()[1:]
    assert (status, event_id) == ("dropped", "e1") and reason is not None and reason.startswith("condition error: ")
    assert timed.fired() == []
    timed.no_failures()


async def test_cooldown_is_checked_at_the_due_time_and_counted_from_it(timed: Timed) -> None:
    timed.define(**abandoned(cooldownMinutes=60))
    timed.parts.clock.now = at(7200)  # the clock far ahead: the cooldown counts in due times all the same
    await timed.send("cart_add", 0, cartId="k1")  # due 60
    await timed.send("cart_add", 10, cartId="k2")  # due 70: within the hour after 60
    await timed.send("cart_add", 3599, cartId="k3")  # due 3659: 59:59 after 60
    await timed.send("cart_add", 3600, cartId="k4")  # due 3660: an hour after 60
    await timed.send("page_view", 7200, customer=B)
    assert timed.fired() == ["e1", "e4"]
    assert [(s, e, r) for s, e, r in timed.pending() if s != "scheduled"] == [
        ("fired", "e1", None), ("dropped", "e2", "cooldown"), ("dropped", "e3", "cooldown"), ("fired", "e4", None)]
    assert timed.parts.cooldowns[f"abandoned|{A}"] == {"firedAt": at(3660).isoformat(), "eventId": "e4"}


async def test_the_101st_pending_firing_of_one_customer_is_dropped_counting_every_trigger(timed: Timed) -> None:
    timed.define(**abandoned("first", seconds=3600))
    timed.define(**abandoned("second", seconds=7200))
    for n in range(50):
        await timed.send("cart_add", n, cartId=f"k{n}")
    assert len(timed.stored_pending()) == 100
    await timed.send("cart_add", 50, cartId="k50")  # e51
    await timed.send("cart_add", 51, customer=B, cartId="k50")  # another customer: room of its own
    dropped = [(s, e, r) for s, e, r in timed.pending() if s == "dropped"]
    assert dropped == [("dropped", "e51", "more than 100 pending firings for this customer")] * 2
    assert len(timed.stored_pending()) == 100 and timed.stored_pending(B) == ["e52", "e52"]
    await timed.send("purchase", 60, cartId="k0")  # one cancelled for each trigger: room for two more
    await timed.send("cart_add", 61, cartId="k61")
    assert len(timed.stored_pending()) == 100 and timed.pending()[-2:] == [
        ("scheduled", "e54", None), ("scheduled", "e54", None)]


# -- aggregates --------------------------------------------------------------------------------

VIEWS_IN_A_MINUTE = {"fn": "count", "window": {"seconds": 60}, "eventType": "page_view"}


def brute_force(**overrides: Any) -> dict[str, Any]:
    """A login after three failed logins within ten minutes (both ends of the window counted)."""
    return {"id": "brute", "source": "streaming", "eventType": "login", "conditions": ["agg.fails >= 3"],
            "aggregates": {"fails": {"fn": "count", "window": {"minutes": 10}, "eventType": "login_failed"},
                           "spent": {"fn": "sum", "of": "event.amount", "window": {"days": 1},
                                     "source": "outcome", "eventType": "order"}},
            "action": ENROLL, **overrides}


async def test_aggregates_count_events_of_other_types_and_the_firing_carries_their_values(timed: Timed) -> None:
    timed.define(**brute_force())
    timed.backlog(STREAMING, OUTCOMES)
    await timed.send("order", 0, topic=OUTCOMES, amount=30)
    await timed.send("order", 1, topic=OUTCOMES, amount=12.5)
    for seconds in (0, 100, 200):
        await timed.send("login_failed", seconds)
    await timed.send("login_failed", 200, customer=B)  # another customer's
    await timed.send("login", 500)  # e7: fails 3 in [-100, 500]
    await timed.send("login", 601)  # e8: the failure at 0 is out of [1, 601]
    await timed.send("login", 600, customer=B)  # e9: B has one
    assert timed.fired() == ["e7"]
    [firing] = timed.firings()
    assert firing["aggregates"] == {"fails": 3, "spent": 42.5}
    assert timed.parts.sent("actions.enroll_journey")[0]["aggregates"] == {"fails": 3, "spent": 42.5}


async def test_the_window_includes_the_event_exactly_one_window_before(timed: Timed) -> None:
    timed.define(**brute_force())
    for seconds in (0, 300, 599):
        await timed.send("login_failed", seconds)
    await timed.send("login", 600)  # [0, 600]: all three
    await timed.send("login", 600.001)  # [0.001, 600.001]: two
    assert timed.fired() == ["e4"]


async def test_the_triggers_own_events_count_in_its_aggregates_including_the_current_one(timed: Timed) -> None:
    timed.define(id="third", source="streaming", eventType="login", conditions=["agg.logins == 3"],
                 aggregates={"logins": {"fn": "count", "window": {"hours": 1}}}, action=ENROLL)
    for seconds in (0, 1, 2, 3):
        await timed.send("login", seconds)
    assert timed.fired() == ["e3"] and timed.firings()[0]["aggregates"] == {"logins": 3}


async def test_a_delayed_trigger_reads_its_aggregates_over_the_window_ending_at_the_due_time(timed: Timed) -> None:
    timed.define(**abandoned(conditions=["agg.views >= 1"], aggregates={"views": VIEWS_IN_A_MINUTE}))
    await timed.send("page_view", 0)
    await timed.send("cart_add", 1, cartId="k1")  # e2, views 1 at 1 s: scheduled, due 61 s; [1, 61] at due
    await timed.send("page_view", 1)  # e3
    await timed.send("cart_add", 2, cartId="k2")  # e4, due 62 s
    await timed.send("page_view", 30)  # e5
    await timed.send("page_view", 61, customer=B)  # e2 due: 1 and 30
    await timed.send("page_view", 62)  # e4 due, [2, 62], before this view counts: 30 only
    await timed.send("page_view", 200, customer=B)
    assert timed.fired() == ["e2", "e4"]
    assert [f["aggregates"] for f in timed.firings()] == [{"views": 2}, {"views": 1}]


async def test_a_delayed_firing_whose_aggregate_left_its_window_is_dropped_at_the_due_time(timed: Timed) -> None:
    timed.define(**abandoned(conditions=["agg.views >= 1"], aggregates={"views": VIEWS_IN_A_MINUTE}))
    await timed.send("page_view", 0)
    await timed.send("cart_add", 1, cartId="k1")
    await timed.send("page_view", 61, customer=B)
    assert timed.fired() == []
    assert timed.pending()[1] == ("dropped", "e2", "conditions no longer hold")


async def test_an_aggregate_no_trigger_uses_is_dropped_at_the_customers_next_event_that_counts(timed: Timed) -> None:
    timed.define(**brute_force())
    timed.define(id="spender", source="outcome", eventType="order", conditions=["agg.total > 100"],
                 aggregates={"total": {"fn": "sum", "of": "event.amount", "window": {"days": 1}}}, action=ENROLL)
    await timed.send("login_failed", 0)
    await timed.send("order", 1, topic=OUTCOMES, amount=5)
    assert len(timed.parts.aggregates_table[A]["aggs"]) == 2  # fails, and the sum both define alike: one state
    [fails_id] = [a.id for a in timed.parts.catalogs.triggers.get("brute").aggregates if a.name == "fails"]  # type: ignore[union-attr]
    timed.delete("brute")
    await timed.send("login_failed", 2, customer=B)
    await timed.send("page_view", 2)  # counts in and reads no aggregate: the state is not looked at
    assert fails_id in timed.parts.aggregates_table[A]["aggs"]
    await timed.send("order", 3, topic=OUTCOMES, amount=5)  # A's next event that counts in one
    assert fails_id not in timed.parts.aggregates_table[A]["aggs"]
    assert len(timed.parts.aggregates_table[A]["aggs"]) == 1


async def test_events_lacking_of_are_counted_by_count_and_skipped_by_the_rest_without_failing(
        timed: Timed) -> None:
    timed.define(id="basket", source="streaming", eventType="checkout", conditions=["agg.n >= 1"],
                 aggregates={name: {"fn": fn, "of": "event.amount", "window": {"hours": 1}, "eventType": "purchase"}
                             for name, fn in [("total", "sum"), ("avg", "avg"), ("lo", "min"), ("hi", "max")]}
                 | {"n": {"fn": "count", "window": {"hours": 1}, "eventType": "purchase"},
                    "per_item": {"fn": "sum", "of": "event.amount / event.items", "window": {"hours": 1},
                                 "eventType": "purchase"}},
                 action=ENROLL)
    await timed.send("purchase", 0)  # no amount
    await timed.send("checkout", 1)
    assert timed.firings()[0]["aggregates"] == {"total": 0, "avg": None, "lo": None, "hi": None, "n": 1,
                                                "per_item": 0}
    purchases: list[dict[str, Any]] = [{"amount": None}, {"amount": "12"}, {"amount": True}, {"amount": [1]},
                                       {"amount": {"v": 1}}, {"amount": 10, "items": 0}, {"amount": 6, "items": 2}]
    for seconds, fields in enumerate(purchases, start=2):
        await timed.send("purchase", seconds, **fields)
    await timed.send("checkout", 10)
    assert timed.firings()[1]["aggregates"] == {"total": 16, "avg": 8, "lo": 6, "hi": 10, "n": 8, "per_item": 3}
    timed.no_failures()
