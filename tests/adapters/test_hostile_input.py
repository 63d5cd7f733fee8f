"""Hostile input: arbitrary bytes, malformed and oversized JSON, sandbox escapes and refused
addresses. Each test checks one protection and fails if that protection is removed.

Defects these tests found are marked `xfail(strict=True)` with the reason: the test starts
passing (and strict xfail then fails, asking for the marker to go) once the defect is fixed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.domain.deadletters import encode as encode_record
from app.domain.definitions import (
    compile_decision_flow,
    compile_definition,
    compile_journey,
    compile_schema_table,
)
from app.domain.expressions import Expression, Scope, parse_expression
from app.domain.intake import MAX_ID_LENGTH, RESERVED, load_json, parse_cdc_event, parse_event
from app.domain.internal_records import Tick, read_tick
from app.domain.models import ID_PATTERN, ActionCommand, Event, EventEnvelope, Source
from app.domain.rows import RowLoad, parse_row_load
from app.domain.schedules import tick_to_run
from app.domain.webhooks import compile_template, refused_address_reason, template_errors
from app.errors import ExpressionFailed, InvalidDefinition, InvalidExpression, MalformedEvent
from app.web.api import (
    ApiError,
    check_record_sizes,
    definition_for,
    dry_run_event,
    parse_json_body,
    parse_test_request,
    prepare_events,
)

ROOT = Path(__file__).resolve().parents[2]
ARRIVAL = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
NOW = ARRIVAL
FALLBACK_ID = "events.streaming-0-17"
CUSTOMER_COLUMN = "customer_id"

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_SMALL = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------------- helpers


def streaming(raw: bytes | None) -> Event:
    return parse_event(raw, Source.STREAMING, FALLBACK_ID, ARRIVAL)


def cdc(raw: bytes | None) -> Event:
    return parse_cdc_event(raw, FALLBACK_ID, ARRIVAL, CUSTOMER_COLUMN)


def attempt(call: Any, *errors: type[BaseException]) -> Any:
    """The call's value, or None if it raised one of `errors`; any other exception propagates."""
    try:
        return call()
    except errors:
        return None


def encode(value: Any) -> bytes:
    """JSON as a careless producer writes it: NaN and Infinity included."""
    return json.dumps(value, allow_nan=True).encode()


def run(text: str, event: dict[str, Any] | None = None, customer: dict[str, Any] | None = None) -> Any:
    scope = Scope(event={"amount": 1500, "name": "Bob"} if event is None else event, customer=customer, now=NOW)
    return parse_expression(text).evaluate(scope)


