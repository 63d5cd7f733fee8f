"""Compiling trigger definitions: the contract's shape, defaults, and whole-definition rejection."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.domain.definitions import CompiledTrigger, compile_definition
from app.domain.models import (
    Deduplication,
    EnrollJourneyAction,
    Source,
    UpdateAttributeAction,
    WebhookAction,
    is_valid_id,
)
from app.errors import InvalidDefinition

CONTRACT_EXAMPLE = {
    "id": "high-value-transaction",
    "name": "High-value transaction follow-up",
    "enabled": True,
    "source": "streaming",
    "eventType": "transaction",
    "filters": {"channel": "web"},
    "conditions": ["event.amount > 1000", "customer.segment != 'vip'"],
    "action": {"type": "webhook", "url": "https://example.test/hook"},
    "cooldownMinutes": 60,
    "priority": 75,
}

MINIMAL = {
    "id": "t1",
    "source": "streaming",
    "eventType": "transaction",
    "action": {"type": "enroll_journey", "journeyId": "vip-welcome"},
}


def definition(**changes: Any) -> dict[str, Any]:
    data = {**MINIMAL, **changes}
    return {k: v for k, v in data.items() if v is not None}


def errors_of(value: Any, key: str | None = None) -> list[str]:
    with pytest.raises(InvalidDefinition) as info:
        compile_definition(value, key)
    assert info.value.errors, "InvalidDefinition must say why"
    return info.value.errors


@pytest.mark.parametrize(
    "value",
    [CONTRACT_EXAMPLE, json.dumps(CONTRACT_EXAMPLE), json.dumps(CONTRACT_EXAMPLE).encode()],
    ids=["dict", "str", "bytes"],
)
def test_contract_example_compiles(value):
    trigger = compile_definition(value, key="high-value-transaction")
    assert isinstance(trigger, CompiledTrigger)
    d = trigger.definition
    assert trigger.id == "high-value-transaction"
    assert (d.source, d.event_type) == (Source.STREAMING, "transaction")
    assert d.filters == {"channel": "web"}
    assert [c.text for c in trigger.conditions] == CONTRACT_EXAMPLE["conditions"]
    assert isinstance(d.action, WebhookAction)
    assert str(d.action.url) == "https://example.test/hook"
    assert (d.cooldown_minutes, d.priority) == (60, 75)
    assert trigger.sort_key == (-75, "high-value-transaction")


def test_defaults():
    trigger = compile_definition(MINIMAL)
    d = trigger.definition
    assert d.enabled is True
    assert d.cooldown_minutes == 0
    assert d.priority == 50
    assert d.filters == {}
    assert trigger.conditions == ()
    assert d.schedule is None
    assert isinstance(d.action, EnrollJourneyAction)
    assert d.action.deduplication is Deduplication.SKIP_IF_ACTIVE


def test_update_attribute_defaults_to_customers_table_and_commands_carry_the_attribute_texts():
    trigger = compile_definition(
        definition(action={"type": "update_attribute",
                           "attributes": {"tier": "'gold'", "lastBigAmount": "event.amount"}})
    )
    assert isinstance(trigger.definition.action, UpdateAttributeAction)
    assert trigger.definition.action.table == "customers"
    assert trigger.command_action["attributes"] == {"tier": "'gold'", "lastBigAmount": "event.amount"}


@pytest.mark.parametrize(
    "action",
    [
        {"type": "enroll_journey", "journeyId": "j", "deduplication": "restart"},
        {"type": "enroll_journey", "journeyId": "j", "deduplication": "allow_multiple"},
        {"type": "fire_recommend", "decisionFlowId": "nbo"},
        {"type": "fire_recommend", "decisionFlowId": "nbo", "channel": "email",
         "deliveryUrl": "https://example.test/r"},
        {"type": "webhook", "url": "http://example.test/h", "headers": {"X-A": "1"},
         "secret": "s3cret", "payload": {"k": "v"}},
        {"type": "update_attribute", "table": "accounts", "attributes": {"a": "1"}},
    ],
)
def test_every_action_type_compiles(action):
    assert compile_definition(definition(action=action)).definition.action.type == action["type"]


@pytest.mark.parametrize("priority", [1, 100])
def test_priority_bounds_are_inclusive(priority):
    assert compile_definition(definition(priority=priority)).definition.priority == priority


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"priority": 0}, "priority"),
        ({"priority": 101}, "priority"),
        ({"cooldownMinutes": -1}, "cooldownMinutes"),
        ({"source": "kafka"}, "source"),
        ({"eventType": ""}, "eventType"),
        ({"action": {"type": "sms"}}, "action"),
        ({"action": {"type": "enroll_journey"}}, "journeyId"),
        ({"action": {"type": "enroll_journey", "journeyId": ""}}, "journeyId"),
        ({"action": {"type": "enroll_journey", "journeyId": "j", "deduplication": "twice"}},
         "deduplication"),
        ({"action": {"type": "fire_recommend"}}, "decisionFlowId"),
        ({"action": {"type": "webhook"}}, "url"),
        ({"action": {"type": "webhook", "url": "ftp://example.test"}}, "url"),
        ({"action": {"type": "update_attribute"}}, "attributes"),
        ({"action": {"type": "update_attribute", "attributes": {}}}, "attributes"),
        ({"action": {"type": "enroll_journey", "journeyId": "j", "extra": 1}}, "extra"),
        ({"colour": "red"}, "colour"),
        ({"conditions": "event.amount > 1"}, "conditions"),
        ({"filters": {"channel": {"nested": 1}}}, "filters"),
    ],
)
def test_invalid_fields_are_rejected(changes, where):
    errors = errors_of(definition(**changes))
    assert any(where in e for e in errors), errors


@pytest.mark.parametrize("missing", ["id", "source", "eventType", "action"])
def test_required_fields(missing):
    data = {k: v for k, v in MINIMAL.items() if k != missing}
    assert any(missing in e for e in errors_of(data))


def test_scheduled_trigger_needs_a_schedule():
    assert any("needs a schedule" in e for e in errors_of(definition(source="scheduled")))


@pytest.mark.parametrize("source", ["streaming", "cdc", "schema_table", "outcome"])
def test_schedule_refused_unless_scheduled(source):
    errors = errors_of(definition(source=source, schedule="daily"))
    assert any("only allowed" in e for e in errors)


@pytest.mark.parametrize(
    ("schedule", "cron", "timezone"),
    [
        ("daily", "0 0 * * *", "UTC"),
        ("weekly", "0 0 * * 1", "UTC"),
        ("0 9 * * 1", "0 9 * * 1", "UTC"),
        ({"cron": "daily"}, "0 0 * * *", "UTC"),
        ({"cron": "0 9 * * 1", "timezone": "Europe/Berlin"}, "0 9 * * 1", "Europe/Berlin"),
        ({"cron": "weekly", "timezone": "America/New_York"}, "0 0 * * 1", "America/New_York"),
    ],
)
def test_schedule_forms(schedule, cron, timezone):
    d = compile_definition(definition(source="scheduled", schedule=schedule)).definition
    assert (d.schedule.cron, d.schedule.timezone) == (cron, timezone)


@pytest.mark.parametrize(
    ("schedule", "where"),
    [
        ("61 * * * *", "cron"),
        ("0 0 * * * *", "cron"),
        ("* * *", "cron"),
        ("monthly", "cron"),
        ("", "cron"),
        ({"cron": "0 9 * * 1", "timezone": "Mars/Olympus"}, "timezone"),
        ({"cron": "0 9 * * 1", "timezone": ""}, "timezone"),
        ({"cron": "0 9 * * 1", "timezone": "../etc/passwd"}, "timezone"),
        ({"timezone": "UTC"}, "cron"),
        ({"cron": "daily", "jitter": 5}, "jitter"),
    ],
)
def test_bad_schedules_are_rejected(schedule, where):
    errors = errors_of(definition(source="scheduled", schedule=schedule))
    assert any(where in e for e in errors), errors


def test_bad_condition_makes_the_definition_invalid():
    errors = errors_of(definition(conditions=["event.amount > 1", "event.__class__"]))
    assert errors == [errors[0]]
    assert errors[0].startswith("conditions[1]:")


def test_every_bad_condition_is_listed():
    errors = errors_of(definition(conditions=["os.system('x')", "event.amount > 1", "lambda: 1"]))
    assert [e.split(":")[0] for e in errors] == ["conditions[0]", "conditions[2]"]


def test_bad_attribute_expression_is_rejected():
    action = {"type": "update_attribute", "attributes": {"tier": "'gold'", "x": "__import__('os')"}}
    errors = errors_of(definition(action=action))
    assert len(errors) == 1 and errors[0].startswith("action.attributes[1]:")


def test_bad_conditions_and_attributes_are_listed_together():
    action = {"type": "update_attribute", "attributes": {"x": "evnt.a"}}
    errors = errors_of(definition(conditions=["1 +"], action=action))
    assert [e.split(":")[0] for e in errors] == ["conditions[0]", "action.attributes[0]"]


def test_key_must_match_id():
    with pytest.raises(InvalidDefinition) as info:
        compile_definition(MINIMAL, key="other")
    assert info.value.trigger_id == "t1"
    assert any("does not match the message key" in e for e in info.value.errors)


def test_key_mismatch_and_bad_condition_are_both_listed():
    errors = errors_of(definition(conditions=["os"]), key="other")
    assert len(errors) == 2


def test_matching_key_is_accepted():
    assert compile_definition(MINIMAL, key="t1").id == "t1"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", "not list"),
        (b"null", "not NoneType"),
        (b'"text"', "not str"),
        (b"[" * 100_000, "not valid JSON"),
    ],
)
def test_non_object_input_is_rejected(raw, reason):
    with pytest.raises(InvalidDefinition) as info:
        compile_definition(raw, key="k1")
    assert info.value.trigger_id == "k1"
    assert any(reason in e for e in info.value.errors)


def test_error_carries_the_trigger_id_from_the_body():
    with pytest.raises(InvalidDefinition) as info:
        compile_definition(definition(priority=0))
    assert info.value.trigger_id == "t1"


@pytest.mark.parametrize(
    ("trigger_id", "valid"),
    [
        ("a", True),
        ("high-value.v2:eu_1", True),
        ("0abc", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("", False),
        ("-leading-dash", False),
        (".hidden", False),
        ("has space", False),
        ("slash/id", False),
        ("trailing-newline\n", False),
        ("ünicode", False),
    ],
)
def test_id_pattern(trigger_id, valid):
    assert is_valid_id(trigger_id) is valid
    if valid:
        assert compile_definition(definition(id=trigger_id)).id == trigger_id
    else:
        assert any("id" in e for e in errors_of(definition(id=trigger_id)))


def test_public_dict_masks_the_webhook_secret():
    action = {"type": "webhook", "url": "https://example.test/h", "secret": "s3cret"}
    public = compile_definition(definition(action=action)).definition.public_dict()
    assert "s3cret" not in json.dumps(public)
    assert public["eventType"] == "transaction"


# -- maxPerSecond ---------------------------------------------------------------------------------


@pytest.mark.parametrize("action", [
    {"type": "webhook", "url": "https://hooks.example/in", "maxPerSecond": 20},
    {"type": "fire_recommend", "decisionFlowId": "nbo", "deliveryUrl": "https://r.example/", "maxPerSecond": 1},
    {"type": "webhook", "url": "https://hooks.example/in", "maxPerSecond": 100_000},
])
def test_max_per_second_is_carried_on_the_command(action):
    assert compile_definition(definition(action=action)).command_action["maxPerSecond"] == action["maxPerSecond"]


@pytest.mark.parametrize(("action", "error"), [
    ({"type": "webhook", "url": "https://h.example/", "maxPerSecond": 0}, "action.maxPerSecond"),
    ({"type": "webhook", "url": "https://h.example/", "maxPerSecond": 100_001}, "action.maxPerSecond"),
    ({"type": "webhook", "url": "https://h.example/", "maxPerSecond": 2.5}, "action.maxPerSecond"),
    ({"type": "webhook", "url": "https://h.example/", "maxPerSecond": "20"}, "action.maxPerSecond"),
    ({"type": "fire_recommend", "decisionFlowId": "nbo", "maxPerSecond": 5},
     "maxPerSecond: only allowed together with deliveryUrl"),
    ({"type": "enroll_journey", "journeyId": "j", "maxPerSecond": 5}, "maxPerSecond"),
])
def test_a_bad_max_per_second_names_the_field(action, error):
    assert any(error in e for e in errors_of(definition(action=action)))
