"""Journey enrollment: deduplication modes, replays, expiry, ending, and journey definitions."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.domain.definitions import compile_journey
from app.domain.journeys import Enrollment, EnrollmentDecision, JourneyDefinition, end, enroll, enrollment_id
from app.domain.models import Deduplication
from app.errors import InvalidDefinition

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SKIP, RESTART, MULTIPLE = Deduplication.SKIP_IF_ACTIVE, Deduplication.RESTART, Deduplication.ALLOW_MULTIPLE

VIP = compile_journey({"id": "vip-welcome", "name": "VIP welcome", "maxDurationDays": 30})
ONBOARDING = compile_journey({"id": "onboarding"})  # no maxDurationDays: no limit


def journey_errors(value: Any, key: str | None = None) -> list[str]:
    with pytest.raises(InvalidDefinition) as info:
        compile_journey(value, key)
    assert info.value.errors
    return info.value.errors


def enrolled(journey: JourneyDefinition, *firings: str, mode: Deduplication = MULTIPLE,
             now: datetime = NOW) -> list[Enrollment]:
    state: list[Enrollment] = []
    for firing in firings:
        state, _ = enroll(state, journey, mode, firing, now)
    return state


# --- enrollment ids ---------------------------------------------------------------------------


def test_enrollment_id_is_deterministic_per_firing():
    assert enrollment_id("f1") == enrollment_id("f1")
    assert enrollment_id("f1") != enrollment_id("f2")
    uuid.UUID(enrollment_id("f1"))  # a well-formed UUID


# --- first enrollment -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(Deduplication))
def test_first_enrollment_is_enrolled_in_every_mode(mode):
    state, decision = enroll([], VIP, mode, "f1", NOW)

    assert decision == EnrollmentDecision("enrolled", enrollment_id("f1"))
    assert state == [Enrollment(enrollment_id("f1"), "vip-welcome", "f1", NOW, NOW + timedelta(days=30))]


def test_enrollment_without_max_duration_never_ends():
    state, decision = enroll([], ONBOARDING, SKIP, "f1", NOW)

    assert decision.status == "enrolled"
    assert state[0].ends_at is None
    assert state[0].active(NOW + timedelta(days=365 * 50))


def test_fractional_max_duration_days():
    journey = compile_journey({"id": "short", "maxDurationDays": 0.5})
    state, _ = enroll([], journey, SKIP, "f1", NOW)
    assert state[0].ends_at == NOW + timedelta(hours=12)


def test_enroll_does_not_mutate_the_given_list():
    before = enrolled(VIP, "f1")
    snapshot = list(before)
    enroll(before, VIP, MULTIPLE, "f2", NOW)
    enroll(before, VIP, RESTART, "f3", NOW)
    assert before == snapshot


# --- skip_if_active -------------------------------------------------------------------------


def test_skip_if_active_skips_while_an_enrollment_is_active():
    state = enrolled(VIP, "f1")
    later = NOW + timedelta(days=1)

    new_state, decision = enroll(state, VIP, SKIP, "f2", later)

    assert decision == EnrollmentDecision("skipped", enrollment_id("f1"))
    assert new_state == state
    assert all(e.enrollment_id != enrollment_id("f2") for e in new_state)


def test_skip_if_active_reports_the_first_active_enrollment_when_several_exist():
    state = enrolled(VIP, "f1", "f2")  # allow_multiple earlier
    _, decision = enroll(state, VIP, SKIP, "f3", NOW)
    assert decision == EnrollmentDecision("skipped", enrollment_id("f1"))


def test_skip_if_active_ignores_enrollments_in_other_journeys():
    state = enrolled(ONBOARDING, "f1")

    new_state, decision = enroll(state, VIP, SKIP, "f2", NOW)

    assert decision == EnrollmentDecision("enrolled", enrollment_id("f2"))
    assert [e.journey_id for e in new_state] == ["onboarding", "vip-welcome"]


def test_skip_if_active_enrolls_again_after_the_enrollment_ended():
    state = enrolled(VIP, "f1")
    state, ended = end(state, "vip-welcome", enrollment_id("f1"), NOW)
    assert len(ended) == 1

    new_state, decision = enroll(state, VIP, SKIP, "f2", NOW)

    assert decision == EnrollmentDecision("enrolled", enrollment_id("f2"))
    assert [e.firing_id for e in new_state] == ["f2"]


# --- restart --------------------------------------------------------------------------------


def test_restart_ends_the_active_enrollment_and_starts_a_new_one():
    state = enrolled(VIP, "f1")
    later = NOW + timedelta(days=2)

    new_state, decision = enroll(state, VIP, RESTART, "f2", later)

    assert decision == EnrollmentDecision("restarted", enrollment_id("f2"))
    assert new_state == [Enrollment(enrollment_id("f2"), "vip-welcome", "f2", later, later + timedelta(days=30))]


def test_restart_ends_every_active_enrollment_in_the_journey_but_not_others():
    state = enrolled(VIP, "f1", "f2") + enrolled(ONBOARDING, "o1")

    new_state, decision = enroll(state, VIP, RESTART, "f3", NOW)

    assert decision.status == "restarted"
    assert sorted((e.journey_id, e.firing_id) for e in new_state) == [("onboarding", "o1"), ("vip-welcome", "f3")]


def test_restart_without_an_active_enrollment_is_a_plain_enrollment():
    state = enrolled(ONBOARDING, "o1")
    new_state, decision = enroll(state, VIP, RESTART, "f1", NOW)
    assert decision == EnrollmentDecision("enrolled", enrollment_id("f1"))
    assert len(new_state) == 2


# --- allow_multiple -------------------------------------------------------------------------


def test_allow_multiple_runs_enrollments_side_by_side():
    state = enrolled(VIP, "f1")

    new_state, decision = enroll(state, VIP, MULTIPLE, "f2", NOW + timedelta(hours=1))

    assert decision == EnrollmentDecision("enrolled", enrollment_id("f2"))
    assert [e.enrollment_id for e in new_state] == [enrollment_id("f1"), enrollment_id("f2")]
    assert len({e.enrollment_id for e in new_state}) == 2
    assert new_state[1].started_at == NOW + timedelta(hours=1)


# --- replays ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(Deduplication))
def test_replayed_firing_changes_nothing_and_returns_its_own_enrollment(mode):
    state, first = enroll([], VIP, mode, "f1", NOW)

    replay_state, replay = enroll(state, VIP, mode, "f1", NOW + timedelta(minutes=5))

    assert replay_state == state
    assert replay.enrollment_id == first.enrollment_id == enrollment_id("f1")
    assert replay.status == "enrolled"


def test_replayed_restart_does_not_restart_again():
    state = enrolled(VIP, "f1")
    state, decision = enroll(state, VIP, RESTART, "f2", NOW + timedelta(hours=1))
    assert decision.status == "restarted"

    replay_state, replay = enroll(state, VIP, RESTART, "f2", NOW + timedelta(hours=2))

    assert replay_state == state  # started_at is not moved by the replay
    assert replay.enrollment_id == enrollment_id("f2")


def test_replay_of_an_earlier_firing_under_skip_if_active_is_not_skipped():
    state = enrolled(VIP, "f1", "f2")
    replay_state, replay = enroll(state, VIP, SKIP, "f2", NOW)
    assert replay == EnrollmentDecision("enrolled", enrollment_id("f2"))
    assert replay_state == state


def test_replayed_skipped_firing_is_skipped_again():
    state = enrolled(VIP, "f1")
    state, first = enroll(state, VIP, SKIP, "f2", NOW)
    again_state, again = enroll(state, VIP, SKIP, "f2", NOW)
    assert first == again == EnrollmentDecision("skipped", enrollment_id("f1"))
    assert again_state == state


# --- maxDurationDays ---------------------------------------------------------------------------


def test_enrollment_older_than_max_duration_no_longer_blocks_skip_if_active():
    state = enrolled(VIP, "f1")
    later = NOW + timedelta(days=30, seconds=1)

    new_state, decision = enroll(state, VIP, SKIP, "f2", later)

    assert decision == EnrollmentDecision("enrolled", enrollment_id("f2"))
    assert [e.firing_id for e in new_state] == ["f2"]  # the expired one is dropped


def test_enrollment_ends_exactly_when_max_duration_passes():
    state = enrolled(VIP, "f1")
    assert state[0].active(NOW + timedelta(days=30) - timedelta(microseconds=1))
    assert not state[0].active(NOW + timedelta(days=30))
    _, decision = enroll(state, VIP, SKIP, "f2", NOW + timedelta(days=30))
    assert decision.status == "enrolled"


def test_enrollment_within_max_duration_still_blocks():
    state = enrolled(VIP, "f1")
    _, decision = enroll(state, VIP, SKIP, "f2", NOW + timedelta(days=29, hours=23))
    assert decision == EnrollmentDecision("skipped", enrollment_id("f1"))


def test_without_max_duration_an_old_enrollment_still_blocks():
    state = enrolled(ONBOARDING, "f1")
    _, decision = enroll(state, ONBOARDING, SKIP, "f2", NOW + timedelta(days=3650))
    assert decision == EnrollmentDecision("skipped", enrollment_id("f1"))


def test_restart_after_expiry_is_enrolled_not_restarted():
    state = enrolled(VIP, "f1")
    _, decision = enroll(state, VIP, RESTART, "f2", NOW + timedelta(days=31))
    assert decision.status == "enrolled"


# --- end ----------------------------------------------------------------------------------


def test_end_by_enrollment_id_ends_only_that_enrollment():
    state = enrolled(VIP, "f1", "f2")

    still, ended = end(state, "vip-welcome", enrollment_id("f1"), NOW)

    assert [e.firing_id for e in ended] == ["f1"]
    assert [e.firing_id for e in still] == ["f2"]


def test_end_without_enrollment_id_ends_every_enrollment_in_the_journey():
    state = enrolled(VIP, "f1", "f2")

    still, ended = end(state, "vip-welcome", None, NOW)

    assert still == []
    assert [e.firing_id for e in ended] == ["f1", "f2"]


def test_ending_one_journey_leaves_another_journeys_enrollment():
    state = enrolled(VIP, "f1") + enrolled(ONBOARDING, "o1")

    still, ended = end(state, "vip-welcome", None, NOW)

    assert [e.journey_id for e in ended] == ["vip-welcome"]
    assert [(e.journey_id, e.firing_id) for e in still] == [("onboarding", "o1")]


def test_end_with_an_id_from_another_journey_ends_nothing():
    state = enrolled(VIP, "f1") + enrolled(ONBOARDING, "o1")
    still, ended = end(state, "onboarding", enrollment_id("f1"), NOW)
    assert ended == []
    assert still == state


def test_end_with_an_unknown_id_ends_nothing():
    state = enrolled(VIP, "f1")
    still, ended = end(state, "vip-welcome", enrollment_id("never"), NOW)
    assert (still, ended) == (state, [])


def test_end_ignores_and_drops_expired_enrollments():
    state = enrolled(VIP, "f1") + enrolled(ONBOARDING, "o1")
    still, ended = end(state, "vip-welcome", None, NOW + timedelta(days=31))
    assert ended == []  # already over by itself
    assert [e.firing_id for e in still] == ["o1"]


# --- serialisation ----------------------------------------------------------------------------


@pytest.mark.parametrize("journey", [VIP, ONBOARDING], ids=["with-limit", "no-limit"])
def test_enrollment_json_round_trip(journey):
    original = enrolled(journey, "f1")[0]

    data = original.to_json()
    restored = Enrollment.from_json(json.loads(json.dumps(data)))

    assert restored == original
    assert restored.started_at.tzinfo is not None
    assert set(data) == {"enrollmentId", "journeyId", "firingId", "startedAt", "endsAt"}
    assert data["enrollmentId"] == enrollment_id("f1")
    assert data["startedAt"] == NOW.isoformat()


def test_enrollment_without_end_serialises_end_as_null():
    data = enrolled(ONBOARDING, "f1")[0].to_json()
    assert data["endsAt"] is None
    assert Enrollment.from_json(data).ends_at is None


def test_from_json_accepts_a_missing_end():
    data = enrolled(ONBOARDING, "f1")[0].to_json()
    del data["endsAt"]
    assert Enrollment.from_json(data).ends_at is None


# --- compile_journey ----------------------------------------------------------------------------


def test_compile_journey_contract_example():
    journey = compile_journey({"id": "vip-welcome", "name": "...", "maxDurationDays": 30}, key="vip-welcome")
    assert journey.id == "vip-welcome"
    assert journey.name == "..."
    assert journey.max_duration_days == 30


@pytest.mark.parametrize("value", [
    json.dumps({"id": "vip-welcome", "maxDurationDays": 7}),
    json.dumps({"id": "vip-welcome", "maxDurationDays": 7}).encode(),
], ids=["str", "bytes"])
def test_compile_journey_accepts_json_text(value):
    assert compile_journey(value).max_duration_days == 7


def test_compile_journey_defaults():
    journey = compile_journey({"id": "j"})
    assert journey.name == ""
    assert journey.max_duration_days is None


@pytest.mark.parametrize("bad_id", ["", "-leading-dash", "has space", "a/b", "x" * 129, "é"])
def test_compile_journey_rejects_ids_outside_the_pattern(bad_id):
    errors = journey_errors({"id": bad_id})
    assert any("id" in e for e in errors)


@pytest.mark.parametrize("days", [0, -1, -0.5, 36601, math.inf, math.nan])
def test_compile_journey_requires_a_positive_finite_max_duration(days):
    errors = journey_errors({"id": "j", "maxDurationDays": days})
    assert any("maxDurationDays" in e for e in errors)


@pytest.mark.parametrize("days", ["30", True, [30], {"days": 30}])
def test_compile_journey_is_strict_about_max_duration_type(days):
    errors = journey_errors({"id": "j", "maxDurationDays": days})
    assert any("maxDurationDays" in e for e in errors)


@pytest.mark.parametrize("extra", [{"max_duration_days": 30}, {"steps": []}, {"maxDurationdays": 3}])
def test_compile_journey_rejects_unknown_fields(extra):
    errors = journey_errors({"id": "j", **extra})
    assert any(next(iter(extra)) in e for e in errors)


def test_compile_journey_rejects_a_key_that_does_not_match_the_id():
    with pytest.raises(InvalidDefinition) as info:
        compile_journey({"id": "vip-welcome"}, key="other")
    assert info.value.trigger_id == "vip-welcome"
    assert any("does not match" in e and "other" in e for e in info.value.errors)


def test_compile_journey_names_the_key_when_the_id_is_missing():
    with pytest.raises(InvalidDefinition) as info:
        compile_journey({"name": "x"}, key="from-key")
    assert info.value.trigger_id == "from-key"


@pytest.mark.parametrize("value", [b"{not json", b"[1, 2]", b"null"])
def test_compile_journey_rejects_values_that_are_not_json_objects(value):
    journey_errors(value, key="j")