def finishes_within(code: str, seconds: float) -> bool:
    """Run `code` in a fresh interpreter; True if it exits cleanly within `seconds`.
    Big-int arithmetic and regex backtracking run in C and cannot be interrupted in-process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                              timeout=seconds, capture_output=True, check=False)
    except subprocess.TimeoutExpired:
        return False
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return True


def forwarded(work: Event | RowLoad) -> bytes:
    """The record intake re-publishes for a message owned by another worker."""
    from app.domain.internal_records import envelope

    return envelope(work)


def fired(event: Event) -> bytes:
    """The action command as the pipeline emits it when a trigger fires for `event`."""
    command = ActionCommand(firing_id="f", trigger_id="t", priority=50, customer_id=event.customer_id,
                            event_id=event.id, fired_at=NOW, action={"type": "webhook"}, event=event.as_json())
    return encode_record(command.to_json())


# ------------------------------------------------------------------------------- strategies

JSON_SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
                | st.floats() | st.text(max_size=12))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
FINITE_SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
                  | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
FINITE_JSON = st.recursive(
    FINITE_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
JSON_TOKENS = st.text(alphabet='{}[]":,0123456789.eE-+ntrufalsNIiy \\ud8', max_size=80).map(str.encode)
RAW_MESSAGES = st.binary(max_size=200) | JSON_VALUES.map(encode) | JSON_TOKENS

TEXTISH = (st.sampled_from(["t", "c-42", "", " ", "x" * MAX_ID_LENGTH, "x" * (MAX_ID_LENGTH + 1)])
           | st.text(max_size=8) | JSON_VALUES)
MINUTE_OFFSETS = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes)))
ISO_TIMES = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                         timezones=st.none() | MINUTE_OFFSETS).map(datetime.isoformat)
TIMESTAMPS = (ISO_TIMES | st.sampled_from(["2024-05-01T10:00:00Z", "2024-05-01", "yesterday", "2024-13-01", "Z",
                                           "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"])
              | JSON_VALUES)
EXTRA_FIELDS = st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4)


@st.composite
def event_objects(draw: st.DrawFn) -> dict[str, Any]:
    """Events with every reserved field present, absent or of the wrong type, plus extra fields."""
    data = draw(EXTRA_FIELDS)
    for name, values in (("type", TEXTISH), ("customerId", TEXTISH), ("id", TEXTISH),
                         ("timestamp", TIMESTAMPS), ("source", TEXTISH)):
        if draw(st.booleans()):
            data[name] = draw(values)
    return data


@st.composite
def valid_event_objects(draw: st.DrawFn, values: st.SearchStrategy[Any] = JSON_VALUES) -> dict[str, Any]:
    data = {k: v for k, v in draw(st.dictionaries(st.text(max_size=8), values, max_size=5)).items()
            if k not in RESERVED}
    data.update(type=draw(st.text(min_size=1, max_size=10)), customerId=draw(st.text(min_size=1, max_size=10)))
    if draw(st.booleans()):
        data["id"] = draw(st.text(min_size=1, max_size=10))
    if draw(st.booleans()):
        data["timestamp"] = draw(ISO_TIMES)
    return data


ROWS = (st.fixed_dictionaries({}, optional={CUSTOMER_COLUMN: TEXTISH | st.integers()}).flatmap(
    lambda row: EXTRA_FIELDS.map(lambda extra: {**extra, **row})) | JSON_VALUES)


@st.composite
def cdc_objects(draw: st.DrawFn) -> dict[str, Any]:
    body = draw(EXTRA_FIELDS)
    optional = {
        "op": st.sampled_from(["c", "r", "u", "d", "t", "x", ""]) | JSON_VALUES,
        "source": st.fixed_dictionaries({}, optional={"table": TEXTISH}) | JSON_VALUES,
        "before": ROWS,
        "after": ROWS,
        "ts_ms": st.integers(min_value=-(10**30), max_value=10**30) | st.floats() | JSON_VALUES,
    }
    for name, values in optional.items():
        if draw(st.booleans()):
            body[name] = draw(values)
    return {"schema": draw(JSON_VALUES), "payload": body} if draw(st.booleans()) else body


ROW_LOADS = st.fixed_dictionaries({}, optional={
    "table": TEXTISH, "customerId": TEXTISH, "delete": JSON_VALUES, "attributes": EXTRA_FIELDS | JSON_VALUES,
}).flatmap(lambda load: EXTRA_FIELDS.map(lambda extra: {**extra, **load}))

EXPRESSION_ALPHABET = "abcdeventcustomrn._[]()'\"{}+-*/%<>=!,:0123456789 \n~&|^@"
EXPRESSION_TEXT = (st.sampled_from(["event.amount > 1", "customer.tier == 'gold'", "", "1 +", "event.__class__",
                                    "now - timestamp(event.t) < hours(1)", "x" * 2001, "'{{ }}'"])
                   | st.text(alphabet=EXPRESSION_ALPHABET, max_size=40))
PLACEHOLDER_TEXT = st.builds("{}{{{{{}}}}}{}".format, st.text(max_size=4), EXPRESSION_TEXT, st.text(max_size=4))
TEMPLATES = st.recursive(
    PLACEHOLDER_TEXT | JSON_SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)
CRON_FIELDS = st.sampled_from(["*", "0", "59", "60", "1-5", "5-1", "*/15", "*/0", "L", "W", "MON", "SUN-MON",
                               "1,2", "?", "H", "5#3", "-", "/", "99999999999999999999", "\x00"])
CRONS = (st.sampled_from(["daily", "weekly", "* * * * *", "0 9 * * 1-5", ""])
         | st.lists(CRON_FIELDS, min_size=1, max_size=7).map(" ".join) | st.text(max_size=12))
TIMEZONES = st.sampled_from(["UTC", "Europe/Oslo", "", "Nope/Nope", "../../etc/passwd", "\x00", "a" * 300,
                             "America", "/etc/localtime"]) | st.text(max_size=10)
ACTIONS = st.fixed_dictionaries(
    {"type": st.sampled_from(["webhook", "enroll_journey", "fire_recommend", "update_attribute", "nope"])
     | JSON_VALUES},
    optional={
        "url": st.sampled_from(["https://example.com/h", "http://[::1", "ftp://x", "", "http://10.0.0.1/"])
        | JSON_VALUES,
        "journeyId": TEXTISH, "decisionFlowId": TEXTISH, "channel": TEXTISH, "deliveryUrl": TEXTISH,
        "deduplication": st.sampled_from(["skip_if_active", "restart", "nope"]) | JSON_VALUES,
        "table": TEXTISH,
        "attributes": st.dictionaries(st.text(max_size=6), EXPRESSION_TEXT, max_size=3) | JSON_VALUES,
        "headers": st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=2) | JSON_VALUES,
        "secret": TEXTISH,
        "payload": TEMPLATES,
        "surprise": JSON_VALUES,
    },
) | JSON_VALUES
DEFINITIONS = st.fixed_dictionaries({}, optional={
    "id": st.sampled_from(["t1", "a.b:c-d_e", "", "-bad", "x" * 129]) | TEXTISH,
    "name": TEXTISH,
    "enabled": st.booleans() | JSON_VALUES,
    "source": st.sampled_from([source.value for source in Source]) | JSON_VALUES,
    "eventType": TEXTISH,
    "filters": st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=3) | JSON_VALUES,
    "conditions": st.lists(EXPRESSION_TEXT, max_size=3) | JSON_VALUES,
    "action": ACTIONS,
    "cooldownMinutes": st.floats() | st.integers(min_value=-(10**20), max_value=10**20) | JSON_VALUES,
    "priority": st.integers(min_value=-(10**20), max_value=10**20) | JSON_VALUES,
    "schedule": CRONS | st.fixed_dictionaries({"cron": CRONS, "timezone": TIMEZONES}) | JSON_VALUES,
    "eventtype": JSON_VALUES,
})

# ------------------------------------------------- 1. arbitrary input: only the module's error


@FUZZ
@given(raw=RAW_MESSAGES)
@example(raw=b"")
@example(raw=b"\xff\xfe\x00")
@example(raw=b"\xef\xbb\xbf{}")
@example(raw=b'{"type": "t", "customerId": "c"')
def test_arbitrary_bytes_are_parsed_or_refused_with_the_module_error(raw):
    attempt(lambda: streaming(raw), MalformedEvent)
    attempt(lambda: cdc(raw), MalformedEvent)
    attempt(lambda: parse_row_load(raw), MalformedEvent)
    for compile_ in (compile_definition, compile_journey, compile_decision_flow, compile_schema_table):
        attempt(lambda compile_=compile_: compile_(raw, key="t1"), InvalidDefinition)


@FUZZ
@given(value=JSON_VALUES)
def test_arbitrary_json_values_are_parsed_or_refused_with_the_module_error(value):
    raw = encode(value)
    attempt(lambda: streaming(raw), MalformedEvent)
    attempt(lambda: cdc(raw), MalformedEvent)
    attempt(lambda: parse_row_load(raw), MalformedEvent)
    for compile_ in (compile_definition, compile_journey, compile_decision_flow, compile_schema_table):
        attempt(lambda compile_=compile_: compile_(raw), InvalidDefinition)
        if isinstance(value, dict):
            attempt(lambda compile_=compile_: compile_(value), InvalidDefinition)


@FUZZ
@given(data=event_objects())
def test_events_with_wrong_types_are_refused_and_accepted_ones_are_well_formed(data):
    event = attempt(lambda: streaming(encode(data)), MalformedEvent)
    if event is None:
        return
    for text in (event.type, event.customer_id, event.id):
        assert isinstance(text, str) and 0 < len(text) <= MAX_ID_LENGTH
    assert event.timestamp.utcoffset() is not None
    assert not set(event.fields) & set(RESERVED)
    assert event.source is Source.STREAMING  # never the producer's "source" field


@FUZZ
@given(data=cdc_objects())
def test_cdc_events_with_wrong_types_are_refused_and_accepted_ones_are_well_formed(data):
    event = attempt(lambda: cdc(encode(data)), MalformedEvent)
    if event is None:
        return
    assert isinstance(event.customer_id, str) and event.customer_id
    assert event.type.rsplit(".", 1)[1] in ("insert", "update", "delete")
    assert event.timestamp.utcoffset() is not None
    json.dumps(event.as_json(), allow_nan=False)


@FUZZ
@given(data=ROW_LOADS)
def test_row_loads_with_wrong_types_are_refused_and_accepted_ones_are_well_formed(data):
    load = attempt(lambda: parse_row_load(encode(data)), MalformedEvent)
    if load is None:
        return
    assert isinstance(load.table, str) and load.table
    assert isinstance(load.customer_id, str) and load.customer_id
    assert load.attributes is None or isinstance(load.attributes, dict)


@FUZZ
@given(data=DEFINITIONS, key=st.none() | st.sampled_from(["t1"]) | st.text(max_size=6))
def test_definitions_with_wrong_types_are_refused_with_invalid_definition(data, key):
    attempt(lambda: compile_definition(data, key=key), InvalidDefinition)
    trigger = attempt(lambda: compile_definition(encode(data), key=key), InvalidDefinition)
    if trigger is None:
        return
    assert re.fullmatch(ID_PATTERN, trigger.id)
    assert key is None or trigger.id == key
    # What a compiled definition shows (API) and carries (commands) is strict JSON.
    json.dumps(trigger.definition.public_dict(), allow_nan=False)
    json.dumps(trigger.command_action, allow_nan=False)


@FUZZ_SMALL
@given(body=RAW_MESSAGES)
def test_api_body_is_json_or_a_400_or_413(body):
    attempt(lambda: parse_json_body(body), ApiError)


@FUZZ_SMALL
@given(body=JSON_VALUES | st.lists(event_objects(), max_size=3) | event_objects(),
       trigger_id=st.sampled_from(["t1"]) | st.text(max_size=6))
def test_api_request_checks_answer_with_api_error_only(body, trigger_id):
    events = attempt(lambda: prepare_events(body, Source.STREAMING), ApiError)
    if events is not None:
        assert all(isinstance(e, dict) and e["id"] for e in events)
        check_record_sizes([(e["customerId"], e) for e in events], limit=10**9)
    attempt(lambda: definition_for(body, trigger_id), ApiError)
    attempt(lambda: parse_test_request(body), ApiError)
    if isinstance(body, dict):
        attempt(lambda: dry_run_event(body, Source.STREAMING, NOW), ApiError)


# ------------------------------------------ 2. deep, huge and non-finite input: refused, quickly

BIG = 10_000_000


def _event_with(raw_value: bytes) -> bytes:
    return b'{"type": "t", "customerId": "c", "x": ' + raw_value + b"}"


HOSTILE_JSON = {
    "100k [": b"[" * 100_000,
    "100k {": b'{"a": ' * 100_000,
    "100k [ closed": b"[" * 100_000 + b"]" * 100_000,
    "deep inside an event": _event_with(b"[" * 100_000 + b"]" * 100_000),
    "1e999": _event_with(b"1e999"),
    "-1e999": _event_with(b"-1e999"),
    "NaN": _event_with(b"NaN"),
    "Infinity": _event_with(b"Infinity"),
    "-Infinity": _event_with(b"-Infinity"),
    "NaN as ts_ms": b'{"op": "c", "source": {"table": "t"}, "after": {"customer_id": "c"}, "ts_ms": NaN}',
    "10M-digit integer": _event_with(b"1" * BIG),
    "10M-digit exponent": _event_with(b"1e" + b"9" * BIG),
    "10MB type": json.dumps({"type": "t" * BIG, "customerId": "c"}).encode(),
    "10MB customerId": json.dumps({"type": "t", "customerId": "c" * BIG}).encode(),
    "10MB id": json.dumps({"type": "t", "customerId": "c", "id": "i" * BIG}).encode(),
    "10MB timestamp": json.dumps({"type": "t", "customerId": "c", "timestamp": "2" * BIG}).encode(),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(HOSTILE_JSON))
def test_deep_huge_and_non_finite_input_is_refused_quickly(name):
    raw = HOSTILE_JSON[name]
    calls = [(lambda: streaming(raw), MalformedEvent), (lambda: cdc(raw), MalformedEvent),
             (lambda: parse_row_load(raw), MalformedEvent), (lambda: compile_definition(raw), InvalidDefinition)]
    for call, error in calls:
        started = time.perf_counter()
        with pytest.raises(error):
            call()
        assert time.perf_counter() - started < 2.0, name


@pytest.mark.parametrize("name", ["100k [", "1e999", "NaN", "-Infinity", "10M-digit integer"])
def test_api_refuses_hostile_json_with_a_client_error(name):
    with pytest.raises(ApiError) as info:
        parse_json_body(HOSTILE_JSON[name], limit=len(HOSTILE_JSON[name]))
    assert info.value.status == 400


def test_api_refuses_a_10mb_body_before_parsing_it():
    with pytest.raises(ApiError) as info:
        parse_json_body(json.dumps({"type": "t", "customerId": "c", "x": "x" * BIG}).encode())
    assert info.value.status == 413


@pytest.mark.parametrize("raw", [b"1e999", b"-1e999", b"1E400", b"NaN", b"Infinity", b"-Infinity", b"[1e999]"])
def test_load_json_refuses_every_non_finite_number(raw):
    with pytest.raises(ValueError):
        load_json(raw)


def test_a_10mb_ordinary_field_is_parsed_quickly_without_error():
    # Size is bounded upstream (Kafka's message limit, the API's body limit); intake itself must
    # neither choke nor copy it into the reserved fields.
    started = time.perf_counter()
    event = streaming(json.dumps({"type": "t", "customerId": "c", "x": "x" * BIG}).encode())
    assert time.perf_counter() - started < 2.0
    assert len(event.fields["x"]) == BIG


# ------------------------------------------------ 3. what intake accepts stays strict JSON


@FUZZ
@given(data=valid_event_objects())
def test_accepted_events_round_trip_as_strict_json(data):
    event = attempt(lambda: streaming(encode(data)), MalformedEvent)
    if event is None:
        # The only thing wrong with these events is a non-finite number (NaN, Infinity, 1e999).
        with pytest.raises(ValueError):
            load_json(encode(data))
        return
    again = json.loads(json.dumps(event.as_json(), allow_nan=False))
    assert again == event.as_json()
    assert datetime.fromisoformat(again["timestamp"]) == event.timestamp
    assert (again["type"], again["customerId"], again["source"]) == (data["type"], data["customerId"], "streaming")


@FUZZ
@given(data=valid_event_objects(values=FINITE_JSON))
def test_accepted_events_survive_the_pipeline_envelope_and_the_firing_record(data):
    event = streaming(encode(data))
    again = EventEnvelope.model_validate(json.loads(forwarded(event))["event"]).event()
    assert again == event
    assert json.loads(fired(event))["event"]["customerId"] == data["customerId"]


def test_a_deeply_nested_event_is_refused_or_can_be_forwarded_and_fired():
    event = attempt(lambda: streaming(_event_with(b"[" * 300 + b"]" * 300)), MalformedEvent)
    if event is not None:
        forwarded(event)
        fired(event)


SURROGATES = {
    "customerId": b'{"type": "t", "customerId": "\\ud800"}',
    "type": b'{"type": "\\udfff", "customerId": "c"}',
    "id": b'{"type": "t", "customerId": "c", "id": "a\\udc80"}',
    "field value": b'{"type": "t", "customerId": "c", "x": "\\ud800"}',
    "nested value": b'{"type": "t", "customerId": "c", "x": {"y": ["\\udc80"]}}',
}


@pytest.mark.parametrize("where", list(SURROGATES))
def test_lone_surrogates_are_refused_or_survive_utf8_encoding(where):
    event = attempt(lambda: streaming(SURROGATES[where]), MalformedEvent)
    if event is not None:
        event.customer_id.encode()
        forwarded(event)
        fired(event)


@pytest.mark.parametrize("raw", [b'{"customerId": "\\ud800", "attributes": {}}',
                                 b'{"table": "\\ud800", "customerId": "c", "attributes": {}}',
                                 b'{"customerId": "c", "attributes": {"\\ud800": 1}}'])
def test_lone_surrogates_in_row_loads_are_refused_or_survive_utf8_encoding(raw):
    load = attempt(lambda: parse_row_load(raw), MalformedEvent)
    if load is not None:
        load.customer_id.encode()
        forwarded(load)


def test_api_refuses_lone_surrogates_with_a_client_error():
    with pytest.raises(ApiError) as refused:
        body = parse_json_body(SURROGATES["customerId"])
        events = prepare_events(body, Source.STREAMING)
        check_record_sizes([(e["customerId"], e) for e in events], limit=10**9)
    assert refused.value.status == 400


def test_timestamps_with_second_offsets_survive_the_pipeline_envelope():
    event = streaming(b'{"type": "t", "customerId": "c", "timestamp": "2024-05-01T10:00:00+05:30:15"}')
    assert EventEnvelope.model_validate(json.loads(forwarded(event))["event"]).event().timestamp == event.timestamp


# --------------------------------------------------------- 4. the expression sandbox at run time

SCOPE_EVENT = {"a": 7, "b": -3, "f": 2.5, "s": "web", "l": [1, 2, 3], "after": {"status": "x"}}
SCOPE = Scope(event=SCOPE_EVENT, customer={"n": 4}, now=NOW)
LEAVES = (st.integers(min_value=-20, max_value=20).map(str)
          | st.sampled_from(["0", "1", "2", "12", "1000", "0.5", "'x'", "[1, 2]", "(1,)", "True", "None",
                             "event.a", "event.b", "event.f", "event.s", "event.l", "event.after",
                             "event.missing", "customer.n", "customer.missing", "now"]))


def _compound(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binary = st.tuples(children, st.sampled_from(["+", "-", "*", "**", "%", "//", "/", "<", "<=", ">", "==", "!=",
                                                  "and", "or", "in", "not in", "is"]), children)
    chain = st.tuples(children, st.sampled_from(["<", "<=", "=="]), children, st.sampled_from(["<", ">"]), children)
    return (binary.map(lambda t: f"({t[0]} {t[1]} {t[2]})")
            | chain.map(lambda t: f"({' '.join(t)})")
            | st.tuples(st.sampled_from(["-", "+", "not "]), children).map(lambda t: f"({t[0]}{t[1]})")
            | st.tuples(st.sampled_from(["abs", "str", "len", "int", "float", "bool", "round", "minutes"]),
                        children).map(lambda t: f"{t[0]}({t[1]})")
            | st.tuples(children, children, children).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})")
            | st.tuples(children, children).map(lambda t: f"{t[0]}[{t[1]}]"))


ARITHMETIC = st.recursive(LEAVES, _compound, max_leaves=25)


@pytest.mark.timeout(30)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=ARITHMETIC)
@example(text="(12 ** 1000) ** 2")
@example(text="(1000 ** 1000) ** (1000 ** 1000)")
@example(text="('x' * 1000) * (1000 * 1000)")
@example(text="[1, 2] * (1000 ** 3)")
def test_random_expressions_evaluate_or_fail_cleanly_and_quickly(text):
    expression = attempt(lambda: parse_expression(text), InvalidExpression)
    if expression is None:
        return
    started = time.perf_counter()
    attempt(lambda: expression.evaluate(SCOPE), ExpressionFailed)
    assert time.perf_counter() - started < 1.0, text


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="()[]{}-+~*not 1ae.,'\"\\:%<=>!", max_size=2100))
@example(text="-" * 5000 + "1")
@example(text="(" * 999 + "1" + ")" * 999)
@example(text="[" * 199 + "]" * 199)
@example(text="not " * 199 + "1")
@example(text="1\x00")
def test_hostile_expression_text_is_refused_at_parse_time_or_evaluated_safely(text):
    started = time.perf_counter()
    expression = attempt(lambda: parse_expression(text), InvalidExpression)
    assert time.perf_counter() - started < 1.0
    if expression is not None:
        attempt(lambda: expression.evaluate(SCOPE), ExpressionFailed)


@pytest.mark.parametrize("text", [
    "().__class__", "''.__class__.__mro__", "now.__class__", "event.after.__class__",
    "event['after'].__class__", "(1).__class__", "[].__class__.__base__", "event.name.__len__",
    "'{0.__class__}'.format(event)", "'{}'.format(event)", "event.name.format(event)",
    "now.strftime('%Y')", "str.format('{0}', event)", "getattr(event, '_data')", "type(event)",
    "vars(event)", "globals()", "__builtins__", "event._lookup('a')",
])
def test_object_escapes_are_refused_at_parse_time(text):
    with pytest.raises(InvalidExpression):
        parse_expression(text)


@pytest.mark.parametrize("key", ["__class__", "__dict__", "__init__", "_data", "_name", "_lookup", "mro",
                                 "format", "__globals__"])
def test_subscripts_read_only_data_never_python_attributes(key):
    with pytest.raises(ExpressionFailed):
        run(f"event[{key!r}]", event={"a": 1})
    with pytest.raises(ExpressionFailed):
        run(f"event['after'][{key!r}]", event={"after": {"a": 1}})
    assert run(f"customer[{key!r}]", customer={"a": 1}) is None
    assert run(f"event[{key!r}]", event={key: "data"}) == "data"
    assert run(f"event.after[{key!r}]", event={"after": {key: [1]}}) == [1]


def test_str_of_a_record_shows_only_its_data():
    data = {"a": 1, "after": {"b": [1, "x"]}}
    text = run("str(event)", event=data)
    assert text == "event" + repr(data)
    assert "object at" not in text and "Record" not in text
    assert run("str(event.after)", event=data) == "event.after{'b': [1, 'x']}"
    assert run("str(customer)", customer=None) == "customer{}"


@pytest.mark.parametrize("text", ["'%s' % event", "'%(a)s' % event", "'%r' % (event,)"])
def test_percent_formatting_of_a_record_is_refused(text):
    with pytest.raises(ExpressionFailed):
        run(text)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("text", [
    "[1] * 10 ** 7", "10 ** 7 * [1]", "(1,) * 10 ** 7", "'a' * 10 ** 7", "9 ** 9 ** 9", "(10 ** 12 + 1) ** 2",
    "[1] * 60000 + [2] * 60000", "event.l * 10 ** 6", "str([1] * 100000) * 10",
])
def test_runtime_guards_refuse_oversized_results_quickly(text):
    started = time.perf_counter()
    with pytest.raises(ExpressionFailed):
        parse_expression(text).evaluate(SCOPE)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(("text", "expected"), [
    ("1 < 2 < 3 < 4", True), ("1 < 3 < 2", False), ("event.a > event.b > -10", True),
    ("0 <= event.f < 3 == 3", True), ("'a' < 'b' < 'c'", True),
])
def test_comparison_chains_evaluate(text, expected):
    assert parse_expression(text).evaluate(SCOPE) is expected


@pytest.mark.parametrize("text", ["1 < 'a' < 2", "event.s < event.a", "None < 1 < 2", "now < 1"])
def test_comparison_chains_of_mixed_types_fail_cleanly(text):
    with pytest.raises(ExpressionFailed):
        parse_expression(text).evaluate(SCOPE)


@pytest.mark.timeout(30)
def test_round_with_a_huge_negative_precision_is_refused_or_quick():
    assert finishes_within("""
        from datetime import UTC, datetime
        from app.domain.expressions import Scope, parse_expression
        from app.errors import ExpressionFailed, InvalidExpression
        try:
            parse_expression("round(1, -10 ** 8)").evaluate(Scope(event={}, customer=None, now=datetime.now(UTC)))
        except (ExpressionFailed, InvalidExpression):
            pass
    """, seconds=2.5)


@pytest.mark.parametrize("text", [
    "len(str([{1: 'a' * 100000}] * 100))",
    "len(str(({'k': 'a' * 100000},) * 100))",
    "len(str([event] * 1000))",
])
def test_repetition_through_dicts_and_records_is_measured(text):
    with pytest.raises(ExpressionFailed):
        run(text, event={"blob": "a" * 10_000})


@pytest.mark.parametrize("key", ["items", "keys", "values", "get", "format"])
def test_fields_of_objects_inside_lists_read_as_data(key):
    assert run(f"event.orders[0].{key}", event={"orders": [{key: 3}]}) == 3


# ------------------------------------------------------------- 5. refused outbound addresses


def _effective(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Any:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _must_refuse(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if address.version == 6 and (address.is_site_local or address.sixtofour or address.teredo):
        # Tunnels reach the IPv4 address inside them: judged by that address (or refused).
        inner = address.sixtofour or (address.teredo[1] if address.teredo else None)
        return inner is None or _must_refuse(inner) or address.is_site_local
    ip = _effective(address)
    return (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified
            or ip.is_reserved or (ip.version == 4 and ip in ipaddress.ip_network("100.64.0.0/10")))


@settings(max_examples=500, deadline=None)
@given(address=st.ip_addresses())
@example(address=ipaddress.ip_address("::ffff:169.254.169.254"))
@example(address=ipaddress.ip_address("::ffff:8.8.8.8"))
@example(address=ipaddress.ip_address("100.64.0.1"))
def test_special_addresses_are_refused_and_public_ones_allowed(address):
    reason = refused_address_reason(str(address))
    if _must_refuse(address):
        assert reason is not None and reason.startswith(str(address))
    else:
        assert reason is None


@settings(max_examples=300, deadline=None)
@given(address=st.ip_addresses(v=4), zone=st.sampled_from(["", "%eth0", "%1"]))
def test_ipv4_mapped_ipv6_is_judged_like_the_ipv4_address(address, zone):
    mapped = f"::ffff:{address}{zone}"
    assert (refused_address_reason(mapped) is None) == (refused_address_reason(str(address)) is None)


@pytest.mark.parametrize("address", ["2002:a9fe:a9fe::1", "2002:7f00:1::1", "2002:a00:1::1", "fec0::1"])
def test_ipv6_forms_of_internal_addresses_are_refused(address):
    assert refused_address_reason(address) is not None


# --------------------------------------------------------------------- 6. payload templates


@FUZZ
@given(source=TEMPLATES)
@example(source="{{ }}")
@example(source={"a": ["{{ event.__class__ }}", "{{ 1 }}}}"]})
@example(source="{{ {{ 1 }} }}")
def test_templates_compile_or_raise_invalid_expression_and_agree_with_template_errors(source):
    template = attempt(lambda: compile_template(source), InvalidExpression)
    errors = template_errors(source)
    assert all(isinstance(error, str) and error for error in errors)
    assert (template is None) == bool(errors)
    if template is not None:
        assert all(isinstance(e, Expression) for e in template.expressions.values())


@pytest.mark.timeout(30)
def test_a_payload_of_unclosed_placeholders_compiles_quickly():
    assert finishes_within("""
        import json
        from app.domain.definitions import compile_definition
        from app.errors import InvalidDefinition
        definition = {"id": "t1", "source": "streaming", "eventType": "x",
                      "action": {"type": "webhook", "url": "https://example.com/h", "payload": "{{" * 50000}}
        try:
            compile_definition(json.dumps(definition).encode())
        except InvalidDefinition:
            pass
    """, seconds=2.5)


def _webhook_definition(payload_json: bytes) -> bytes:
    return (b'{"id": "t1", "source": "streaming", "eventType": "x", "action": {"type": "webhook", '
            b'"url": "https://example.com/h", "payload": ' + payload_json + b"}}")


def test_a_deeply_nested_payload_is_refused_with_invalid_definition():
    attempt(lambda: compile_definition(_webhook_definition(b"[" * 600 + b"]" * 600)), InvalidDefinition)


def test_an_accepted_deep_payload_can_be_carried_by_commands():
    trigger = attempt(lambda: compile_definition(_webhook_definition(b"[" * 300 + b"]" * 300)),
                      InvalidDefinition)
    if trigger is not None:
        json.dumps(trigger.command_action)
        json.dumps(trigger.definition.public_dict())


@pytest.mark.parametrize("cron", ["0 0 31 2 *", "0 0 30 2 *"])
def test_an_accepted_schedule_can_be_ticked(cron):
    definition = {"id": "t1", "source": "scheduled", "eventType": "schedule.tick", "schedule": cron,
                  "action": {"type": "enroll_journey", "journeyId": "j"}}
    trigger = attempt(lambda: compile_definition(definition), InvalidDefinition)
    if trigger is not None:
        tick_to_run(trigger.definition.schedule, None, NOW, timedelta(days=400))


def test_a_long_running_expression_is_stopped_by_the_evaluation_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every step is within the size limits, but together they take milliseconds: the
    deadline, checked between steps, stops the evaluation (shortened here so the test is fast)."""
    from app.domain import expressions

    slow = parse_expression("lower(" * 60 + "event.text" + ")" * 60)
    scope = Scope(event={"text": "Ab" * 50_000}, customer=None, now=datetime.now(UTC))
    assert slow.evaluate(scope) == "ab" * 50_000  # completes under the normal budget
    monkeypatch.setattr(expressions, "MAX_EVALUATION_SECONDS", 0.0005)
    with pytest.raises(ExpressionFailed, match="EvaluationTimeout: stopped after 0.5 ms"):
        slow.evaluate(scope)


