"""The contact gate over in-memory doubles: caps spent by priority within one event, Critical
firings never held, quiet hours deferring on durable timers (or dropping), trigger limits,
suppressions on `triggers.suppressed` with no action and no cooldown, and journeys never
re-entered with skip_if_ever_enrolled."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from faust.types import TP

from app.actions.enroll_journey import EnrollJourney
from app.actions.journey_events import JourneyEvents
from app.actions.performer import ActionServices
from app.domain.engine import firing_id
from app.domain.models import ActionCommand
from app.domain.timers import to_millis
from app.settings import Settings
from app.state.enrollments import EnrollmentStore
from app.state.tables import cooldown_key
from tests.adapters.engine_parts import EngineParts
from tests.adapters.fakes import DictTable, record

CUSTOMER, OTHER = "c-1", "c-2"
STREAMING = "events.streaming"
ENROLL = {"type": "enroll_journey", "journeyId": "welcome"}
# At the FakeClock's 09:00 UTC it is 01:00 in Los Angeles: night.
LOS_ANGELES_MORNING = datetime(2026, 1, 1, 16, tzinfo=UTC)  # 08:00 PST


class Gate:
    """EngineParts with events sent as records of the customer's partition, one offset each."""

    def __init__(self) -> None:
        self.parts = EngineParts()
        self.offsets: Counter[int] = Counter()
        self.ids = 0

    def policy(self, policy_id: str, **definition: Any) -> None:
        self.parts.catalogs.policies.apply(policy_id, json.dumps({"id": policy_id, **definition}).encode())
        assert policy_id in self.parts.catalogs.policies.items, self.parts.catalogs.policies.rejected

    def define(self, trigger_id: str, priority: int = 50, **overrides: Any) -> None:
        self.parts.define(**{"id": trigger_id, "source": "streaming", "eventType": "purchase", "priority": priority,
                             "action": ENROLL, **overrides})

    async def send(self, customer: str = CUSTOMER, at: datetime | None = None, event_id: str | None = None,
                   event_type: str = "purchase", **fields: Any) -> Any:
        """An event of `customer` at `at` (the clock's time unless given); ids e1, e2, ..."""
        self.ids += 1
        value = {"type": event_type, "customerId": customer, "id": event_id or f"e{self.ids}",
                 "timestamp": (at or self.parts.clock()).isoformat(), "amount": 500, **fields}
        partition = self.parts.partition_of(customer)
        sent = record(STREAMING, customer, value, partition, self.offsets[partition])
        self.offsets[partition] += 1
        await self.replay(sent)
        return sent

    async def replay(self, sent: Any) -> None:
        await self.parts.intake.on_source_batch(TP(sent.topic, sent.partition), [sent])

    def row(self, customer: str, **values: Any) -> None:
        self.parts.rows[f"customers|{customer}"] = {"customerId": customer, **values}

    async def clock_pass(self, customer: str = CUSTOMER) -> None:
        """The clock's pass over the customer's partition, every source of it caught up."""
        partition = self.parts.partition_of(customer)
        for topic in self.parts.event_time.source_topics:
            self.parts.caught_up.add(TP(topic, partition))
        await self.parts.timers.fire_due_now(partition, to_millis(self.parts.clock()))

    def actions(self) -> list[str]:
        """The trigger ids of the commands on actions.enroll_journey, in order."""
        return [c["triggerId"] for c in self.parts.sent("actions.enroll_journey")]

    def firings(self) -> list[str]:
        return [f["triggerId"] for f in self.parts.sent("triggers.firings")]

    def suppressed(self) -> list[tuple[str, str, str | None]]:
        return [(s["triggerId"], s["reason"], s["policyId"]) for s in self.parts.sent("triggers.suppressed")]

    def pending(self) -> list[tuple[str, str, str | None]]:
        return [(p["triggerId"], p["status"], p.get("reason")) for p in self.parts.sent("triggers.pending")]

    def no_failures(self) -> None:
        assert self.parts.sent("events.deadletter") == [] and self.parts.sent("actions.deadletter") == []
        assert self.parts.publisher.counters["record_failures"] == 0


