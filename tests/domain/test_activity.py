"""What the console shows: compile errors by field, firings per trigger in the last hour,
records selected by trigger and customer, secrets masked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.domain.activity import field_errors, firing_counts, selects, shown
from app.domain.definitions import compile_definition
from app.errors import InvalidDefinition

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.mark.parametrize(("error", "field", "message"), [
    ("conditions[0]: invalid expression 'evnt.x': unknown name 'evnt'", "conditions[0]",
     "invalid expression 'evnt.x': unknown name 'evnt'"),
    ("action.url: Input should be a valid URL", "action.url", "Input should be a valid URL"),
    ("action.headers.X-Key: header value must be printable", "action.headers.X-Key", "header value must be printable"),
    ("priority: Input should be less than or equal to 100", "priority", "Input should be less than or equal to 100"),
    ("a scheduled trigger needs a schedule", "definition", "a scheduled trigger needs a schedule"),
    ("definition: 2000000 bytes as JSON; the limit is 1000000 bytes", "definition",
     "2000000 bytes as JSON; the limit is 1000000 bytes"),
])
def test_each_error_names_the_field_it_is_about(error: str, field: str, message: str) -> None:
    assert field_errors([error]) == [{"field": field, "message": message}]


def test_the_compilers_own_errors_map_to_fields() -> None:
    with pytest.raises(InvalidDefinition) as raised:
        compile_definition({"id": "t", "source": "streaming", "eventType": "purchase", "priority": 101,
                            "conditions": ["event.amount > 1", "evnt.amount > 1"],
                            "action": {"type": "webhook", "url": "not a url"}})
    fields = {error["field"] for error in field_errors(raised.value.errors)}
    assert fields == {"priority", "conditions[1]", "action.url"}


def firing(trigger_id: str, minutes_ago: float) -> dict[str, str]:
    at = NOW - timedelta(minutes=minutes_ago)
    return {"triggerId": trigger_id, "firedAt": at.isoformat().replace("+00:00", "Z")}


def test_firings_are_counted_per_trigger_within_the_hour() -> None:
    firings = [firing("a", 1), firing("a", 59), firing("a", 61), firing("b", 30), {"triggerId": "c"}]
    counts = firing_counts(firings, NOW, HOUR, bounded_partitions_start=[])
    assert counts.counts == {"a": 2, "b": 1}
    assert counts.complete


def test_counts_say_when_a_bounded_read_may_not_reach_back_an_hour() -> None:
    assert not firing_counts([], NOW, HOUR, [NOW - timedelta(minutes=10)]).complete
    assert firing_counts([], NOW, HOUR, [NOW - timedelta(minutes=90), None]).complete


def test_records_are_selected_by_trigger_and_customer_at_the_top_or_in_the_command() -> None:
    suppression = {"triggerId": "t1", "customerId": "c1"}
    dead_letter = {"actionType": "webhook", "command": {"triggerId": "t2", "customerId": "c2"}}
    event_dead_letter = {"reason": "missing field", "key": "c3"}
    assert selects(suppression, "t1", "c1") and not selects(suppression, "t1", "c2")
    assert selects(dead_letter, "t2", None) and selects(dead_letter, None, "c2")
    assert not selects(dead_letter, "t1", None)
    assert selects(event_dead_letter, None, "c3") and not selects(event_dead_letter, "t1", None)
    assert selects("not json", None, None) and not selects("not json", "t1", None)


def test_shown_records_mask_secrets_in_urls_and_leave_out_the_base64_copy() -> None:
    record = {"reason": "HTTP 500 from https://u:p@h.example/x?key=1", "valueBase64": "e30=", "value": "{}",
              "command": {"action": {"type": "webhook", "url": "https://h.example/x?token=abc"}},
              "action": {"type": "fire_recommend", "deliveryUrl": "https://h.example/y?k=v"}}
    masked = shown(record)
    assert "valueBase64" not in masked
    assert masked["command"]["action"]["url"] == "https://h.example/x?token=***"
    assert masked["action"]["deliveryUrl"] == "https://h.example/y?k=***"
    assert "u:p" not in masked["reason"] and "key=1" not in masked["reason"]
    assert record["command"]["action"]["url"].endswith("token=abc")  # the record itself is not changed