# ------------------------------------- §6. values that parse but cannot be stored or produced

from dataclasses import dataclass as _dataclass  # noqa: E402

from app.domain.deadletters import (  # noqa: E402
    MAX_EMBEDDED_BYTES,
    MAX_RECORD_BYTES,
    Unstorable,
    action_dead_letter,
    check_storable,
    event_dead_letter,
    row_load_dead_letter,
)
from app.domain.schema import DEFAULT_CUSTOMERS, ColumnTypeError, SchemaTable, check_row_values  # noqa: E402

NUMBERS = SchemaTable.model_validate({"name": "scores", "columns": {"n": "number"}})


@pytest.mark.parametrize("value", [2**64, 18446744073709551616, -(2**63) - 1, 10**24, 2**63])
@pytest.mark.parametrize("table", [NUMBERS, DEFAULT_CUSTOMERS])
def test_integers_outside_64_bits_are_refused_by_every_column(value: int, table: SchemaTable) -> None:
    with pytest.raises(ColumnTypeError, match="outside the signed 64-bit range"):
        check_row_values(table, {"n": value})
    with pytest.raises(ColumnTypeError, match="outside the signed 64-bit range"):
        check_row_values(DEFAULT_CUSTOMERS, {"nested": {"list": [1, value]}})


@pytest.mark.parametrize("value", [2**63 - 1, -(2**63), 0, 1.5e308])
def test_integers_inside_64_bits_are_stored(value: int | float) -> None:
    stored = check_row_values(NUMBERS, {"n": value})
    check_storable(stored)
    assert stored == {"n": value}