@pytest.fixture
def gate() -> Gate:
    return Gate()


CAP_3 = {"limits": [{"max": 3, "window": {"days": 1}}]}
FIVE = [("p80", 80), ("p70", 70), ("p60", 60), ("p50", 50), ("p40", 40)]


def night_policy(during: str = "defer", **fields: Any) -> dict[str, Any]:
    """Quiet 21:00 to 08:00 in the customer's zone, Los Angeles by default."""
    return {"quietHours": {"from": "21:00", "to": "08:00", "timezone": "customer.timezone",
                           "defaultTimezone": "America/Los_Angeles", "during": during}, **fields}


# -- frequency caps -----------------------------------------------------------------------------

async def test_five_triggers_on_one_event_with_a_cap_of_3_fire_the_3_highest(gate: Gate) -> None:
    gate.policy("cap3", **CAP_3)
    for trigger_id, priority in reversed(FIVE):  # defined in any order
        gate.define(trigger_id, priority, cooldownMinutes=60)

    await gate.send()

    assert gate.actions() == gate.firings() == ["p80", "p70", "p60"]
    assert gate.suppressed() == [("p50", "frequency_cap", "cap3"), ("p40", "frequency_cap", "cap3")]
    [first, _] = gate.parts.sent("triggers.suppressed")
    assert first == {"firingId": firing_id("p50", "e1"), "triggerId": "p50", "customerId": CUSTOMER,
                     "eventId": "e1", "reason": "frequency_cap", "policyId": "cap3",
                     "at": gate.parts.clock().isoformat()}
    assert gate.parts.producer.keys("triggers.suppressed") == [CUSTOMER, CUSTOMER]
    assert gate.parts.producer.topics() == ["triggers.suppressed"] * 2 + [
        "actions.enroll_journey", "triggers.firings"] * 3
    assert sorted(gate.parts.cooldowns) == sorted(cooldown_key(t, CUSTOMER) for t in ("p80", "p70", "p60"))
    assert gate.parts.gate.counters == Counter({"suppressed_frequency_cap": 2})
    assert len(gate.parts.contacts[CUSTOMER]["p"]["cap3"]) == 3
    gate.no_failures()


async def test_a_critical_trigger_fires_regardless_of_the_cap(gate: Gate) -> None:
    gate.policy("cap3", **CAP_3)
    for trigger_id, priority in [*FIVE, ("compliance", 95)]:
        gate.define(trigger_id, priority)

    await gate.send()
    await gate.send(at=gate.parts.clock() + timedelta(minutes=1))  # the cap is full now

    assert gate.actions() == ["compliance", "p80", "p70", "p60", "compliance"]
    assert [reason for _, reason, _ in gate.suppressed()] == ["frequency_cap"] * 7
    assert "compliance" not in {trigger_id for trigger_id, _, _ in gate.suppressed()}


async def test_a_second_event_later_in_the_window_is_fully_capped(gate: Gate) -> None:
    gate.policy("cap3", **CAP_3)
    for trigger_id, priority in FIVE:
        gate.define(trigger_id, priority)
    await gate.send()
    gate.parts.clock.advance(timedelta(hours=23, minutes=59))

    await gate.send()

    assert gate.actions() == ["p80", "p70", "p60"]
    assert [(s["triggerId"], s["eventId"]) for s in gate.parts.sent("triggers.suppressed")][2:] == [
        (trigger_id, "e2") for trigger_id, _ in FIVE]
    gate.parts.clock.advance(timedelta(minutes=1))  # the first event's firings leave the window

    await gate.send()

    assert gate.actions()[3:] == ["p80", "p70", "p60"]


async def test_the_cap_is_counted_per_customer(gate: Gate) -> None:
    gate.policy("cap3", **CAP_3)
    for trigger_id, priority in FIVE:
        gate.define(trigger_id, priority)
    await gate.send(CUSTOMER)
    await gate.send(OTHER)
    assert gate.actions() == ["p80", "p70", "p60"] * 2
    assert [c["customerId"] for c in gate.parts.sent("actions.enroll_journey")] == [CUSTOMER] * 3 + [OTHER] * 3


