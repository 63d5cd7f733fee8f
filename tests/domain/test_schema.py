"""Schema tables: typed columns and the values an update_attribute action or a data load writes."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from app.domain.definitions import compile_schema_table
from app.domain.schema import CUSTOMERS, DEFAULT_CUSTOMERS, ColumnTypeError, SchemaTable, check_row_values
from app.errors import InvalidDefinition

TABLE = compile_schema_table({
    "name": "customers",
    "columns": {"tier": "string", "score": "number", "vip": "boolean", "since": "timestamp"},
})
OPEN_TABLE = compile_schema_table({
    "name": "profiles", "columns": {"score": "number"}, "allowUnknownColumns": True,
})
BERLIN = timezone(timedelta(hours=2))


def problem(table: SchemaTable, values: dict[str, Any]) -> str:
    with pytest.raises(ColumnTypeError) as info:
        check_row_values(table, values)
    return str(info.value)


def table_errors(value: Any, key: str | None = None) -> list[str]:
    with pytest.raises(InvalidDefinition) as info:
        compile_schema_table(value, key)
    assert info.value.errors
    return info.value.errors


# --- accepted values -------------------------------------------------------------------------


@pytest.mark.parametrize(("column", "value", "stored"), [
    ("tier", "gold", "gold"),
    ("tier", "", ""),
    ("score", 42, 42),
    ("score", -1.5, -1.5),
    ("score", 0, 0),
    ("vip", True, True),
    ("vip", False, False),
    ("since", datetime(2024, 5, 1, 12, 0, tzinfo=UTC), "2024-05-01T12:00:00+00:00"),
    ("since", datetime(2024, 5, 1, 14, 0, tzinfo=BERLIN), "2024-05-01T14:00:00+02:00"),
    ("since", "2024-05-01T12:00:00Z", "2024-05-01T12:00:00+00:00"),
    ("since", "2024-05-01T12:00:00.250+00:00", "2024-05-01T12:00:00.250000+00:00"),
    ("since", "2024-05-01T14:00:00+02:00", "2024-05-01T14:00:00+02:00"),
])
def test_values_that_fit_their_column(column, value, stored):
    assert check_row_values(TABLE, {column: value}) == {column: stored}


def test_stored_values_are_json():
    stored = check_row_values(TABLE, {"tier": "gold", "score": 1.5, "vip": True,
                                      "since": datetime(2024, 5, 1, tzinfo=UTC)})
    assert json.loads(json.dumps(stored, allow_nan=False)) == stored


def test_stored_timestamp_reads_back_as_the_same_moment():
    moment = datetime(2024, 5, 1, 14, 0, 5, 123456, tzinfo=BERLIN)
    stored = check_row_values(TABLE, {"since": moment})["since"]
    assert isinstance(stored, str)
    assert datetime.fromisoformat(stored) == moment


@pytest.mark.parametrize("column", ["tier", "score", "vip", "since"])
def test_none_clears_any_column(column):
    assert check_row_values(TABLE, {column: None}) == {column: None}


def test_empty_update_is_empty():
    assert check_row_values(TABLE, {}) == {}


def test_check_does_not_change_its_input():
    values = {"since": datetime(2024, 5, 1, tzinfo=UTC)}
    check_row_values(TABLE, values)
    assert isinstance(values["since"], datetime)


# --- refused values ----------------------------------------------------------------------------


@pytest.mark.parametrize(("column", "value"), [
    ("tier", 5),
    ("tier", True),
    ("tier", ["gold"]),
    ("score", "5"),
    ("score", True),  # bool is not a number
    ("score", False),
    ("score", [1]),
    ("vip", 1),
    ("vip", 0),
    ("vip", "true"),
    ("since", 1714564800),
    ("since", date(2024, 5, 1)),
    ("since", True),
    ("since", "yesterday"),
    ("since", ""),
])
def test_values_of_the_wrong_type_are_refused(column, value):
    message = problem(TABLE, {column: value})
    assert repr(column) in message


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(value):
    message = problem(TABLE, {"score": value})
    assert "'score'" in message
    assert "finite" in message


@pytest.mark.parametrize("value", [datetime(2024, 5, 1, 12, 0), "2024-05-01T12:00:00", "2024-05-01"])
def test_timestamps_without_a_time_zone_are_refused(value):
    message = problem(TABLE, {"since": value})
    assert "'since'" in message
    assert "time zone" in message


def test_unknown_column_is_refused_naming_table_and_column():
    message = problem(TABLE, {"tier": "gold", "favouriteColour": "blue"})
    assert "'customers'" in message
    assert "'favouriteColour'" in message


def test_several_problems_are_reported_together():
    message = problem(TABLE, {"tier": 5, "score": "x", "vip": "yes", "since": "soon", "nope": 1})
    for column in ("tier", "score", "vip", "since", "nope"):
        assert repr(column) in message
    assert message.count("; ") == 4


def test_one_bad_value_refuses_the_whole_update():
    with pytest.raises(ColumnTypeError):
        check_row_values(TABLE, {"tier": "gold", "score": "high"})


# --- unknown columns ---------------------------------------------------------------------------------


def test_unknown_columns_are_kept_when_the_table_allows_them():
    values = {"score": 3, "nickname": "Ada", "tags": ["a", "b"], "prefs": {"email": True}, "n": 1.5,
              "flag": False, "empty": None}
    assert check_row_values(OPEN_TABLE, values) == values


def test_unknown_datetime_is_stored_as_iso_text():
    moment = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert check_row_values(OPEN_TABLE, {"seen": moment}) == {"seen": "2024-05-01T12:00:00+00:00"}


def test_known_columns_keep_their_type_in_an_open_table():
    assert "'score'" in problem(OPEN_TABLE, {"score": "high", "other": "anything"})


@pytest.mark.parametrize("value", [math.nan, math.inf, object(), {1, 2}, b"bytes"])
def test_unknown_columns_still_hold_only_json_values(value):
    with pytest.raises(ColumnTypeError):
        check_row_values(OPEN_TABLE, {"other": value})


def test_bad_unknown_column_is_reported_with_the_other_problems():
    message = problem(OPEN_TABLE, {"other": math.nan, "score": "high"})
    assert "'other'" in message
    assert "'score'" in message


@pytest.mark.parametrize("value", [[math.nan], {"at": datetime(2024, 5, 1, tzinfo=UTC)}])
def test_nested_values_of_unknown_columns_are_json(value):
    try:
        stored = check_row_values(OPEN_TABLE, {"other": value})
    except ColumnTypeError:
        return  # refusing is fine
    json.dumps(stored, allow_nan=False)  # storing it converted is fine too


# --- the default customers table -------------------------------------------------------------------


def test_default_customers_table_takes_any_column():
    assert DEFAULT_CUSTOMERS.name == CUSTOMERS == "customers"
    assert DEFAULT_CUSTOMERS.columns == {}
    assert DEFAULT_CUSTOMERS.allow_unknown_columns is True
    values = {"tier": "gold", "score": 7, "vip": True, "tags": ["x"], "cleared": None}
    assert check_row_values(DEFAULT_CUSTOMERS, values) == values


def test_default_customers_table_stores_datetimes_as_text():
    stored = check_row_values(DEFAULT_CUSTOMERS, {"since": datetime(2024, 5, 1, tzinfo=UTC)})
    assert stored == {"since": "2024-05-01T00:00:00+00:00"}


# --- compile_schema_table ------------------------------------------------------------------------


def test_compile_schema_table_defaults():
    table = compile_schema_table({"name": "orders"}, key="orders")
    assert table.name == "orders"
    assert table.columns == {}
    assert table.allow_unknown_columns is False
    assert "'orders'" in problem(table, {"anything": 1})


def test_compile_schema_table_accepts_json_bytes():
    raw = json.dumps({"name": "orders", "columns": {"total": "number"}}).encode()
    assert compile_schema_table(raw).columns == {"total": "number"}


@pytest.mark.parametrize("name", ["", "has space", "-x", "a/b", "x" * 129])
def test_compile_schema_table_name_pattern(name):
    errors = table_errors({"name": name})
    assert any("name" in e for e in errors)


@pytest.mark.parametrize("column_type", ["integer", "String", "date", "json", 1, None])
def test_compile_schema_table_rejects_unknown_column_types(column_type):
    errors = table_errors({"name": "t", "columns": {"c": column_type}})
    assert any("columns" in e for e in errors)


@pytest.mark.parametrize("flag", ["true", 1, 0, "yes", None])
def test_compile_schema_table_allow_unknown_columns_is_strict(flag):
    errors = table_errors({"name": "t", "allowUnknownColumns": flag})
    assert any("allowUnknownColumns" in e for e in errors)


def test_compile_schema_table_rejects_unknown_fields():
    errors = table_errors({"name": "t", "allow_unknown_columns": True})
    assert any("allow_unknown_columns" in e for e in errors)


def test_compile_schema_table_name_must_match_the_key():
    with pytest.raises(InvalidDefinition) as info:
        compile_schema_table({"name": "orders"}, key="customers")
    assert info.value.trigger_id == "orders"
    assert any("does not match" in e for e in info.value.errors)