def test_a_huge_integer_is_refused_without_printing_it() -> None:
    with pytest.raises(ColumnTypeError, match="33220-bit integer"):
        check_row_values(NUMBERS, {"n": 10**10000})


@pytest.mark.parametrize("value", [{"n": 2**64}, {"n": [float("nan")]}, {"t": "\ud800"}, {"n": -(2**63) - 1}])
def test_check_storable_refuses_what_the_table_codec_cannot_write(value: dict[str, Any]) -> None:
    with pytest.raises(Unstorable):
        check_storable(value)


@given(st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=12))
@FUZZ
def test_check_storable_agrees_with_the_table_codec(value: Any) -> None:
    import orjson

    try:
        check_storable(value)
    except Unstorable:
        return
    orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)  # what faust's table codec does


@pytest.mark.parametrize("raw", [b"\x00" * 900_000, "é".encode() * 450_000, os.urandom(900_000)])
def test_a_dead_letter_of_a_huge_value_is_cut_and_fits_in_a_record(raw: bytes) -> None:
    record = event_dead_letter("not valid JSON: x" * 1000, "events.streaming", 0, 7, "k" * 1024, raw,
                               NOW.isoformat())
    assert len(encode_record(record)) < MAX_RECORD_BYTES
    assert record["truncated"] is True and record["size"] == len(raw)
    assert len(record["valueBase64"]) == len(__import__("base64").b64encode(raw[:MAX_EMBEDDED_BYTES]))
    assert len(record["reason"]) < 1100


