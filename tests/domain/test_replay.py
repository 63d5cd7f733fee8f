"""Dead-letter replay: selection, what each kind of dead letter re-publishes, and --since."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.domain.deadletters import action_dead_letter, event_dead_letter, row_load_dead_letter
from app.domain.replay import Replay, Selection, Skip, describe, parse_since, replay_of

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
ORIGIN = {"topic": "p.actions.webhook", "partition": 3, "offset": 17}
COMMAND = {"firingId": "f-1", "triggerId": "t-1", "customerId": "c-1", "eventId": "e-1",
           "action": {"type": "webhook", "url": "https://h.example.com/x?token=abc"}, "event": {"amount": 3}}


def action_letter(command: dict[str, Any] | None = COMMAND, at: datetime = NOW, raw: bytes | None = None,
                  reason: str = "HTTP 500") -> dict[str, Any]:
    return action_dead_letter("webhook", reason, at.isoformat(), [], command, ORIGIN, raw)


def test_an_action_dead_letter_replays_its_command_keyed_by_customer_to_its_partition() -> None:
    replay = replay_of(action_letter())
    assert isinstance(replay, Replay)
    assert (replay.topic, replay.partition, replay.key) == ("p.actions.webhook", 3, b"c-1")
    assert json.loads(replay.value) == COMMAND


def test_an_event_dead_letter_replays_its_exact_bytes_and_key() -> None:
    raw = b'{"type": "x", "customerId": "c-9"}\xff'  # not even UTF-8: the base64 copy is exact
    letter = event_dead_letter("malformed", "p.events.streaming", 1, 5, "c-9", raw, NOW.isoformat())
    assert replay_of(letter) == Replay("p.events.streaming", 1, b"c-9", raw)


def test_an_event_without_a_key_replays_without_one() -> None:
    letter = event_dead_letter("malformed", "p.events.streaming", 0, 5, None, b"{}", NOW.isoformat())
    assert replay_of(letter) == Replay("p.events.streaming", 0, None, b"{}")


def test_truncated_originals_are_skipped_saying_why() -> None:
    huge = b"x" * 70_000
    letter = event_dead_letter("too big", "p.events.streaming", 0, 1, "c", huge, NOW.isoformat())
    skip = replay_of(letter)
    assert isinstance(skip, Skip) and skip.reason.startswith("truncated") and "70000 bytes" in skip.reason
    big_command = {**COMMAND, "event": {"blob": "y" * 70_000}}
    assert isinstance(replay_of(action_letter(big_command)), Skip)


@pytest.mark.parametrize(("letter", "reason"), [
    (action_dead_letter("webhook", "malformed", NOW.isoformat(), [], None, ORIGIN, b"{oops"),
     "not a valid action command"),
    (row_load_dead_letter("refused", "customers", "c-1", {"a": 1}, NOW.isoformat(),
                          {"topic": "p.schema.rows", "partition": 0, "offset": 1}), "rows load"),
    ({"reason": "x"}, "source topic"),
    ("a string", "source topic"),
    ({"topic": "t", "valueBase64": "***"}, "not valid base64"),
    ({"topic": "t"}, "no original value"),
])
def test_what_cannot_be_replayed_is_skipped_with_a_reason(letter: Any, reason: str) -> None:
    skip = replay_of(letter)
    assert isinstance(skip, Skip) and reason in skip.reason


def test_selection_by_source_topic_trigger_and_time() -> None:
    letter = action_letter(at=NOW - timedelta(hours=1))
    assert Selection().selects(letter)
    assert Selection(topics=frozenset({"p.actions.webhook"})).selects(letter)
    assert not Selection(topics=frozenset({"p.events.streaming"})).selects(letter)
    assert Selection(trigger_id="t-1").selects(letter)
    assert not Selection(trigger_id="t-2").selects(letter)
    assert Selection(since=NOW - timedelta(hours=2)).selects(letter)
    assert not Selection(since=NOW - timedelta(minutes=30)).selects(letter)
    event = event_dead_letter("bad", "p.events.streaming", 0, 1, "c", b"{}", NOW.isoformat())
    assert not Selection(trigger_id="t-1").selects(event)  # an event has no trigger
    assert not Selection(since=NOW).selects({"topic": "t", "at": "not a time"})


@pytest.mark.parametrize(("text", "expected"), [
    ("2h", NOW - timedelta(hours=2)),
    ("30m", NOW - timedelta(minutes=30)),
    ("90s", NOW - timedelta(seconds=90)),
    ("7d", NOW - timedelta(days=7)),
    ("1h30m", NOW - timedelta(minutes=90)),
    ("1.5h", NOW - timedelta(minutes=90)),
    ("2026-12-01T10:00:00Z", datetime(2026, 12, 1, 10, 0, tzinfo=UTC)),
    ("2026-12-01T10:00:00+02:00", datetime(2026, 12, 1, 8, 0, tzinfo=UTC)),
])
def test_since_is_an_iso_time_or_a_duration_back_from_now(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "2026-12-01T10:00:00", "2x", "", "h"])
def test_a_bad_since_names_the_option(text: str) -> None:
    with pytest.raises(ValueError, match="--since"):
        parse_since(text, NOW)


def test_describe_names_the_letter_without_key_value_or_secrets() -> None:
    line = describe(action_letter(reason="gave up: https://u:pw@h.example.com/x?token=abc"))
    assert "p.actions.webhook/3@17" in line and "triggerId=t-1" in line and "firingId=f-1" in line
    assert "pw" not in line and "abc" not in line and "c-1" not in line
    raw = base64.b64encode(b"secret-value").decode()
    assert "secret" not in describe({"topic": "t", "valueBase64": raw, "value": "secret-value", "key": "secret"})