async def test_a_replayed_record_performs_the_same_firings_and_counts_nothing_twice(gate: Gate) -> None:
    gate.policy("cap3", **CAP_3)
    for trigger_id, priority in FIVE:
        gate.define(trigger_id, priority)
    sent = await gate.send()
    counted = json.loads(json.dumps(gate.parts.contacts[CUSTOMER]))

    await gate.replay(sent)  # read again after a crash

    commands = gate.parts.sent("actions.enroll_journey")
    assert [c["firingId"] for c in commands[3:]] == [c["firingId"] for c in commands[:3]]
    assert gate.parts.contacts[CUSTOMER] == counted
    await gate.send()  # a new event: still capped by the first one's three
    assert len(commands) == len(gate.parts.sent("actions.enroll_journey")) == 6


async def test_a_policy_for_other_triggers_does_not_cap_these(gate: Gate) -> None:
    gate.policy("promos", limits=[{"max": 1, "window": {"days": 1}}], appliesTo={"triggerIds": ["p80", "p70"]})
    for trigger_id, priority in FIVE:
        gate.define(trigger_id, priority)
    await gate.send()
    assert gate.actions() == ["p80", "p60", "p50", "p40"]
    assert gate.suppressed() == [("p70", "frequency_cap", "promos")]


async def test_deleting_or_disabling_the_policy_lifts_the_cap(gate: Gate) -> None:
    gate.policy("cap3", **CAP_3)
    for trigger_id, priority in FIVE:
        gate.define(trigger_id, priority)
    gate.policy("cap3", enabled=False, **CAP_3)
    await gate.send()
    gate.parts.catalogs.policies.apply("cap3", None)
    await gate.send()
    assert len(gate.actions()) == 10 and gate.suppressed() == []


# -- quiet hours ----------------------------------------------------------------------------------

async def test_quiet_hours_defer_to_the_window_end_in_the_customers_zone_then_fire(gate: Gate) -> None:
    gate.policy("night", **night_policy())
    gate.define("welcome")

    await gate.send()

    assert gate.actions() == [] and gate.firings() == [] and gate.suppressed() == []
    [scheduled] = gate.parts.sent("triggers.pending")
    assert scheduled["status"] == "scheduled" and scheduled["reason"].startswith("quiet_hours")
    assert "night" in scheduled["reason"]
    assert (scheduled["firingId"], scheduled["eventId"], scheduled["customerId"]) == (
        firing_id("welcome", "e1"), "e1", CUSTOMER)
    assert scheduled["dueAt"] == "2026-01-01T16:00:00.000+00:00"
    assert gate.parts.producer.keys("triggers.pending") == [CUSTOMER]
    assert gate.parts.cooldowns == {}

    gate.parts.clock.now = LOS_ANGELES_MORNING - timedelta(seconds=1)
    await gate.clock_pass()
    assert gate.actions() == []

    gate.parts.clock.now = LOS_ANGELES_MORNING
    await gate.clock_pass()

    assert gate.actions() == gate.firings() == ["welcome"]
    [command] = gate.parts.sent("actions.enroll_journey")
    assert command["firingId"] == firing_id("welcome", "e1") and command["eventId"] == "e1"
    assert gate.pending()[1:] == [("welcome", "fired", None)]
    assert gate.parts.timers_table[CUSTOMER]["pending"] == []
    gate.no_failures()


async def test_quiet_hours_follow_the_zone_in_the_customers_row(gate: Gate) -> None:
    gate.policy("night", **night_policy())
    gate.define("welcome")
    gate.row(CUSTOMER, timezone="Asia/Tokyo")  # 18:00 there: not quiet
    gate.row(OTHER, timezone="Europe/Nowhere")  # invalid: the default zone, Los Angeles
    await gate.send(CUSTOMER)
    await gate.send(OTHER)
    assert [c["customerId"] for c in gate.parts.sent("actions.enroll_journey")] == [CUSTOMER]
    assert [p["customerId"] for p in gate.parts.sent("triggers.pending")] == [OTHER]