def test_a_small_value_is_embedded_whole_without_a_truncated_flag() -> None:
    record = event_dead_letter("r", "events.streaming", 0, 7, None, b'{"a": 1}', NOW.isoformat())
    assert record["value"] == '{"a": 1}' and "truncated" not in record and "size" not in record


def test_huge_row_loads_and_commands_are_cut_in_their_dead_letters() -> None:
    attributes = {"blob": "x" * 900_000}
    row = row_load_dead_letter("r", "customers", "c-1", attributes, NOW.isoformat(), {"topic": "schema.rows"})
    assert row["load"]["attributes"] is None and row["truncated"] is True and row["size"] > 900_000
    command = {"firingId": "f", "triggerId": "t", "customerId": "c-1", "event": {"blob": "x" * 900_000},
               "action": {"type": "webhook"}}
    action = action_dead_letter("webhook", "r", NOW.isoformat(), [], command, {"topic": "actions.webhook"})
    assert action["command"]["event"] is None and action["command"]["action"] == {"type": "webhook"}
    assert action["firingId"] == "f" and action["truncated"] is True
    assert len(encode_record(action)) < MAX_RECORD_BYTES


@pytest.mark.parametrize("raw", [None, b"", b"\xff\xfe", b"[]", b'{"triggerId": 5, "scheduledAt": "x"}',
                                 b'{"triggerId": "t", "scheduledAt": "soon"}',
                                 b'{"triggerId": "t", "scheduledAt": "2024-05-01T12:00:00"}',
                                 b'{"triggerId": "t", "scheduledAt": 18446744073709551616}'])
