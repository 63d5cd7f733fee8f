"""Definition validation gaps: unsafe webhook headers, repeated JSON keys and oversize fields are
refused, each error naming the field; values at the limits are still accepted."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.cli.config_files import read_config
from app.domain import limits
from app.domain.definitions import (
    compile_decision_flow,
    compile_definition,
    compile_journey,
    compile_schema_table,
)
from app.domain.intake import DuplicateKeys, load_unique_json, strict_json
from app.errors import InvalidDefinition
from app.web.api import ApiError, parse_json_body

ROOT = Path(__file__).resolve().parents[2]

TRIGGER: dict[str, Any] = {
    "id": "t1", "source": "streaming", "eventType": "transaction",
    "action": {"type": "webhook", "url": "https://example.test/hook"},
}
FLOW: dict[str, Any] = {"id": "f1", "offers": [{"id": "o1", "score": "1"}]}
TABLE: dict[str, Any] = {"name": "accounts", "columns": {"tier": "string"}}
JOURNEY: dict[str, Any] = {"id": "j1", "name": "Welcome"}


def trigger(**changes: Any) -> dict[str, Any]:
    return {**TRIGGER, **changes}


def webhook(**changes: Any) -> dict[str, Any]:
    return trigger(action={**TRIGGER["action"], **changes})


def update(attributes: dict[str, str], **changes: Any) -> dict[str, Any]:
    return trigger(action={"type": "update_attribute", "attributes": attributes, **changes})


def flow(**changes: Any) -> dict[str, Any]:
    return {**FLOW, **changes}


def offer(**changes: Any) -> dict[str, Any]:
    return flow(offers=[{"id": "o1", **changes}])


def headers(**values: str) -> dict[str, Any]:
    return webhook(headers=values)


def errors_of(compile_: Callable[..., Any], value: Any) -> list[str]:
    with pytest.raises(InvalidDefinition) as info:
        compile_(value)
    return info.value.errors


def many(count: int, prefix: str = "k") -> list[str]:
    return [f"{prefix}{index}" for index in range(count)]


# (compile function, definition, the field the error must name, what it must say)
REFUSED = [
    # webhook headers: what the sender sets, what breaks the request, and unsafe text
    *[(compile_definition, webhook(headers={name: "x"}), f"action.headers.{name}", "set by the engine")
      for name in ("Host", "host", "Content-Length", "Transfer-Encoding", "Connection", "Content-Type",
                   "content-type", "Idempotency-Key", "webhook-id", "Webhook-Timestamp", "webhook-signature",
                   "Upgrade", "TE", "Expect", "Keep-Alive")],
    (compile_definition, headers(**{"X-Team": "a\r\nInjected: yes"}), "action.headers.X-Team", "control characters"),
    (compile_definition, headers(**{"X-Team": "a\nb"}), "action.headers.X-Team", "control characters"),
    (compile_definition, headers(**{"X-Team": "a\rb"}), "action.headers.X-Team", "control characters"),
    (compile_definition, headers(**{"X-Team": "a\x00b"}), "action.headers.X-Team", "NUL"),
    (compile_definition, headers(**{"X-Team": "a\x01b"}), "action.headers.X-Team", "control characters"),
    (compile_definition, headers(**{"X-Team": "a\x7fb"}), "action.headers.X-Team", "control characters"),
    (compile_definition, headers(**{"X-Team": " padded"}), "action.headers.X-Team", "whitespace"),
    (compile_definition, headers(**{"X-Team": "padded\t"}), "action.headers.X-Team", "whitespace"),
    (compile_definition, headers(**{"X-Team": "caf\u00e9"}), "action.headers.X-Team", "printable ASCII"),
    (compile_definition, headers(**{"X Team": "x"}), "action.headers.X Team", "HTTP token"),
    (compile_definition, headers(**{"X-Team:": "x"}), "action.headers.X-Team:", "HTTP token"),
    (compile_definition, headers(**{"": "x"}), "action.headers.", "HTTP token"),
    (compile_definition, headers(**{"X-\u00e9": "x"}), "action.headers.X-\u00e9", "HTTP token"),
    (compile_definition, headers(**{"X-Team": "a", "x-team": "b"}), "action.headers", "same header"),
    (compile_definition, headers(**{"X-" + "a" * 300: "x"}), "action.headers.X-" + "a" * 62 + "...",
     f"longer than {limits.MAX_HEADER_NAME_LENGTH}"),
    (compile_definition, headers(**{"X-Team": "v" * (limits.MAX_HEADER_VALUE_LENGTH + 1)}),
     "action.headers.X-Team", f"longer than {limits.MAX_HEADER_VALUE_LENGTH}"),
    (compile_definition, webhook(headers=dict.fromkeys(many(limits.MAX_HEADERS + 1, "X-"), "v")),
     "action.headers", f"at most {limits.MAX_HEADERS} items"),
    # sizes and counts of trigger fields
    (compile_definition, trigger(name="n" * (limits.MAX_NAME_LENGTH + 1)), "name",
     f"at most {limits.MAX_NAME_LENGTH} characters"),
    (compile_definition, trigger(eventType="e" * (limits.MAX_EVENT_TYPE_LENGTH + 1)), "eventType", "at most 256"),
    (compile_definition, trigger(filters=dict.fromkeys(many(limits.MAX_FILTERS + 1), 1)), "filters",
     f"at most {limits.MAX_FILTERS} items"),
    (compile_definition, trigger(filters={"tier": list(range(limits.MAX_FILTER_VALUES + 1))}), "filters.tier",
     f"more than {limits.MAX_FILTER_VALUES} values"),
    (compile_definition, trigger(filters={"tier": "t" * (limits.MAX_FILTER_TEXT_LENGTH + 1)}), "filters.tier",
     f"longer than {limits.MAX_FILTER_TEXT_LENGTH}"),
    (compile_definition, trigger(filters={"tier": ["ok", "t" * (limits.MAX_FILTER_TEXT_LENGTH + 1)]}),
     "filters.tier", "longer than"),
    (compile_definition, trigger(filters={"tier": {"nested": 1}}), "filters.tier", "string, number, boolean"),
    (compile_definition, trigger(filters={"tier": [[1]]}), "filters.tier", "string, number, boolean"),
    (compile_definition, trigger(filters={"f" * 300: 1}), "filters." + "f" * 64 + "...", "at most 256 characters"),
    (compile_definition, trigger(conditions=["1 == 1"] * (limits.MAX_CONDITIONS + 1)), "conditions",
     f"at most {limits.MAX_CONDITIONS} items"),
    (compile_definition, update(dict.fromkeys(many(limits.MAX_ATTRIBUTES + 1), "1")), "action.attributes",
     f"at most {limits.MAX_ATTRIBUTES} items"),
    (compile_definition, update({"a" * 257: "1"}), "action.attributes." + "a" * 64 + "...", "at most 256"),
    (compile_definition, update({"tier": "'x'"}, table="t" * 129), "action.table", "at most 128"),
    (compile_definition, webhook(url="https://example.test/" + "p" * limits.MAX_URL_LENGTH), "action.url",
     f"at most {limits.MAX_URL_LENGTH} characters"),
    (compile_definition, webhook(secret="s" * (limits.MAX_SECRET_LENGTH + 1)), "action.secret", "at most 1024"),
    (compile_definition, webhook(payload={"text": "x" * limits.MAX_PAYLOAD_BYTES}), "action.payload",
     f"larger than {limits.MAX_PAYLOAD_BYTES} bytes"),
    (compile_definition, webhook(payload=json.loads("[" * 17 + "]" * 17)), "action.payload",
     f"deeper than {limits.MAX_PAYLOAD_DEPTH} levels"),
    (compile_definition, webhook(payload=["{{ event.amount }}"] * (limits.MAX_PAYLOAD_PLACEHOLDERS + 1)),
     "action.payload", f"more than {limits.MAX_PAYLOAD_PLACEHOLDERS} placeholders"),
    (compile_definition, trigger(action={"type": "enroll_journey", "journeyId": "j" * 129}), "action.journeyId",
     "at most 128"),
    (compile_definition, trigger(action={"type": "fire_recommend", "decisionFlowId": "f" * 129}),
     "action.decisionFlowId", "at most 128"),
    (compile_definition, trigger(action={"type": "fire_recommend", "decisionFlowId": "f", "channel": "c" * 257}),
     "action.channel", "at most 256"),
    (compile_definition, trigger(action={"type": "fire_recommend", "decisionFlowId": "f",
                                         "deliveryUrl": "https://example.test/" + "p" * 2048}),
     "action.deliveryUrl", "at most 2048"),
    (compile_definition, trigger(source="scheduled", schedule={"cron": "0 " * 200}), "schedule.cron", "at most 256"),
    (compile_definition, trigger(source="scheduled", schedule={"cron": "daily", "timezone": "Z" * 65}),
     "schedule.timezone", "at most 64"),
    (compile_definition, trigger(name="n" * limits.MAX_DEFINITION_BYTES), "definition",
     f"the limit is {limits.MAX_DEFINITION_BYTES} bytes"),
    # the other definition kinds
    (compile_decision_flow, flow(name="n" * 201), "name", "at most 200"),
    (compile_decision_flow, flow(offers=[{"id": f"o{i}"} for i in range(limits.MAX_OFFERS + 1)]), "offers",
     f"at most {limits.MAX_OFFERS} items"),
    (compile_decision_flow, offer(conditions=["1 == 1"] * (limits.MAX_CONDITIONS + 1)), "offers.0.conditions",
     "at most 50 items"),
    (compile_decision_flow, offer(**dict.fromkeys(many(limits.MAX_OFFER_FIELDS + 1), 1)), "offers.0",
     f"more than {limits.MAX_OFFER_FIELDS} fields"),
    (compile_decision_flow, flow(offers=[{"id": "o" * (limits.MAX_OFFER_ID_LENGTH + 1)}]), "offers.0.id",
     "at most 256"),
    (compile_schema_table, {**TABLE, "columns": dict.fromkeys(many(limits.MAX_COLUMNS + 1), "string")}, "columns",
     f"at most {limits.MAX_COLUMNS} items"),
    (compile_schema_table, {**TABLE, "columns": {"c" * 257: "string"}}, "columns." + "c" * 64 + "...",
     "at most 256"),
    (compile_journey, {**JOURNEY, "name": "n" * 201}, "name", "at most 200"),
]


def _case_id(case: tuple[Any, ...]) -> str:
    return f"{case[0].__name__}:{case[2][:40]}:{case[3][:30]}"


@pytest.mark.parametrize(("compile_", "value", "field", "says"), REFUSED, ids=[_case_id(c) for c in REFUSED])
@pytest.mark.parametrize("form", ["dict", "bytes"])
def test_refused_with_the_field_named(compile_, value, field, says, form):
    errors = errors_of(compile_, value if form == "dict" else json.dumps(value).encode())
    named = [error for error in errors if error.startswith(f"{field}: ")]
    assert named, f"no error names {field!r}: {errors}"
    assert any(says in error for error in named), errors


# (compile function, definition): each field exactly at its limit, and ordinary headers
ACCEPTED = [
    (compile_definition, headers(**{"X-Team": "growth", "Authorization": "Bearer abc.def", "X-Tab": "a\tb",
                                    "X-Empty": "", "x-api-key": "k", "X_Odd.Name~1": "!#$%&'*+-.^_`|~\""})),
    (compile_definition, webhook(headers=dict.fromkeys(many(limits.MAX_HEADERS, "X-"), "v"))),
    (compile_definition, headers(**{"X-" + "a" * (limits.MAX_HEADER_NAME_LENGTH - 2): "v" * 4096})),
    (compile_definition, trigger(name="n" * limits.MAX_NAME_LENGTH, eventType="e" * 256)),
    (compile_definition, trigger(filters={**dict.fromkeys(many(limits.MAX_FILTERS - 1), 1),
                                          "tier": list(range(limits.MAX_FILTER_VALUES))})),
    (compile_definition, trigger(filters={"tier": "t" * limits.MAX_FILTER_TEXT_LENGTH, "f" * 256: None})),
    (compile_definition, trigger(conditions=["1 == 1"] * limits.MAX_CONDITIONS)),
    (compile_definition, update(dict.fromkeys(many(limits.MAX_ATTRIBUTES), "1"))),
    (compile_definition, webhook(payload=json.loads("[" * 16 + "]" * 16))),
    (compile_definition, webhook(payload=["{{ event.amount }}"] * limits.MAX_PAYLOAD_PLACEHOLDERS)),
    (compile_definition, webhook(url="https://example.test/" + "p" * (limits.MAX_URL_LENGTH - 21))),
    (compile_decision_flow, flow(offers=[{"id": f"o{i}", "score": "1"} for i in range(limits.MAX_OFFERS)])),
    (compile_decision_flow, offer(conditions=["1 == 1"] * limits.MAX_CONDITIONS,
                                  **dict.fromkeys(many(limits.MAX_OFFER_FIELDS, "x"), 1))),
    (compile_schema_table, {**TABLE, "columns": dict.fromkeys(many(limits.MAX_COLUMNS), "string")}),
    (compile_journey, {**JOURNEY, "name": "n" * limits.MAX_NAME_LENGTH}),
]


@pytest.mark.parametrize(("compile_", "value"), ACCEPTED,
                         ids=[f"{c.__name__}-{i}" for i, (c, _) in enumerate(ACCEPTED)])
def test_at_the_limits_accepted(compile_, value):
    compile_(value)
    compile_(json.dumps(value).encode())


# ------------------------------------------------------------------------ duplicate keys


def _repeat(text: str, key: str) -> bytes:
    """`text` (JSON) with its last `"key": <string or number>` written twice, which json.dumps
    cannot do."""
    last = list(re.finditer(rf'"{re.escape(key)}": ("(?:[^"\\]|\\.)*"|[-+.\w]+)', text))[-1]
    return (text[:last.end()] + ", " + last.group() + text[last.end():]).encode()


DUPLICATES = [
    (compile_definition, trigger(priority=50), "priority", "top level"),
    (compile_definition, trigger(filters={"channel": "web", "tier": "gold"}), "channel", "filters"),
    (compile_definition, headers(**{"X-Team": "a", "X-Other": "b"}), "X-Team", "action.headers"),
    (compile_definition, webhook(payload={"customer": {"id": "{{ event.customerId }}", "x": 1}}), "id",
     "action.payload.customer"),
    (compile_definition, update({"tier": "'gold'", "score": "1"}), "tier", "action.attributes"),
    (compile_definition, trigger(source="scheduled", schedule={"cron": "daily", "timezone": "UTC"}), "cron",
     "schedule"),
    (compile_decision_flow, flow(offers=[{"id": "o1", "score": "1"}, {"id": "o2", "score": "2", "name": "n"}]),
     "score", "offers[1]"),
    (compile_schema_table, {**TABLE, "columns": {"tier": "string", "lapsed": "boolean"}}, "tier", "columns"),
    (compile_journey, {**JOURNEY, "maxDurationDays": 30}, "name", "top level"),
]


@pytest.mark.parametrize(("compile_", "value", "key", "where"), DUPLICATES,
                         ids=[f"{c.__name__}:{w}" for c, _, _, w in DUPLICATES])
@pytest.mark.parametrize("form", ["bytes", "str"])
def test_duplicate_keys_refused_with_their_place(compile_, value, key, where, form):
    raw = _repeat(json.dumps(value), key)
    errors = errors_of(compile_, raw if form == "bytes" else raw.decode())
    assert f"duplicate key {key!r} at {where}" in errors, errors


def test_every_duplicate_is_reported():
    raw = b'{"id": "t1", "id": "t1", "source": "streaming", "eventType": "x", "action": ' \
          b'{"type": "webhook", "url": "https://example.test/", "headers": {"A": "1", "A": "2"}}}'
    assert errors_of(compile_definition, raw) == ["duplicate key 'id' at top level",
                                                  "duplicate key 'A' at action.headers"]


def test_repeated_object_does_not_misplace_inner_duplicates():
    # The first "x" object is discarded by the repeat; its own repeat must not be reported
    # at the place of some later object that happens to reuse its memory.
    with pytest.raises(DuplicateKeys) as info:
        load_unique_json('{"x": {"a": 1, "a": 2}, "x": 1, "y": [{"b": 1}, {"c": {"d": 1}}]}')
    assert info.value.problems == ["duplicate key 'x' at top level"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_unique_loader_agrees_with_strict_json_without_repeats(value):
    text = json.dumps(value)
    assert load_unique_json(text) == strict_json(text)
    assert load_unique_json(text.encode()) == strict_json(text)


def test_strict_json_rules_still_apply_to_the_unique_loader():
    for raw, says in [(b'{"a": NaN}', "NaN"), (b'{"a": 1e999}', "too large"), (b"[" * 70 + b"]" * 70, "deeper")]:
        with pytest.raises(ValueError, match=says):
            load_unique_json(raw)


def test_config_file_with_duplicate_key_names_file_and_place(tmp_path):
    folder = tmp_path / "triggers"
    folder.mkdir()
    (folder / "t1.json").write_bytes(_repeat(json.dumps(headers(**{"X-Team": "a"})), "X-Team"))
    (folder / "list.json").write_text('[{"id": "t2"}, {"id": "t3", "id": "t4"}]')
    bundle = read_config([tmp_path])
    assert f"{folder / 't1.json'}: duplicate key 'X-Team' at action.headers" in bundle.errors
    assert f"{folder / 'list.json'}: duplicate key 'id' at [1]" in bundle.errors
    assert bundle.triggers == []


def test_http_body_with_duplicate_key_is_refused():
    with pytest.raises(ApiError) as info:
        parse_json_body(b'{"id": "t1", "priority": 10, "priority": 90}')
    assert info.value.status == 400
    assert "duplicate key 'priority' at top level" in info.value.body["error"]


def test_example_configs_still_validate():
    bundle = read_config([ROOT / "triggers_config"])
    assert bundle.errors == []
    assert all(bundle.definitions[kind] for kind in ("triggers", "journeys", "decisionflows", "tables"))


def test_every_limit_is_in_the_contract_table():
    text = (ROOT / "docs" / "contract.md").read_text()
    section = text[text.index("### 3.6 Validation summary"):text.index("### 3.7 ")]
    for name in dir(limits):
        value = getattr(limits, name)
        if name.startswith("MAX_") and isinstance(value, int):
            assert f"{value:,}".replace(",", " ") in section or str(value) in section, name
    for header in limits.RESERVED_HEADERS:
        assert f"`{header}`" in section.lower(), header