async def test_limits_are_checked_again_when_quiet_hours_end(gate: Gate) -> None:
    gate.policy("night", **night_policy(limits=[{"max": 1, "window": {"days": 1}}]))
    gate.define("welcome")
    await gate.send()  # deferred at night
    gate.parts.clock.now = LOS_ANGELES_MORNING - timedelta(minutes=5)
    await gate.send()  # 07:55: still night
    gate.parts.clock.now = LOS_ANGELES_MORNING
    await gate.send()  # 08:00: not quiet, performed and counted

    await gate.clock_pass()  # both deferred firings are due: the cap is full

    assert gate.actions() == ["welcome"] and gate.parts.sent("actions.enroll_journey")[0]["eventId"] == "e3"
    assert sorted((s["eventId"], s["reason"], s["policyId"]) for s in gate.parts.sent("triggers.suppressed")) == [
        ("e1", "frequency_cap", "night"), ("e2", "frequency_cap", "night")]
    assert gate.parts.timers_table[CUSTOMER]["pending"] == []


async def test_a_critical_trigger_is_not_held_by_quiet_hours(gate: Gate) -> None:
    gate.policy("night", **night_policy())
    gate.define("compliance", 90)
    await gate.send()
    assert gate.actions() == ["compliance"] and gate.parts.sent("triggers.pending") == []


async def test_quiet_hours_with_drop_suppress_the_firing(gate: Gate) -> None:
    gate.policy("night", **night_policy("drop"))
    gate.define("welcome", cooldownMinutes=60)

    await gate.send()

    assert gate.actions() == [] and gate.parts.sent("triggers.pending") == []
    assert gate.suppressed() == [("welcome", "quiet_hours", "night")]
    assert gate.parts.cooldowns == {} and gate.parts.timers_table == {}
    gate.parts.clock.now = LOS_ANGELES_MORNING
    await gate.send()  # the morning: performed, the cooldown not started by the dropped one
    assert gate.actions() == ["welcome"]


async def test_after_quiet_hours_the_allowance_still_goes_to_the_higher_priority(gate: Gate) -> None:
    # Both held by quiet hours: at the window end only one may be performed. Decided one by one
    # in (dueMs, firingId) order, the lower priority would spend the allowance.
    assert firing_id("promo-low", "e1") < firing_id("promo-high", "e1")  # the ids sort against priority
    gate.policy("night", **night_policy(limits=[{"max": 1, "window": {"days": 1}}]))
    gate.define("promo-low", 10)
    gate.define("promo-high", 80)
    await gate.send()
    assert [trigger_id for trigger_id, status, _ in gate.pending()] == ["promo-high", "promo-low"]
    gate.parts.clock.now = LOS_ANGELES_MORNING

    await gate.clock_pass()

    assert gate.actions() == ["promo-high"]
    assert gate.suppressed() == [("promo-low", "frequency_cap", "night")]


async def test_a_deferred_firing_capped_at_the_window_end_says_why_on_triggers_pending(gate: Gate) -> None:
    # The gate empties the firings it stops: "conditions no longer hold" would be the wrong reason.
    gate.policy("night", **night_policy(limits=[{"max": 1, "window": {"days": 1}}]))
    gate.define("welcome")
    await gate.send()
    gate.parts.clock.now = LOS_ANGELES_MORNING
    await gate.send()  # performed at 08:00: the cap is full
    await gate.clock_pass()
    assert gate.suppressed() == [("welcome", "frequency_cap", "night")]
    [(_, status, reason)] = gate.pending()[1:]
    assert status == "dropped" and reason is not None and "frequency_cap" in reason