def test_malformed_ticks_are_refused_with_a_reason(raw: bytes | None) -> None:
    with pytest.raises(MalformedEvent):
        read_tick(raw)


def test_a_tick_as_the_scheduler_writes_it_is_read() -> None:
    raw = json.dumps({"triggerId": "t", "scheduledAt": NOW.isoformat()}).encode()
    assert read_tick(raw) == Tick("t", NOW)


@given(st.binary(max_size=64))
@FUZZ_SMALL
def test_arbitrary_tick_bytes_are_read_or_refused_with_malformed_event(raw: bytes) -> None:
    attempt(lambda: read_tick(raw), MalformedEvent)


# Intake over in-memory doubles (unit tests only): what the batch handlers do per record.

@_dataclass
class _Raw:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 1_714_564_800_000


class _Table(dict[str, Any]):
    def __init__(self, refuse: bool = False) -> None:
        super().__init__()
        self.refuse = refuse

    @property
    def data(self) -> _Table:
        return self

    def __setitem__(self, key: str, value: Any) -> None:
        if self.refuse:
            raise RuntimeError("store unavailable")
        super().__setitem__(key, value)


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes, *rest: Any) -> Any:
        import asyncio

        self.sent.append((topic, key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def _make_intake(rows: _Table | None = None) -> tuple[Any, _Producer]:
    from app.evaluation.evaluator import Evaluator
    from app.evaluation.timed import TimedEvaluation
    from app.intake.row_loads import RowLoads
    from app.intake.sources import SourceIntake
    from app.kafka.publisher import Publisher
    from app.metrics import Metrics
    from app.registry.catalogs import Catalogs
    from app.settings import Settings
    from app.state.aggregates import AggregateStore
    from app.state.rows import RowStore
    from app.timers.event_time import EventTime
    from app.timers.pending import PendingFirings
    from app.timers.service import Timers
    from app.timers.store import TimerStore
    from app.topics import Topics

    producer = _Producer()
    topics, catalogs, metrics = Topics(), Catalogs(Topics()), Metrics()
    publisher = Publisher(lambda: producer, topics, metrics, lambda: NOW)
    row_store = RowStore(rows if rows is not None else _Table(), publisher)  # type: ignore[arg-type]
    evaluator = Evaluator(topics, catalogs.triggers, publisher, row_store, _Table(), metrics,  # type: ignore[arg-type]
                          lambda: NOW)
    row_loads = RowLoads(topics, catalogs.tables, row_store, publisher, metrics, lambda: NOW)
    timed = TimedEvaluation(catalogs.triggers, evaluator, AggregateStore(_Table()),  # type: ignore[arg-type]
                            Timers(topics, catalogs.triggers,
                                   PendingFirings(topics, catalogs.triggers, TimerStore(_Table()),  # type: ignore[arg-type]
                                                  publisher, metrics, lambda: NOW),
                                   EventTime([topics.streaming], lambda tp: True), evaluator, row_store,
                                   AggregateStore(_Table()), metrics, lambda: NOW))  # type: ignore[arg-type]
    return SourceIntake(Settings(TRIGGERS_PARTITIONS=1), topics, evaluator, timed, row_loads, publisher), producer


def _sent(producer: _Producer, topic: str) -> list[dict[str, Any]]:
    return [json.loads(value) for t, _, value in producer.sent if t == topic]


async def test_a_row_load_with_an_unstorable_number_is_dead_lettered_and_the_next_one_loads() -> None:
    intake, producer = _make_intake()
    bad = json.dumps({"customerId": "c-1", "attributes": {"n": 18446744073709551616}}).encode()
    good = json.dumps({"customerId": "c-1", "attributes": {"n": 5}}).encode()
    await intake.on_source_batch(None, [_Raw("schema.rows", 0, 0, b"c-1", bad),
                                          _Raw("schema.rows", 0, 1, b"c-1", good)])
    letters = _sent(producer, "events.deadletter")
    assert len(letters) == 1 and "64-bit" in letters[0]["reason"]
    assert (letters[0]["topic"], letters[0]["offset"]) == ("schema.rows", 0)
    assert intake.row_loads.row_store.rows.data["customers|c-1"]["n"] == 5


async def test_an_unexpected_exception_dead_letters_the_record_and_the_next_one_is_handled() -> None:
    intake, producer = _make_intake(rows=_Table(refuse=True))
    load = json.dumps({"customerId": "c-1", "attributes": {"n": 1}}).encode()
    event = json.dumps({"type": "t", "customerId": "c-1"}).encode()
    await intake.on_source_batch(None, [_Raw("schema.rows", 0, 0, b"c-1", load),
                                          _Raw("events.streaming", 0, 1, b"c-1", event)])
    letters = _sent(producer, "events.deadletter")
    assert [letter["reason"] for letter in letters] == ["RuntimeError: store unavailable"]
    assert intake.publisher.counters["record_failures"] == 1 and intake.evaluator.counters["events.streaming"] == 1
    assert _sent(producer, "events.schema") == []  # refused before anything was published


@pytest.mark.parametrize("raw", [None, b"", b"\xff", b"[1]", b'{"kind": "row", "row": 5}',
                                 b'{"kind": "row", "row": {"table": "customers", "customer_id": 7}}',
                                 b'{"kind": "event", "event": {"id": "x"}}', b'{"kind": "nope"}',
                                 b'{"kind": "journey_event", "value": 5}', b'{"kind": {"a": 1}}'])
async def test_a_record_on_the_rerouted_topic_that_is_not_an_envelope_is_dead_lettered(raw: bytes | None) -> None:
    intake, producer = _make_intake()
    intake.register_rerouted("journey_event", _refuse_journey_value)
    await intake.on_rerouted_batch(None, [_Raw("triggers.internal.rerouted", 0, 3, b"c-1", raw)])
    letters = _sent(producer, "events.deadletter")
    assert len(letters) == 1 and letters[0]["offset"] == 3 and letters[0]["reason"]


async def _refuse_journey_value(data: dict[str, Any]) -> None:
    if not isinstance(data.get("value"), str):
        raise MalformedEvent("a rerouted journey event has a text 'value'")


async def test_a_record_too_large_to_produce_is_refused_before_the_producer() -> None:
    from app.domain.deadletters import RecordTooLarge

    intake, producer = _make_intake()
    with pytest.raises(RecordTooLarge):
        await intake.publisher.send("events.schema", "c-1", {"blob": "x" * MAX_RECORD_BYTES})
    assert producer.sent == []
