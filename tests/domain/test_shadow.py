"""Shadow mode without I/O: the `mode` field, shadow state kept under its own ids (cooldown
marks, trigger-limit and policy counts), shadow firings checked against live counts plus
their own and never counted where live triggers look, delayed shadow firings staying shadow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.domain.cooldown import CooldownMark
from app.domain.definitions import CompiledTrigger, compile_definition, compile_policy_definition
from app.domain.engine import evaluate, evaluate_due, explain
from app.domain.matching import DefinitionIndex
from app.domain.models import ActionCommand, Event, Mode, Source, TriggerLimit
from app.domain.policies import CompiledPolicy, ContactRecord, admit, explain_policies
from app.domain.shadow import state_id
from app.domain.timers import PendingFiring
from app.errors import InvalidDefinition

NOW = datetime(2026, 1, 1, 9, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
HOUR = 3_600_000


def trigger(trigger_id: str = "offer", **extra: Any) -> CompiledTrigger:
    return compile_definition({"id": trigger_id, "source": "streaming", "eventType": "visit",
                               "action": {"type": "webhook", "url": "https://hooks.example/x"}, **extra})


def event(event_id: str = "e-1", at: datetime = NOW) -> Event:
    return Event(id=event_id, type="visit", customer_id="c-1", source=Source.STREAMING, timestamp=at, fields={})


def run(*triggers: CompiledTrigger, ev: Event | None = None, marks: dict[str, CooldownMark] | None = None) -> Any:
    index = DefinitionIndex()
    for compiled in triggers:
        index.put(compiled)
    return evaluate(index, ev or event(), None, (marks or {}).get, NOW)


# -- the field ---------------------------------------------------------------------------------

def test_mode_defaults_to_live_and_shows_in_the_public_definition() -> None:
    live = trigger()
    assert live.definition.mode is Mode.LIVE and not live.shadow and live.state_id == "offer"
    assert live.definition.public_dict()["mode"] == "live"
    shadow = trigger(mode="shadow")
    assert shadow.shadow and shadow.state_id == "shadow~offer"
    assert shadow.definition.public_dict()["mode"] == "shadow"


@pytest.mark.parametrize("value", ["dark", "Shadow", "", True, 1, None])
def test_a_mode_other_than_live_or_shadow_is_rejected_with_the_field_named(value: Any) -> None:
    with pytest.raises(InvalidDefinition) as info:
        trigger(mode=value)
    assert len(info.value.errors) == 1 and info.value.errors[0].startswith("mode:"), info.value.errors


def test_no_trigger_id_can_name_a_shadow_state_id() -> None:
    with pytest.raises(InvalidDefinition):
        trigger("shadow~offer")
    assert state_id("offer", False) != state_id("offer", True)


# -- evaluation ------------------------------------------------------------------------------------

def test_a_shadow_firing_is_marked_and_its_cooldown_mark_is_kept_under_the_shadow_state_id() -> None:
    result = run(trigger(mode="shadow", cooldownMinutes=60))
    [command] = result.firings
    assert command.shadow and command.to_json()["shadow"] is True
    assert list(result.cooldown_marks) == ["shadow~offer"]


def test_a_live_firing_reads_as_before_without_a_shadow_field() -> None:
    result = run(trigger(cooldownMinutes=60))
    [command] = result.firings
    assert not command.shadow and "shadow" not in command.to_json()
    assert list(result.cooldown_marks) == ["offer"]
    assert ActionCommand.model_validate(command.to_json()) == command


def test_a_live_cooldown_does_not_hold_a_shadow_trigger_and_a_shadow_one_does_not_hold_a_live_one() -> None:
    running = CooldownMark(fired_at=NOW - timedelta(minutes=5), event_id="e-0")
    assert [f.trigger_id for f in run(trigger(mode="shadow", cooldownMinutes=60), marks={"offer": running})
            .firings] == ["offer"]
    assert run(trigger(cooldownMinutes=60), marks={"shadow~offer": running}).firings[0].shadow is False
    held = run(trigger(mode="shadow", cooldownMinutes=60), marks={"shadow~offer": running})
    assert held.firings == [] and held.cooled_down == ["offer"]


def test_a_delayed_shadow_match_is_pending_as_shadow_and_its_record_says_so() -> None:
    [pending] = run(trigger(mode="shadow", delay={"minutes": 30})).scheduled
    assert pending.shadow
    assert pending.entry()["shadow"] is True
    assert PendingFiring.from_entry("c-1", pending.entry()) == pending
    assert pending.status("scheduled", NOW)["shadow"] is True
    [live] = run(trigger(delay={"minutes": 30})).scheduled
    assert "shadow" not in live.entry() and "shadow" not in live.status("scheduled", NOW)


def test_a_firing_scheduled_in_shadow_stays_shadow_when_the_trigger_has_gone_live() -> None:
    [pending] = run(trigger(mode="shadow", delay={"minutes": 30}, cooldownMinutes=60)).scheduled
    now_live = trigger(delay={"minutes": 30}, cooldownMinutes=60)
    due = evaluate_due(now_live, pending, None, lambda _: None, NOW + timedelta(minutes=30))
    assert [f.shadow for f in due.firings] == [True] and list(due.cooldown_marks) == ["shadow~offer"]
    [live_pending] = run(now_live).scheduled
    due = evaluate_due(now_live, live_pending, None, lambda _: None, NOW + timedelta(minutes=30))
    assert [f.shadow for f in due.firings] == [False] and list(due.cooldown_marks) == ["offer"]


def test_the_dry_run_says_the_mode_and_what_it_performs() -> None:
    report = explain(trigger(mode="shadow"), event(), None, NOW)
    assert (report["mode"], report["performs"]) == ("shadow", "nothing: firings go to triggers.shadow")
    report = explain(trigger(), event(), None, NOW)
    assert report["mode"] == "live" and "triggers.firings" in report["performs"]


# -- policies and trigger limits --------------------------------------------------------------------

def cap(max_: int = 1) -> CompiledPolicy:
    return compile_policy_definition({"id": "cap", "limits": [{"max": max_, "window": {"days": 7}}]})


def command(trigger_id: str, shadow: bool = False, event_id: str = "e-1", priority: int = 50) -> ActionCommand:
    return ActionCommand.model_validate({
        "firingId": f"f-{trigger_id}-{event_id}", "triggerId": trigger_id, "priority": priority,
        "customerId": "c-1", "eventId": event_id, "firedAt": NOW.isoformat(),
        "action": {"type": "webhook"}, "event": {"type": "visit"}, "shadow": shadow})


def test_a_shadow_firing_is_counted_in_its_own_counts_only_and_does_not_use_up_the_cap() -> None:
    first = admit([command("spy", shadow=True, priority=80), command("live")], [cap(1)], {}, None, NOW_MS, None)
    assert [c.trigger_id for c in first.admitted] == ["spy", "live"]  # the shadow one did not spend the 1
    assert first.contacts is not None
    assert [e[1] for e in first.contacts["p"]["cap"]] == ["f-live-e-1"]
    assert [e[1] for e in first.contacts["s"]["spy"]["p"]["cap"]] == ["f-spy-e-1"]


def test_a_shadow_firing_sees_the_live_counts_plus_its_own() -> None:
    live_used = admit([command("live")], [cap(1)], {}, None, NOW_MS, None).contacts
    capped = admit([command("spy", shadow=True)], [cap(1)], {}, live_used, NOW_MS + HOUR, None)
    assert capped.admitted == [] and [(c.trigger_id, reason) for c, reason, _ in capped.suppressed] == [
        ("spy", "frequency_cap")]
    own_used = admit([command("spy", shadow=True)], [cap(1)], {}, None, NOW_MS, None).contacts
    again = admit([command("spy", shadow=True, event_id="e-2")], [cap(1)], {}, own_used, NOW_MS + HOUR, None)
    assert again.admitted == []
    other_shadow = admit([command("other", shadow=True)], [cap(1)], {}, own_used, NOW_MS + HOUR, None)
    assert [c.trigger_id for c in other_shadow.admitted] == ["other"]  # another shadow trigger's counts are not its


def test_a_shadow_trigger_limit_counts_shadow_firings_only() -> None:
    once = {"offer": TriggerLimit(max=1)}
    live_fired = admit([command("offer")], [], once, None, NOW_MS, None).contacts
    shadow = admit([command("offer", shadow=True, event_id="e-2")], [], once, live_fired, NOW_MS + HOUR, None)
    assert [c.trigger_id for c in shadow.admitted] == ["offer"]  # shadow state starts empty
    twice = admit([command("offer", shadow=True, event_id="e-3")], [], once, shadow.contacts, NOW_MS + 2 * HOUR,
                  None)
    assert [reason for _, reason, _ in twice.suppressed] == ["trigger_limit"]
    live_again = admit([command("offer", event_id="e-4")], [], once, shadow.contacts, NOW_MS + 3 * HOUR, None)
    assert [reason for _, reason, _ in live_again.suppressed] == ["trigger_limit"]  # its own live firing


def test_a_trigger_whose_only_firings_were_shadow_goes_live_with_nothing_counted() -> None:
    once = {"offer": TriggerLimit(max=1)}
    shadow = admit([command("offer", shadow=True)], [cap(1)], once, None, NOW_MS, None).contacts
    went_live = admit([command("offer", event_id="e-2")], [cap(1)], once, shadow, NOW_MS + HOUR, None)
    assert [c.trigger_id for c in went_live.admitted] == ["offer"]


def test_a_replayed_shadow_firing_is_admitted_again_without_being_counted_twice() -> None:
    first = admit([command("spy", shadow=True)], [cap(2)], {}, None, NOW_MS, None)
    replay = admit([command("spy", shadow=True)], [cap(2)], {}, first.contacts, NOW_MS, None)
    assert [c.trigger_id for c in replay.admitted] == ["spy"] and replay.contacts is None


def test_live_counts_are_kept_when_a_shadow_firing_is_counted() -> None:
    record: ContactRecord | None = admit([command("live")], [cap(3)], {}, None, NOW_MS, None).contacts
    record = admit([command("spy", shadow=True)], [cap(3)], {}, record, NOW_MS + HOUR, None).contacts
    record = admit([command("live", event_id="e-2")], [cap(3)], {}, record, NOW_MS + 2 * HOUR, None).contacts
    assert record is not None
    assert [e[1] for e in record["p"]["cap"]] == ["f-live-e-1", "f-live-e-2"]
    assert [e[1] for e in record["s"]["spy"]["p"]["cap"]] == ["f-spy-e-1"]


def test_the_dry_run_counts_a_shadow_trigger_against_live_plus_its_own() -> None:
    record = admit([command("live")], [cap(2)], {}, None, NOW_MS, None).contacts
    record = admit([command("spy", shadow=True)], [cap(2)], {}, record, NOW_MS, None).contacts
    as_shadow = explain_policies("webhook", 50, "spy", [cap(2)], None, record, NOW_MS + HOUR, None, shadow=True)
    as_live = explain_policies("webhook", 50, "spy", [cap(2)], None, record, NOW_MS + HOUR, None)
    assert as_shadow["applying"][0]["limits"][0]["counted"] == 2 and as_shadow["applying"][0]["capped"]
    assert as_live["applying"][0]["limits"][0]["counted"] == 1
