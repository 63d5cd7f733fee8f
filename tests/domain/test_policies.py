"""Contact policies and trigger limits without I/O: definitions accepted or rejected whole with
the field named, quiet hours in the customer's zone, and `admit` spending each customer's
allowance in the order given, never twice for a replayed firing."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from app.domain.definitions import compile_policy_definition
from app.domain.models import ActionCommand, TriggerLimit
from app.domain.policies import Admission, CompiledPolicy, Contacts, QuietHours, admit, quiet_until
from app.errors import InvalidDefinition
from app.registry.catalogs import PolicyCatalog

# The contract's example (CONTRACT.md Part 2, "Contact policies").
EXAMPLE: dict[str, Any] = {
    "id": "marketing",
    "appliesTo": {"actionTypes": ["webhook", "enroll_journey", "fire_recommend"], "maxPriority": 89},
    "limits": [{"max": 3, "window": {"days": 7}}, {"max": 1, "window": {"hours": 12}}],
    "quietHours": {"from": "21:00", "to": "08:00", "timezone": "customer.timezone",
                   "defaultTimezone": "Europe/Berlin", "during": "defer"}}

BERLIN, TOKYO, UTC_ZONE = ZoneInfo("Europe/Berlin"), ZoneInfo("Asia/Tokyo"), ZoneInfo("UTC")
SECOND, MINUTE, HOUR, DAY = 1_000, 60_000, 3_600_000, 86_400_000
T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


def example(**changes: Any) -> dict[str, Any]:
    """The example with top-level fields replaced (None removes one)."""
    value = copy.deepcopy(EXAMPLE)
    for name, changed in changes.items():
        if changed is None:
            value.pop(name, None)
        else:
            value[name] = changed
    return value


def with_quiet(**changes: Any) -> dict[str, Any]:
    return example(quietHours={**EXAMPLE["quietHours"], **changes})


def with_scope(**changes: Any) -> dict[str, Any]:
    return example(appliesTo={**EXAMPLE["appliesTo"], **changes})


def problems(value: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidDefinition) as info:
        compile_policy_definition(json.dumps(value).encode())
    assert info.value.trigger_id == value["id"]
    return info.value.errors


def policy(policy_id: str = "cap", **fields: Any) -> CompiledPolicy:
    return compile_policy_definition({"id": policy_id, **fields})


def cap(max_: int, window: dict[str, int] | None = None, policy_id: str = "cap", **fields: Any) -> CompiledPolicy:
    """A policy of one limit (per day unless said), applying to every action type."""
    return policy(policy_id, limits=[{"max": max_, "window": window or {"days": 1}}], **fields)


def quiet(start: str = "21:00", end: str = "08:00", zone: str = "UTC", **fields: Any) -> QuietHours:
    compiled = policy("quiet", quietHours={"from": start, "to": end, "defaultTimezone": zone, **fields})
    assert compiled.definition.quiet_hours is not None
    return compiled.definition.quiet_hours


def command(trigger_id: str, priority: int = 50, firing_id: str | None = None, action_type: str = "webhook",
            customer_id: str = "c-1") -> ActionCommand:
    return ActionCommand.model_validate({
        "firingId": firing_id or f"f-{trigger_id}", "triggerId": trigger_id, "priority": priority,
        "customerId": customer_id, "eventId": "e-1", "firedAt": T0.isoformat(),
        "action": {"type": action_type}, "event": {"type": "purchase"}})


def ids(commands: list[ActionCommand]) -> list[str]:
    return [c.trigger_id for c in commands]


def suppressed(result: Admission) -> list[tuple[str, str, str | None]]:
    return [(c.trigger_id, reason, policy_id) for c, reason, policy_id in result.suppressed]


def counted(contacts: Contacts | None, policy_id: str = "cap") -> list[str]:
    """The firing ids a policy has counted, oldest first."""
    return [entry[1] for entry in (contacts or {}).get("p", {}).get(policy_id, [])]


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# -- accepted ------------------------------------------------------------------------------------

def test_the_contracts_example_policy_compiles_with_every_field_kept() -> None:
    compiled = compile_policy_definition(json.dumps(EXAMPLE).encode())
    definition = compiled.definition
    assert compiled.id == "marketing" and definition.enabled
    assert definition.applies_to.action_types == ["webhook", "enroll_journey", "fire_recommend"]
    assert definition.applies_to.max_priority == 89 and definition.applies_to.trigger_ids is None
    assert [(limit.max, limit.window.millis) for limit in definition.limits] == [(3, 7 * DAY), (1, 12 * HOUR)]
    assert compiled.longest_window_ms == 7 * DAY
    quiet_hours = definition.quiet_hours
    assert quiet_hours is not None
    assert (quiet_hours.start, quiet_hours.end, quiet_hours.default_timezone, quiet_hours.during.value) == (
        "21:00", "08:00", "Europe/Berlin", "defer")
    assert compiled.timezone is not None and compiled.timezone.text == "customer.timezone"


def test_a_policy_applies_to_every_action_type_up_to_priority_89_by_default() -> None:
    compiled = cap(3)
    for action_type in ("webhook", "enroll_journey", "fire_recommend", "update_attribute"):
        assert compiled.applies(action_type, 89, "any")
        assert not compiled.applies(action_type, 90, "any")


def test_a_literal_zone_name_as_timezone_is_every_customers_zone() -> None:
    compiled = compile_policy_definition(with_quiet(timezone="Asia/Tokyo"))
    assert compiled.zone({"timezone": "America/New_York"}) == TOKYO
    assert compiled.zone(None) == TOKYO


def test_a_policy_of_quiet_hours_only_or_limits_only_is_accepted() -> None:
    assert compile_policy_definition(example(limits=None)).definition.limits == []
    assert compile_policy_definition(example(quietHours=None)).definition.quiet_hours is None


# -- rejected whole, the field named -------------------------------------------------------------

@pytest.mark.parametrize("value, field, says", [
    (with_quiet(to="21:00"), "quietHours", "'from' and 'to' are the same time"),
    (with_quiet(**{"from": "9:00"}), "quietHours.from", "HH:MM"),
    (with_quiet(**{"from": "24:00"}), "quietHours.from", "HH:MM"),
    (with_quiet(to="08:60"), "quietHours.to", "HH:MM"),
    (with_quiet(to="8am"), "quietHours.to", "HH:MM"),
    (with_quiet(defaultTimezone="Mars/Olympus_Mons"), "quietHours.defaultTimezone", "unknown IANA time zone"),
    (with_quiet(defaultTimezone=""), "quietHours.defaultTimezone", "unknown IANA time zone"),
    (with_quiet(during="later"), "quietHours.during", "'defer' or 'drop'"),
    (example(limits=[{"max": 3, "window": {"days": 1}}, {"max": 5, "window": {"hours": 24}}]),
     "limits", "two limits over the same window"),
    (example(limits=[{"max": 3, "window": {"hours": 1}}, {"max": 3, "window": {"days": 1}}]),
     "limits", "can never be reached"),
    (example(limits=[{"max": 10, "window": {"days": 7}}, {"max": 2, "window": {"days": 1}},
                     {"max": 4, "window": {"hours": 1}}]), "limits", "can never be reached"),
    (example(limits=[{"max": 0, "window": {"days": 1}}]), "limits.0.max", "greater than or equal to 1"),
    (example(limits=[{"max": -2, "window": {"days": 1}}]), "limits.0.max", "greater than or equal to 1"),
    (example(limits=[{"max": 1}]), "limits.0.window", "Field required"),
    (example(limits=None, quietHours=None), "limits", "a policy needs limits, quietHours or both"),
    (example(limits=[], quietHours=None), "limits", "a policy needs limits, quietHours or both"),
    (with_scope(actionTypes=["sms"]), "appliesTo.actionTypes.0", "'webhook'"),
    (with_scope(actionTypes=[]), "appliesTo.actionTypes", "at least 1"),
    (with_scope(maxPriority=0), "appliesTo.maxPriority", "greater than or equal to 1"),
    (with_scope(maxPriority=101), "appliesTo.maxPriority", "less than or equal to 100"),
    (with_quiet(timezone="customer.(("), "quietHours.timezone", "syntax error"),
    (with_quiet(timezone="nobody.timezone"), "quietHours.timezone", "unknown name 'nobody'"),
    (with_quiet(timezone="Mars/Olympus_Mons"), "quietHours.timezone", "invalid expression"),
])
def test_an_invalid_policy_is_rejected_whole_with_the_field_named(value: dict[str, Any], field: str,
                                                                   says: str) -> None:
    [problem] = problems(value)
    assert field in problem and says in problem, problem


def test_every_problem_of_a_policy_is_reported_at_once() -> None:
    found = problems(example(appliesTo={"maxPriority": 0}, limits=[{"max": 0, "window": {"days": 1}}],
                             quietHours={"from": "25:00", "to": "08:00", "defaultTimezone": "Nowhere/Else"}))
    assert [problem.split(":")[0] for problem in found] == [
        "appliesTo.maxPriority", "limits.0.max", "quietHours.from", "quietHours.defaultTimezone"]


def test_an_invalid_version_removes_the_policy_from_the_catalog() -> None:
    catalog = PolicyCatalog()
    catalog.apply("marketing", json.dumps(EXAMPLE).encode())
    assert [p.id for p in catalog.enabled] == ["marketing"]

    catalog.apply("marketing", json.dumps(with_quiet(to="21:00")).encode())

    assert catalog.enabled == [] and "marketing" not in catalog.items
    assert any("quietHours" in problem for problem in catalog.rejected["marketing"])


def test_a_disabled_policy_stays_in_the_catalog_but_is_not_in_force() -> None:
    catalog = PolicyCatalog()
    catalog.apply("marketing", json.dumps(example(enabled=False)).encode())
    catalog.apply("other", json.dumps({"id": "other", "limits": [{"max": 1, "window": {"days": 1}}]}).encode())
    assert sorted(catalog.items) == ["marketing", "other"] and [p.id for p in catalog.enabled] == ["other"]


# -- quiet hours ---------------------------------------------------------------------------------

@pytest.mark.parametrize("at, until", [
    (utc(2026, 1, 1, 20, 59, 59), None),
    (utc(2026, 1, 1, 21, 0), utc(2026, 1, 2, 8, 0)),  # `from` is quiet
    (utc(2026, 1, 1, 23, 59, 59), utc(2026, 1, 2, 8, 0)),
    (utc(2026, 1, 2, 0, 0), utc(2026, 1, 2, 8, 0)),
    (utc(2026, 1, 2, 3, 0), utc(2026, 1, 2, 8, 0)),
    (utc(2026, 1, 2, 7, 59, 59), utc(2026, 1, 2, 8, 0)),
    (utc(2026, 1, 2, 8, 0), None),  # `to` is not
    (utc(2026, 1, 2, 12, 0), None),
])
def test_quiet_hours_spanning_midnight_end_the_next_morning(at: datetime, until: datetime | None) -> None:
    assert quiet_until(quiet("21:00", "08:00"), UTC_ZONE, at) == until


@pytest.mark.parametrize("at, until", [
    (utc(2026, 1, 1, 11, 59), None),
    (utc(2026, 1, 1, 12, 0), utc(2026, 1, 1, 14, 0)),
    (utc(2026, 1, 1, 13, 59, 59), utc(2026, 1, 1, 14, 0)),
    (utc(2026, 1, 1, 14, 0), None),
    (utc(2026, 1, 1, 23, 0), None),
    (utc(2026, 1, 1, 0, 30), None),
])
def test_quiet_hours_within_one_day_end_the_same_day(at: datetime, until: datetime | None) -> None:
    assert quiet_until(quiet("12:00", "14:00"), UTC_ZONE, at) == until


def test_quiet_hours_are_read_on_the_local_clock_of_the_zone() -> None:
    hours = quiet("21:00", "08:00")
    # 13:00 UTC is 22:00 in Tokyo: quiet until 08:00 there, 23:00 UTC.
    assert quiet_until(hours, TOKYO, utc(2026, 1, 1, 13, 0)) == utc(2026, 1, 1, 23, 0)
    assert quiet_until(hours, TOKYO, utc(2026, 1, 1, 11, 59)) is None  # 20:59 in Tokyo
    assert quiet_until(hours, TOKYO, utc(2026, 1, 1, 23, 0)) is None  # 08:00 in Tokyo


def test_quiet_hours_across_the_spring_dst_change_in_berlin_end_at_local_eight() -> None:
    hours = quiet("21:00", "08:00")
    # The night of 28-29 March 2026: 22:30 CET, the window ends at 08:00 CEST = 06:00 UTC.
    assert quiet_until(hours, BERLIN, utc(2026, 3, 28, 21, 30)) == utc(2026, 3, 29, 6, 0)
    assert quiet_until(hours, BERLIN, utc(2026, 3, 29, 1, 30)) == utc(2026, 3, 29, 6, 0)  # 03:30 CEST
    # The night before, all in CET: 07:00 UTC.
    assert quiet_until(hours, BERLIN, utc(2026, 3, 27, 21, 30)) == utc(2026, 3, 28, 7, 0)
    assert quiet_until(hours, BERLIN, utc(2026, 3, 29, 6, 0)) is None


def test_quiet_hours_across_the_autumn_dst_change_in_berlin_end_at_local_eight() -> None:
    hours = quiet("21:00", "08:00")
    # The night of 24-25 October 2026: 23:30 CEST, the window ends at 08:00 CET = 07:00 UTC.
    assert quiet_until(hours, BERLIN, utc(2026, 10, 24, 21, 30)) == utc(2026, 10, 25, 7, 0)
    assert quiet_until(hours, BERLIN, utc(2026, 10, 25, 6, 59)) == utc(2026, 10, 25, 7, 0)
    assert quiet_until(hours, BERLIN, utc(2026, 10, 25, 7, 0)) is None


def test_quiet_hours_start_at_local_nine_in_summer_and_in_winter() -> None:
    hours = quiet("21:00", "08:00")
    assert quiet_until(hours, BERLIN, utc(2026, 7, 1, 19, 0)) is not None  # 21:00 CEST
    assert quiet_until(hours, BERLIN, utc(2026, 1, 1, 19, 0)) is None  # 20:00 CET
    assert quiet_until(hours, BERLIN, utc(2026, 1, 1, 20, 0)) is not None  # 21:00 CET


def test_in_the_repeated_hour_of_autumn_the_window_ends_after_now_not_before() -> None:
    hours = quiet("01:00", "02:30")
    # 01:15 UTC on 25 October 2026 is 02:15 CET, the second 02:15 of the night: still quiet by
    # the wall clock until 02:30 CET (01:30 UTC). An end before `at` defers a firing to the
    # past, so it is performed at once, inside the quiet hours.
    assert quiet_until(hours, BERLIN, utc(2026, 10, 25, 1, 15)) == utc(2026, 10, 25, 1, 30)


@pytest.mark.parametrize("row, zone", [
    ({"timezone": "Asia/Tokyo"}, TOKYO),
    ({"timezone": "Europe/Berlin"}, BERLIN),
    ({"tier": "gold"}, BERLIN),  # no zone in the row
    (None, BERLIN),  # no row
    ({"timezone": "Not/AZone"}, BERLIN),
    ({"timezone": ""}, BERLIN),
    ({"timezone": 9}, BERLIN),
    ({"timezone": ["Asia/Tokyo"]}, BERLIN),
    ({"timezone": "Asia/" + "x" * 100}, BERLIN),
    ({"timezone": "../../../etc/passwd"}, BERLIN),
])
def test_the_customers_zone_comes_from_their_row_else_the_default(row: dict[str, Any] | None,
                                                                  zone: ZoneInfo) -> None:
    assert compile_policy_definition(EXAMPLE).zone(row) == zone


def test_a_zone_expression_over_another_field_is_evaluated_against_the_row() -> None:
    compiled = compile_policy_definition(with_quiet(timezone="customer.prefs.tz"))
    assert compiled.zone({"prefs": {"tz": "Asia/Tokyo"}}) == TOKYO
    assert compiled.zone({"prefs": {}}) == BERLIN and compiled.zone({"prefs": "Asia/Tokyo"}) == BERLIN


# -- admit: frequency caps ----------------------------------------------------------------------

def test_with_a_cap_of_3_the_first_3_of_5_are_admitted_and_2_suppressed() -> None:
    commands = [command(f"t{p}", p) for p in (80, 70, 60, 50, 40)]

    result = admit(commands, [cap(3)], {}, None, T0_MS, None)

    assert ids(result.admitted) == ["t80", "t70", "t60"]
    assert suppressed(result) == [("t50", "frequency_cap", "cap"), ("t40", "frequency_cap", "cap")]
    assert result.deferred == []
    assert counted(result.contacts) == ["f-t60", "f-t70", "f-t80"]  # by (time, firing id)
    assert result.contacts is not None and result.contacts["t"] == {}


def test_the_allowance_is_spent_in_the_order_given() -> None:
    commands = [command(f"t{p}", p) for p in (40, 50, 60, 70, 80)]  # the engine gives descending priority
    assert ids(admit(commands, [cap(2)], {}, None, T0_MS, None).admitted) == ["t40", "t50"]


def test_a_second_event_in_the_window_is_fully_capped_and_counts_nothing_more() -> None:
    first = admit([command(f"a{i}") for i in range(3)], [cap(3)], {}, None, T0_MS, None)
    second = admit([command(f"b{i}") for i in range(2)], [cap(3)], {}, first.contacts, T0_MS + HOUR, None)
    assert second.admitted == [] and [r for _, r, _ in second.suppressed] == ["frequency_cap"] * 2
    assert second.contacts is None  # unchanged: nothing to write


def test_the_tightest_limit_of_a_policy_caps_first() -> None:
    compiled = compile_policy_definition(example(quietHours=None))  # 3 per 7 days, 1 per 12 hours
    first = admit([command("a"), command("b")], [compiled], {}, None, T0_MS, None)
    assert ids(first.admitted) == ["a"] and suppressed(first) == [("b", "frequency_cap", "marketing")]
    contacts = first.contacts
    for hours, trigger_id, admitted in ((12, "c", True), (24, "d", True), (36, "e", False), (7 * 24, "f", True)):
        step = admit([command(trigger_id)], [compiled], {}, contacts, T0_MS + hours * HOUR, None)
        assert bool(step.admitted) is admitted, hours
        contacts = step.contacts or contacts
    assert counted(contacts, "marketing") == ["f-c", "f-d", "f-f"]


def test_a_critical_firing_is_admitted_and_not_counted() -> None:
    commands = [command("critical", 95), command("t80", 80), command("t70", 70)]
    result = admit(commands, [cap(1)], {}, None, T0_MS, None)
    assert ids(result.admitted) == ["critical", "t80"] and suppressed(result) == [("t70", "frequency_cap", "cap")]
    assert counted(result.contacts) == ["f-t80"]


@pytest.mark.parametrize("priority, capped", [(89, True), (90, False), (100, False), (1, True)])
def test_the_default_max_priority_is_89(priority: int, capped: bool) -> None:
    full = admit([command("first")], [cap(1)], {}, None, T0_MS, None).contacts
    result = admit([command("next", priority)], [cap(1)], {}, full, T0_MS, None)
    assert (result.admitted == []) is capped


def test_max_priority_89_excludes_a_priority_95_command_written_out() -> None:
    compiled = cap(1, appliesTo={"maxPriority": 89})
    full = admit([command("first", 50)], [compiled], {}, None, T0_MS, None).contacts
    result = admit([command("p95", 95), command("p89", 89)], [compiled], {}, full, T0_MS, None)
    assert ids(result.admitted) == ["p95"] and suppressed(result) == [("p89", "frequency_cap", "cap")]


def test_trigger_ids_narrow_a_policy() -> None:
    compiled = cap(1, appliesTo={"triggerIds": ["promo-a", "promo-b"]})
    result = admit([command("promo-a"), command("other"), command("promo-b"), command("other-2")],
                   [compiled], {}, None, T0_MS, None)
    assert ids(result.admitted) == ["promo-a", "other", "other-2"]
    assert suppressed(result) == [("promo-b", "frequency_cap", "cap")]
    assert counted(result.contacts) == ["f-promo-a"]


def test_action_types_narrow_a_policy() -> None:
    compiled = cap(1, appliesTo={"actionTypes": ["webhook"]})
    result = admit([command("w1"), command("attr", action_type="update_attribute"), command("w2")],
                   [compiled], {}, None, T0_MS, None)
    assert ids(result.admitted) == ["w1", "attr"] and suppressed(result) == [("w2", "frequency_cap", "cap")]


def test_a_disabled_policy_is_ignored() -> None:
    result = admit([command(f"t{i}") for i in range(3)], [cap(1, enabled=False)], {}, None, T0_MS, None)
    assert len(result.admitted) == 3 and result.suppressed == [] and result.contacts is None


def test_each_policy_counts_its_own_and_a_firing_one_stops_is_counted_by_none() -> None:
    web = cap(1, policy_id="web", appliesTo={"actionTypes": ["webhook"]})
    everything = cap(2, policy_id="all")
    result = admit([command("w1"), command("w2"), command("j1", action_type="enroll_journey"),
                    command("j2", action_type="enroll_journey")], [everything, web], {}, None, T0_MS, None)
    assert ids(result.admitted) == ["w1", "j1"]
    assert suppressed(result) == [("w2", "frequency_cap", "web"), ("j2", "frequency_cap", "all")]
    assert counted(result.contacts, "web") == ["f-w1"] and counted(result.contacts, "all") == ["f-j1", "f-w1"]


def test_counting_is_per_customer_record() -> None:
    full = admit([command("a")], [cap(1)], {}, None, T0_MS, None).contacts
    other_customer = admit([command("a", customer_id="c-2")], [cap(1)], {}, None, T0_MS, None)
    assert full is not None and ids(other_customer.admitted) == ["a"]


# -- admit: replays ------------------------------------------------------------------------------

def test_a_replayed_firing_is_admitted_again_without_being_counted_twice() -> None:
    commands = [command(f"t{p}", p) for p in (80, 70, 60)]
    first = admit(commands, [cap(2)], {}, None, T0_MS, None)

    replay = admit(commands, [cap(2)], {}, first.contacts, T0_MS + MINUTE, None)

    assert ids(replay.admitted) == ids(first.admitted) == ["t80", "t70"]
    assert suppressed(replay) == suppressed(first) == [("t60", "frequency_cap", "cap")]
    assert replay.contacts is None and counted(first.contacts) == ["f-t70", "f-t80"]


def test_a_replay_read_after_the_window_is_full_of_later_firings_is_still_admitted() -> None:
    first = admit([command("a")], [cap(1, {"hours": 1})], {}, None, T0_MS, None)
    later = admit([command("b")], [cap(1, {"hours": 1})], {}, first.contacts, T0_MS + 2 * HOUR, None)
    assert ids(later.admitted) == ["b"]
    replay = admit([command("b")], [cap(1, {"hours": 1})], {}, later.contacts, T0_MS + 2 * HOUR, None)
    assert ids(replay.admitted) == ["b"] and replay.contacts is None


def test_a_replayed_firing_of_a_limited_trigger_is_admitted_again() -> None:
    once = {"t": TriggerLimit(max=1)}
    first = admit([command("t", firing_id="f-1")], [], once, None, T0_MS, None)
    replay = admit([command("t", firing_id="f-1")], [], once, first.contacts, T0_MS + DAY, None)
    other = admit([command("t", firing_id="f-2")], [], once, first.contacts, T0_MS + DAY, None)
    assert ids(replay.admitted) == ["t"] and replay.contacts is None
    assert other.admitted == [] and suppressed(other) == [("t", "trigger_limit", None)]


# -- admit: sliding windows and bounded state ------------------------------------------------------

def test_an_entry_exactly_one_window_ago_no_longer_counts() -> None:
    hourly = [cap(1, {"hours": 1})]
    first = admit([command("a")], hourly, {}, None, T0_MS, None)
    just_inside = admit([command("b")], hourly, {}, first.contacts, T0_MS + HOUR - 1, None)
    at_the_edge = admit([command("b")], hourly, {}, first.contacts, T0_MS + HOUR, None)
    assert just_inside.admitted == [] and ids(at_the_edge.admitted) == ["b"]


def test_entries_older_than_the_longest_window_are_pruned_when_counting() -> None:
    compiled = compile_policy_definition(example(quietHours=None))  # windows of 12 hours and 7 days
    old = [[T0_MS - 7 * DAY - i, f"old-{i}"] for i in range(50)]
    kept = [[T0_MS - 7 * DAY + 1, "just-inside"]]
    contacts: Contacts = {"p": {"marketing": [*old, *kept]}, "t": {}}

    result = admit([command("new")], [compiled], {}, contacts, T0_MS, None)

    assert ids(result.admitted) == ["new"]
    assert counted(result.contacts, "marketing") == ["just-inside", "f-new"]


def test_the_record_stays_bounded_over_a_long_run() -> None:
    compiled = cap(2, {"hours": 1})
    limits = {"t": TriggerLimit.model_validate({"max": 2, "window": {"hours": 3}})}
    contacts: Contacts | None = None
    admitted = 0
    for minute in range(0, 7 * 24 * 60, 10):
        result = admit([command("t", firing_id=f"f-{minute}")], [compiled], limits, contacts,
                       T0_MS + minute * MINUTE, None)
        admitted += len(result.admitted)
        contacts = result.contacts or contacts
    assert admitted == 2 * 7 * 8  # 2 per 3 hours for a week
    assert contacts is not None  # only what a window can still count
    assert len(contacts["p"]["cap"]) <= 2 and len(contacts["t"]["t"]) <= 2


def test_the_stored_record_is_not_changed_in_place() -> None:
    contacts: Contacts = {"p": {"cap": [[T0_MS - MINUTE, "f-old"]]}, "t": {"t": [[T0_MS - MINUTE, "f-old"]]}}
    before = copy.deepcopy(contacts)
    result = admit([command("t")], [cap(5)], {"t": TriggerLimit(max=5)}, contacts, T0_MS, None)
    assert contacts == before and result.contacts != before


# -- admit: trigger limits -----------------------------------------------------------------------

def test_a_limit_of_one_without_window_is_once_per_customer_ever() -> None:
    once = {"welcome": TriggerLimit(max=1)}
    first = admit([command("welcome", firing_id="f-1")], [], once, None, T0_MS, None)
    assert ids(first.admitted) == ["welcome"]
    assert [entry[1] for entry in (first.contacts or {})["t"]["welcome"]] == ["f-1"]

    years_later = admit([command("welcome", firing_id="f-2")], [], once, first.contacts, T0_MS + 3650 * DAY, None)

    assert years_later.admitted == [] and suppressed(years_later) == [("welcome", "trigger_limit", None)]


def test_a_limit_of_two_per_30_days_slides() -> None:
    limits = {"t": TriggerLimit.model_validate({"max": 2, "window": {"days": 30}})}
    contacts: Contacts | None = None
    outcomes = []
    for day in (0, 1, 2, 29, 30, 31, 32):
        result = admit([command("t", firing_id=f"f-{day}")], [], limits, contacts, T0_MS + day * DAY, None)
        outcomes.append((day, bool(result.admitted)))
        contacts = result.contacts or contacts
    assert outcomes == [(0, True), (1, True), (2, False), (29, False), (30, True), (31, True), (32, False)]


def test_a_trigger_limit_is_per_trigger() -> None:
    limits = {"a": TriggerLimit(max=1)}
    first = admit([command("a", firing_id="f-a1"), command("b", firing_id="f-b1")], [], limits, None, T0_MS, None)
    second = admit([command("a", firing_id="f-a2"), command("b", firing_id="f-b2")], [], limits, first.contacts,
                   T0_MS + MINUTE, None)
    assert ids(first.admitted) == ["a", "b"] and ids(second.admitted) == ["b"]


def test_a_trigger_limit_applies_to_critical_firings_too() -> None:
    result = admit([command("c", 100, firing_id="f-1"), command("c", 100, firing_id="f-2")], [],
                   {"c": TriggerLimit(max=1)}, None, T0_MS, None)
    assert [c.firing_id for c in result.admitted] == ["f-1"]
    assert suppressed(result) == [("c", "trigger_limit", None)]


def test_a_firing_stopped_by_a_policy_does_not_use_its_triggers_limit() -> None:
    limits = {"t": TriggerLimit(max=1)}
    full = admit([command("other")], [cap(1)], {}, None, T0_MS, None).contacts
    capped = admit([command("t", firing_id="f-1")], [cap(1)], limits, full, T0_MS, None)
    assert capped.admitted == [] and capped.contacts is None
    next_day = admit([command("t", firing_id="f-2")], [cap(1)], limits, full, T0_MS + DAY, None)
    assert ids(next_day.admitted) == ["t"]


# -- admit: quiet hours --------------------------------------------------------------------------

NIGHT_MS = int(utc(2026, 1, 1, 22, 0).timestamp() * 1000)
MORNING_MS = int(utc(2026, 1, 2, 8, 0).timestamp() * 1000)


def quiet_policy(during: str = "defer", **fields: Any) -> CompiledPolicy:
    return policy("night", quietHours={"from": "21:00", "to": "08:00", "defaultTimezone": "UTC", "during": during},
                  **fields)


def test_in_quiet_hours_defer_holds_a_firing_until_the_window_ends_without_counting_it() -> None:
    result = admit([command("a"), command("b")], [quiet_policy(limits=[{"max": 5, "window": {"days": 1}}])], {},
                   None, NIGHT_MS, None)
    assert result.admitted == [] and result.suppressed == []
    assert [(c.trigger_id, due, policy_id) for c, due, policy_id in result.deferred] == [
        ("a", MORNING_MS, "night"), ("b", MORNING_MS, "night")]
    assert result.contacts is None


def test_in_quiet_hours_drop_suppresses_with_the_reason_and_policy() -> None:
    result = admit([command("a")], [quiet_policy("drop")], {}, None, NIGHT_MS, None)
    assert result.admitted == [] and result.deferred == []
    assert suppressed(result) == [("a", "quiet_hours", "night")]


def test_outside_quiet_hours_a_firing_is_admitted_and_at_the_window_end_too() -> None:
    assert ids(admit([command("a")], [quiet_policy()], {}, None, MORNING_MS, None).admitted) == ["a"]
    assert ids(admit([command("a")], [quiet_policy()], {}, None, MORNING_MS - 1, None).admitted) == []


def test_quiet_hours_use_the_customers_zone() -> None:
    berlin_night = policy("night", quietHours={"from": "21:00", "to": "08:00", "defaultTimezone": "Europe/Berlin"})
    at = int(utc(2026, 1, 1, 12, 30).timestamp() * 1000)  # 13:30 in Berlin, 21:30 in Tokyo
    in_tokyo = admit([command("a")], [berlin_night], {}, None, at, {"timezone": "Asia/Tokyo"})
    in_berlin = admit([command("a")], [berlin_night], {}, None, at, {"timezone": "Europe/Berlin"})
    without_zone = admit([command("a")], [berlin_night], {}, None, at, {})
    assert [due for _, due, _ in in_tokyo.deferred] == [int(utc(2026, 1, 1, 23, 0).timestamp() * 1000)]
    assert ids(in_berlin.admitted) == ["a"] and ids(without_zone.admitted) == ["a"]


def test_quiet_hours_do_not_hold_a_critical_firing() -> None:
    result = admit([command("critical", 90)], [quiet_policy("drop")], {}, None, NIGHT_MS, None)
    assert ids(result.admitted) == ["critical"]


def test_a_trigger_at_its_limit_in_quiet_hours_is_suppressed_not_deferred() -> None:
    limits = {"t": TriggerLimit(max=1)}
    used = admit([command("t", firing_id="f-1")], [], limits, None, T0_MS, None).contacts
    result = admit([command("t", firing_id="f-2")], [quiet_policy()], limits, used, NIGHT_MS, None)
    assert result.deferred == [] and suppressed(result) == [("t", "trigger_limit", None)]


def test_with_no_policy_and_no_limit_everything_is_admitted_and_nothing_written() -> None:
    result = admit([command("a"), command("b")], [], {}, None, T0_MS, None)
    assert ids(result.admitted) == ["a", "b"] and result.contacts is None


def test_deferral_ends_are_whole_milliseconds_of_the_window_end() -> None:
    at = T0 + timedelta(hours=13, milliseconds=123)  # 22:00:00.123 UTC
    [(_, due, _)] = admit([command("a")], [quiet_policy()], {}, None, int(at.timestamp() * 1000), None).deferred
    assert due == MORNING_MS