async def test_a_delayed_firing_due_in_quiet_hours_is_performed_when_they_end(gate: Gate) -> None:
    # Held again under the firingId it is still pending with: neither skipped as already pending
    # nor removed as decided, or the firing is lost.
    gate.policy("night", **night_policy())
    gate.define("reminder", delay={"minutes": 30})
    await gate.send()  # 01:00 in Los Angeles: due at 01:30, still night
    gate.parts.clock.advance(timedelta(minutes=30))
    await gate.clock_pass()
    assert gate.actions() == []
    [_, held] = gate.parts.sent("triggers.pending")
    assert (held["status"], held["dueAt"]) == ("scheduled", "2026-01-01T16:00:00.000+00:00")
    assert held["reason"].startswith("quiet_hours")

    gate.parts.clock.now = LOS_ANGELES_MORNING
    await gate.clock_pass()

    assert gate.actions() == ["reminder"]
    assert [status for _, status, _ in gate.pending()][-1] == "fired"


async def test_a_firing_held_again_by_a_second_policys_quiet_hours_fires_when_both_have_ended(gate: Gate) -> None:
    gate.policy("night", **night_policy())  # until 08:00 in Los Angeles (16:00 UTC)
    gate.policy("breakfast", quietHours={"from": "07:30", "to": "09:00", "defaultTimezone": "America/Los_Angeles"})
    gate.define("welcome")
    await gate.send()
    gate.parts.clock.now = LOS_ANGELES_MORNING

    await gate.clock_pass()

    assert gate.actions() == []
    assert [(p["status"], p["dueAt"]) for p in gate.parts.sent("triggers.pending")][-1] == (
        "scheduled", "2026-01-01T17:00:00.000+00:00")
    gate.parts.clock.now = LOS_ANGELES_MORNING + timedelta(hours=1)
    await gate.clock_pass()
    assert gate.actions() == ["welcome"] and gate.pending()[-1] == ("welcome", "fired", None)


async def test_a_record_read_again_after_its_deferred_firing_was_performed_counts_it_once(gate: Gate) -> None:
    gate.policy("night", **night_policy(limits=[{"max": 2, "window": {"days": 1}}]))
    gate.define("welcome")
    sent = await gate.send()
    gate.parts.clock.now = LOS_ANGELES_MORNING
    await gate.clock_pass()

    await gate.replay(sent)  # read again after a crash: held again, due at once
    await gate.clock_pass()

    commands = gate.parts.sent("actions.enroll_journey")
    assert {c["firingId"] for c in commands} == {firing_id("welcome", "e1")}  # the sink skips the repeat
    assert len(gate.parts.contacts[CUSTOMER]["p"]["night"]) == 1
    await gate.send()  # the allowance left is one, not zero
    assert gate.parts.sent("actions.enroll_journey")[-1]["eventId"] == "e2"


# -- trigger limits -------------------------------------------------------------------------------

async def test_a_trigger_limit_of_one_suppresses_the_second_firing(gate: Gate) -> None:
    gate.define("welcome", limit={"max": 1}, cooldownMinutes=5)
    gate.define("unlimited")

    await gate.send()
    gate.parts.clock.advance(timedelta(days=400))
    await gate.send()

    assert gate.actions() == ["unlimited", "welcome", "unlimited"]  # equal priority: by id
    assert gate.suppressed() == [("welcome", "trigger_limit", None)]
    [suppressed] = gate.parts.sent("triggers.suppressed")
    assert suppressed["eventId"] == "e2" and suppressed["firingId"] == firing_id("welcome", "e2")
    assert gate.parts.cooldowns[cooldown_key("welcome", CUSTOMER)]["eventId"] == "e1"  # not restarted by e2


async def test_a_trigger_limit_per_window_allows_again_once_the_window_has_passed(gate: Gate) -> None:
    gate.define("welcome", limit={"max": 2, "window": {"days": 30}})
    for _ in range(3):
        await gate.send()
        gate.parts.clock.advance(timedelta(days=1))
    gate.parts.clock.advance(timedelta(days=27))  # 30 days after the first
    await gate.send()
    assert [c["eventId"] for c in gate.parts.sent("actions.enroll_journey")] == ["e1", "e2", "e4"]
    assert [s["eventId"] for s in gate.parts.sent("triggers.suppressed")] == ["e3"]


