"""Raw topic messages turned into Events, or MalformedEvent with a clear reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.intake import load_json, parse_cdc_event, parse_event, strict_json
from app.domain.models import Source, iso_text
from app.errors import MalformedEvent

ARRIVAL = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def raw(**data: Any) -> bytes:
    return json.dumps(data).encode()


def parse(value: bytes | None, source: Source = Source.STREAMING):
    return parse_event(value, source, "events.streaming:0:17", ARRIVAL)


# ---------------------------------------------------------------- flat events


def test_parse_event_valid():
    event = parse(raw(id="e1", type="transaction", customerId="c-42", amount=1500,
                      channel="web", timestamp="2024-05-01T10:00:00Z", source="spoofed"))
    assert (event.id, event.type, event.customer_id) == ("e1", "transaction", "c-42")
    assert event.source is Source.STREAMING
    assert event.timestamp == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert event.fields == {"amount": 1500, "channel": "web"}


@pytest.mark.parametrize("source", [Source.STREAMING, Source.OUTCOME, Source.SCHEMA_TABLE])
def test_source_comes_from_the_topic(source):
    assert parse(raw(type="click", customerId="c"), source).source is source


def test_as_json_is_the_flat_contract_object():
    event = parse(raw(id="e1", type="click", customerId="c-42", offerId="o-1",
                      timestamp="2024-05-01T10:00:00+00:00"), Source.OUTCOME)
    assert event.as_json() == {"offerId": "o-1", "id": "e1", "type": "click", "customerId": "c-42",
                               "source": "outcome", "timestamp": "2024-05-01T10:00:00+00:00"}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (raw(customerId="c"), "missing required field 'type'"),
        (raw(type="t"), "missing required field 'customerId'"),
        (raw(type="t", customerId=None), "'customerId' must be a non-empty string"),
        (raw(type="t", customerId=""), "'customerId' must be a non-empty string"),
        (raw(type="t", customerId=42), "'customerId' must be a string"),
        (raw(type="t", customerId=["c"]), "'customerId' must be a string"),
        (raw(type="t", customerId="c" * 257), "'customerId' is longer than 256"),
        (raw(type="", customerId="c"), "'type' must be a non-empty string"),
        (raw(type=7, customerId="c"), "'type' must be a string"),
        (raw(type="t", customerId="c", id=5), "'id' must be a string"),
        (b"not json", "not valid JSON"),
        (b"{\"type\": \"t\",", "not valid JSON"),
        (b"\xff\xfe\xfa", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[" * 100_000, "not valid JSON"),
        (b'[{"type": "t", "customerId": "c"}]', "not list"),
        (b'"text"', "not str"),
        (b"42", "not int"),
        (b"null", "not NoneType"),
        (None, "null value"),
        (raw(type="t", customerId="c", timestamp="yesterday"), "'timestamp' is not ISO 8601"),
        (raw(type="t", customerId="c", timestamp="2024-13-01T00:00:00Z"),
         "'timestamp' is not ISO 8601"),
        (raw(type="t", customerId="c", timestamp=1714564800),
         "'timestamp' must be an ISO 8601 string"),
    ],
)
def test_malformed_events_say_why(value, reason):
    with pytest.raises(MalformedEvent) as info:
        parse(value)
    assert reason in info.value.reason


@pytest.mark.parametrize(("given", "expected"), [({}, "events.streaming:0:17"),
                                                ({"id": None}, "events.streaming:0:17"),
                                                ({"id": ""}, "events.streaming:0:17"),
                                                ({"id": "e-9"}, "e-9")])
def test_id_fallback_used_when_missing(given, expected):
    assert parse(raw(type="t", customerId="c", **given)).id == expected


def test_fallback_id_is_stable_for_a_replayed_message():
    message = raw(type="t", customerId="c")
    assert parse(message).id == parse(message).id


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        (None, ARRIVAL),
        ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T10:00:00+00:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T12:00:00+02:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T10:00:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T10:00:00.250", datetime(2024, 5, 1, 10, 0, 0, 250_000, tzinfo=UTC)),
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
    ],
)
def test_timestamp(timestamp, expected):
    data = {"type": "t", "customerId": "c"}
    if timestamp is not None:
        data["timestamp"] = timestamp
    event = parse(json.dumps(data).encode())
    assert event.timestamp == expected
    assert event.timestamp.utcoffset() is not None


def test_naive_timestamp_is_treated_as_utc():
    event = parse(raw(type="t", customerId="c", timestamp="2024-05-01T10:00:00"))
    assert event.timestamp.utcoffset() == timedelta(0)


def test_offset_timestamp_keeps_its_instant():
    event = parse(raw(type="t", customerId="c", timestamp="2024-05-01T12:00:00+02:00"))
    assert event.timestamp.utcoffset() == timedelta(hours=2)
    assert event.timestamp == datetime(2024, 5, 1, 10, tzinfo=UTC)


# ---------------------------------------------------------------- CDC events

ROW_BEFORE = {"customer_id": "c-1", "status": "trial", "id": 7}
ROW_AFTER = {"customer_id": "c-1", "status": "active", "id": 7}


def envelope(op: str = "u", before: Any = ROW_BEFORE, after: Any = ROW_AFTER,
             table: Any = "accounts", **extra: Any) -> dict[str, Any]:
    return {"op": op, "before": before, "after": after, "source": {"table": table, "db": "app"},
            "ts_ms": 1714564800000, **extra}


def cdc(data: Any, column: str = "customer_id"):
    value = data if isinstance(data, bytes) else json.dumps(data).encode()
    return parse_cdc_event(value, "events.cdc:3:99", ARRIVAL, column)


@pytest.mark.parametrize("wrapped", [False, True], ids=["bare", "schema-payload"])
def test_cdc_with_and_without_wrapper(wrapped):
    body = envelope()
    event = cdc({"schema": {"type": "struct"}, "payload": body} if wrapped else body)
    assert (event.id, event.type) == ("events.cdc:3:99", "accounts.update")
    assert event.customer_id == "c-1"
    assert event.source is Source.CDC
    assert event.fields == {"customer_id": "c-1", "status": "active", "table": "accounts",
                            "op": "update", "before": ROW_BEFORE, "after": ROW_AFTER}


@pytest.mark.parametrize(
    ("op", "before", "after", "type_", "status"),
    [
        ("c", None, ROW_AFTER, "accounts.insert", "active"),
        ("r", None, ROW_AFTER, "accounts.insert", "active"),
        ("u", ROW_BEFORE, ROW_AFTER, "accounts.update", "active"),
        ("d", ROW_BEFORE, None, "accounts.delete", "trial"),
    ],
)
def test_cdc_operations(op, before, after, type_, status):
    event = cdc(envelope(op, before, after))
    assert event.type == type_
    assert event.fields["status"] == status
    assert event.fields["op"] == type_.split(".")[1]
    assert (event.fields["before"], event.fields["after"]) == (before, after)


def test_cdc_delete_reads_customer_from_before():
    event = cdc(envelope("d", {"customer_id": "gone", "status": "x"}, None))
    assert event.customer_id == "gone"


@pytest.mark.parametrize(("value", "expected"),
                         [(42, "42"), (0, "0"), ("c-9", "c-9"), ("c" * 256, "c" * 256), (10**255, str(10**255))])
def test_cdc_customer_id_becomes_text(value, expected):
    assert cdc(envelope(after={"customer_id": value})).customer_id == expected


def test_cdc_custom_customer_column():
    event = cdc(envelope(after={"owner": "c-7", "customer_id": "other"}), column="owner")
    assert event.customer_id == "c-7"


def test_cdc_ts_ms_is_the_timestamp():
    assert cdc(envelope(ts_ms=1714564800123)).timestamp == datetime(
        2024, 5, 1, 12, 0, 0, 123_000, tzinfo=UTC)


@pytest.mark.parametrize("ts_ms", ["absent", None, "1714564800000", True])
def test_cdc_without_numeric_ts_ms_uses_arrival(ts_ms):
    body = envelope()
    if ts_ms == "absent":
        del body["ts_ms"]
    else:
        body["ts_ms"] = ts_ms
    assert cdc(body).timestamp == ARRIVAL


@pytest.mark.parametrize(
    ("data", "column", "reason"),
    [
        (envelope(after={"status": "x"}), "customer_id", "no customer id in column 'customer_id'"),
        (envelope(after={"customer_id": None}), "customer_id", "no customer id"),
        (envelope(after={"customer_id": ""}), "customer_id", "no customer id"),
        (envelope(after={"customer_id": True}), "customer_id", "no customer id"),
        (envelope(after={"customer_id": 4.5}), "customer_id", "no customer id"),
        (envelope(after={"customer_id": "c"}), "owner", "no customer id in column 'owner'"),
        (envelope("d", None, ROW_AFTER), "customer_id", "no row in before"),
        (envelope("u", ROW_BEFORE, None), "customer_id", "no row in after"),
        (envelope("c", None, [1]), "customer_id", "no row in after"),
        (envelope("x"), "customer_id", "unknown op 'x'"),
        (envelope("t"), "customer_id", "unknown op"),
        ({k: v for k, v in envelope().items() if k != "op"}, "customer_id", "unknown op None"),
        ({k: v for k, v in envelope().items() if k != "source"}, "customer_id", "source.table"),
        (envelope(table=None), "customer_id", "source.table"),
        (envelope(table=""), "customer_id", "source.table"),
        (envelope(table=5), "customer_id", "source.table"),
        ({**envelope(), "source": "accounts"}, "customer_id", "source.table"),
        (b"{not json", "customer_id", "not valid JSON"),
        (b"[]", "customer_id", "not list"),
        (envelope(after={"customer_id": "c" * 257}), "customer_id",
         "customer id in column 'customer_id' is longer than 256 characters"),
        (envelope(after={"customer_id": 10**256}), "customer_id", "longer than 256 characters"),
        (envelope(table="t" * 250), "customer_id", "event type 'tttt"),
    ],
)
def test_cdc_malformed(data, column, reason):
    with pytest.raises(MalformedEvent) as info:
        cdc(data, column)
    assert reason in info.value.reason


def test_cdc_null_value_is_malformed():
    with pytest.raises(MalformedEvent, match="null value"):
        parse_cdc_event(None, "fb", ARRIVAL, "customer_id")


@pytest.mark.parametrize(
    "ts_ms", [b"100000000000000000000", b"253402300800000", b"1e300", b"NaN", b"-Infinity"])
def test_cdc_out_of_range_ts_ms_is_malformed_or_ignored(ts_ms):
    body = json.dumps(envelope(ts_ms=0)).encode().replace(b'"ts_ms": 0', b'"ts_ms": ' + ts_ms)
    try:
        event = cdc(body)
    except MalformedEvent:
        return  # dead-lettering is acceptable
    assert event.timestamp == ARRIVAL  # so is falling back to arrival time


def test_cdc_offset_of_arrival_is_kept_when_no_ts_ms():
    arrival = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    body = {k: v for k, v in envelope().items() if k != "ts_ms"}
    event = parse_cdc_event(json.dumps(body).encode(), "fb", arrival, "customer_id")
    assert event.timestamp == arrival


# -- the fast JSON path agrees with the strict parser ----------------------------------------

_EDGE_CASES = [
    b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}', b'{"a": 1e999}', b'{"a": -1e400}',
    b'{"a": 123456789012345678901234567890}', b'{"a": 18446744073709551616}', b'{"a": -9223372036854775809}',
    b'{"a": 1234567890123456789}', b'{"a": 0.12345678901234567890123}',
    b'{"a": "\\ud800"}', b'{"a": "\\udc00x"}', b'{"a": "\\ud83d\\ude00"}', b'{"a": "\xed\xa0\x80"}',
    b'{"a":1,"a":2}', b'\xef\xbb\xbf{"a":1}', b'{"a": "\xff"}', b' {"a":1} ', b'{"a":-0}', b'{"a":-0.0}',
    b'{"a":1E5}', b'{"a":5e-324}', b'{"a":1.7976931348623157e308}', b'[' * 64 + b']' * 64,
    b'[' * 65 + b']' * 65, b'{"a":' * 70 + b'1' + b'}' * 70, b'{"a": [1, 2, {"b": null}]}',
    b'[' * 40 + b'{"a":' * 30 + b'1' + b'}' * 30 + b']' * 40, b'{"a": "1234567890123456789"}',
    '{"a": 1}'.encode("utf-16"), b'{"a": 1', b'', b'nul', b'{"a": tru}', b'{"a": "tab\there"}',
]


def _outcome(parse: Any, raw: bytes) -> tuple[str, Any]:
    try:
        value = parse(raw)
    except (ValueError, RecursionError) as exc:
        return "error", type(exc).__name__
    return "value", (value, json.dumps(value, sort_keys=True) if not isinstance(value, float) else repr(value))


@pytest.mark.parametrize("raw", _EDGE_CASES, ids=range(len(_EDGE_CASES)))
def test_fast_json_path_agrees_with_the_strict_parser_on_edge_cases(raw: bytes) -> None:
    fast, strict = _outcome(load_json, raw), _outcome(strict_json, raw)
    assert fast[0] == strict[0]
    if fast[0] == "value":
        assert fast[1][1] == strict[1][1]  # same values, same types (an int stays an int)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)


@given(_json_values)
@settings(max_examples=400, deadline=None)
def test_fast_json_path_agrees_with_the_strict_parser(value: Any) -> None:
    raw = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    fast, strict = _outcome(load_json, raw), _outcome(strict_json, raw)
    assert fast[0] == strict[0]
    if fast[0] == "value":
        assert fast[1][1] == strict[1][1]


# -- the event's timestamp text ------------------------------------------------------------

_offsets = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                            timezone(timedelta(hours=-3)), timezone(timedelta(hours=5, minutes=30, seconds=15))])


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)), _offsets)
@settings(max_examples=400, deadline=None)
def test_timestamp_text_is_isoformat(moment: datetime, offset: timezone) -> None:
    aware = moment.replace(tzinfo=offset)
    assert iso_text(aware) == aware.isoformat()