async def test_a_trigger_limit_is_per_customer_and_applies_to_critical_triggers(gate: Gate) -> None:
    gate.define("notice", 100, limit={"max": 1})
    await gate.send(CUSTOMER)
    await gate.send(OTHER)
    await gate.send(CUSTOMER)
    assert [c["customerId"] for c in gate.parts.sent("actions.enroll_journey")] == [CUSTOMER, OTHER]
    assert gate.suppressed() == [("notice", "trigger_limit", None)]


async def test_without_policies_or_limits_the_gate_stores_nothing(gate: Gate) -> None:
    gate.define("welcome")
    await gate.send()
    assert not gate.parts.gate.active and gate.parts.contacts == {} and gate.actions() == ["welcome"]


# -- skip_if_ever_enrolled ---------------------------------------------------------------------------

class Journeys:
    """The enroll_journey performer and the journey events handler over the parts' catalogs."""

    def __init__(self, parts: EngineParts) -> None:
        self.parts = parts
        self.enrollments = EnrollmentStore(DictTable(), DictTable())  # type: ignore[arg-type]
        self.counters: Counter[str] = Counter()
        services = ActionServices(Settings(), parts.topics, parts.catalogs, parts.publisher, parts.row_store,
                                  self.enrollments, parts.clock)
        self.performer = EnrollJourney(services)
        self.events = JourneyEvents(self.enrollments, parts.publisher, parts.partitions, self.counters, parts.clock)
        parts.catalogs.journeys.apply("welcome", json.dumps({"id": "welcome"}).encode())

    async def perform_new(self) -> None:
        """Perform the enroll_journey commands not yet performed."""
        done = {e["firingId"] for e in self.parts.sent("journeys.enrollments")}
        for value in self.parts.sent("actions.enroll_journey"):
            if value["firingId"] not in done:
                await self.performer.perform(ActionCommand.model_validate(value))

    async def complete(self, customer: str) -> None:
        ended = {"customerId": customer, "journeyId": "welcome", "status": "completed"}
        await self.events.on_record(record("journeys.events", customer, ended,
                                           self.parts.partition_of(customer)))

    def statuses(self) -> list[str]:
        return [e["status"] for e in self.parts.sent("journeys.enrollments")]


@pytest.mark.parametrize("deduplication, second", [("skip_if_ever_enrolled", "skipped"),
                                                   ("skip_if_active", "enrolled")])
async def test_skip_if_ever_enrolled_never_enrolls_again_after_the_journey_ended(
        gate: Gate, deduplication: str, second: str) -> None:
    journeys = Journeys(gate.parts)
    gate.define("welcome", action={**ENROLL, "deduplication": deduplication})

    await gate.send()
    await journeys.perform_new()
    assert journeys.statuses() == ["enrolled"] and journeys.enrollments.ever_enrolled(CUSTOMER) == {"welcome"}
    await journeys.complete(CUSTOMER)
    assert journeys.counters["journeys.ended"] == 1 and journeys.enrollments.get(CUSTOMER) == []
    gate.parts.clock.advance(timedelta(days=90))
    await gate.send()
    await journeys.perform_new()

    assert journeys.statuses() == ["enrolled", second]
    assert len(journeys.enrollments.get(CUSTOMER)) == (0 if second == "skipped" else 1)


async def test_skip_if_ever_enrolled_is_per_customer(gate: Gate) -> None:
    journeys = Journeys(gate.parts)
    gate.define("welcome", action={**ENROLL, "deduplication": "skip_if_ever_enrolled"})
    await gate.send(CUSTOMER)
    await journeys.perform_new()
    await journeys.complete(CUSTOMER)
    await gate.send(OTHER)
    await journeys.perform_new()
    assert journeys.statuses() == ["enrolled", "enrolled"]
    assert [e["customerId"] for e in gate.parts.sent("journeys.enrollments")] == [CUSTOMER, OTHER]
