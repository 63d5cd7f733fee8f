"""The HTTP API's request checks, without a server: auth, body limits, events, definitions, dry runs."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import pytest

from app.domain.definitions import compile_definition
from app.domain.encoding import encode
from app.domain.models import Source
from app.domain.secrets import ApiToken
from app.web.api import (
    MAX_BODY_BYTES,
    ApiError,
    check_bearer,
    check_content_length,
    check_record_sizes,
    definition_for,
    dry_run_event,
    event_errors,
    parse_json_body,
    parse_test_request,
    prepare_events,
    public_action,
    public_errors,
    public_trigger,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def trigger(**overrides: Any) -> dict[str, Any]:
    return {"name": "t", "source": "streaming", "eventType": "transaction",
            "action": {"type": "webhook", "url": "https://example.test/hook"}, **overrides}


def raises(status: int, fun: Any, *args: Any, **kwargs: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        fun(*args, **kwargs)
    assert info.value.status == status, info.value.body
    assert isinstance(info.value.body["error"], str) and info.value.body["error"]
    return info.value


# ------------------------------------------------------------------------------ auth


TOKENS = (ApiToken("default", "t0ken"), ApiToken("ci", "other-t0ken"))


def test_no_token_configured_allows_everything_as_anonymous():
    assert check_bearer(None, ()) == "anonymous"
    assert check_bearer("Bearer whatever", ()) == "anonymous"


def test_correct_bearer_token_passes_scheme_case_insensitive():
    assert check_bearer("Bearer t0ken", TOKENS) == "default"
    assert check_bearer("bearer t0ken", TOKENS) == "default"
    assert check_bearer("  BEARER   other-t0ken ", TOKENS) == "ci"


@pytest.mark.parametrize("header", [None, "", "   ", "t0ken", "Basic dDBrZW4=", "Bearer", "Bearer ",
                                    "Bearer t0ke", "Bearer t0ken2", "Bearer T0KEN", "Bearer tökén"])
def test_missing_or_wrong_bearer_token_is_401_with_challenge(header: str | None):
    error = raises(401, check_bearer, header, TOKENS)
    assert error.headers["WWW-Authenticate"].startswith("Bearer")
    assert "t0ken" not in error.body["error"]


# ------------------------------------------------------------------------------ body


def test_content_length_over_the_limit_is_413():
    check_content_length(None)
    check_content_length(str(MAX_BODY_BYTES))
    assert raises(413, check_content_length, str(MAX_BODY_BYTES + 1)).body["limit"] == MAX_BODY_BYTES
    raises(400, check_content_length, "lots")


def test_body_over_the_limit_is_413():
    raises(413, parse_json_body, b"[" + b" " * MAX_BODY_BYTES + b"]")
    assert parse_json_body(b'{"a": 1}') == {"a": 1}


@pytest.mark.parametrize("raw", [b"", b"  ", b"not json", b"{", b'{"a": NaN}', b'{"a": Infinity}',
                                 b'{"a": 1e999}', b"\xff\xfe", b"[" * 100_000])
def test_non_json_body_is_400(raw: bytes):
    raises(400, parse_json_body, raw)


def test_records_too_large_for_kafka_are_413_listing_every_index():
    small = ("c-1", {"type": "t", "customerId": "c-1"})
    big = ("c-2", {"type": "t", "customerId": "c-2", "blob": "x" * 2000})
    check_record_sizes([small, small], limit=1000)
    error = raises(413, check_record_sizes, [small, big, small, big], limit=1000)
    assert [e["index"] for e in error.body["errors"]] == [1, 3]
    assert "nothing was published" in error.body["error"]


def test_records_are_compact_utf8_json():
    assert encode({"a": [1, 2], "b": "é"}) == '{"a":[1,2],"b":"é"}'.encode()
    with pytest.raises(ValueError):
        encode({"a": float("nan")})


# ------------------------------------------------------------------------------ events


def test_single_valid_event_gets_an_id():
    events = prepare_events({"type": "transaction", "customerId": "c-1", "amount": 5}, Source.STREAMING,
                            new_id=lambda: "generated")
    assert events == [{"type": "transaction", "customerId": "c-1", "amount": 5, "id": "generated"}]


def test_list_keeps_given_ids_and_fills_missing_ones_in_order():
    counter = itertools.count(1)
    events = prepare_events([
        {"type": "a", "customerId": "c-1", "id": "mine"},
        {"type": "b", "customerId": "c-2"},
        {"type": "c", "customerId": "c-3", "id": None},
        {"type": "d", "customerId": "c-4", "timestamp": "2024-05-01T12:00:00Z"},
    ], Source.STREAMING, new_id=lambda: f"gen-{next(counter)}")
    assert [e["id"] for e in events] == ["mine", "gen-1", "gen-2", "gen-3"]
    assert events[3]["timestamp"] == "2024-05-01T12:00:00Z"


def test_list_with_several_bad_items_reports_every_index():
    body = [
        {"type": "ok", "customerId": "c-1"},
        {"customerId": "c-2"},                                  # 1: no type
        {"type": "x", "customerId": ""},                         # 2: empty customer
        "not an object",                                         # 3
        {"type": "x", "customerId": "c-4", "timestamp": "yesterday"},  # 4
        {"type": "x", "customerId": "c-5", "id": 7},             # 5
        {"type": 5, "customerId": "c-6"},                        # 6
        {"type": "ok", "customerId": "c-7"},
        {"type": "x", "customerId": 42},                         # 8
        {"type": "x", "customerId": "c-9", "timestamp": 1714564800},  # 9
        {"type": "x", "customerId": "c-10", "amount": float("nan")},  # 10
    ]
    error = raises(400, prepare_events, body, Source.STREAMING)
    errors = error.body["errors"]
    assert [e["index"] for e in errors] == [1, 2, 3, 4, 5, 6, 8, 9, 10]
    by_index = {e["index"]: e["error"] for e in errors}
    assert "type" in by_index[1] and "customerId" in by_index[2]
    assert "object" in by_index[3] and "timestamp" in by_index[4]
    assert "'id'" in by_index[5] and "'type'" in by_index[6] and "customerId" in by_index[8]
    assert "timestamp" in by_index[9] and "JSON" in by_index[10]
    assert "nothing was published" in error.body["error"]


def test_single_bad_event_is_index_zero():
    items, errors = event_errors({"type": "x"}, Source.OUTCOME)
    assert items == [{"type": "x"}]
    assert errors == [{"index": 0, "error": "missing required field 'customerId'"}]


@pytest.mark.parametrize("body", [[], 5, "event", None, True])
def test_empty_list_and_non_objects_are_400(body: Any):
    raises(400, prepare_events, body, Source.STREAMING)


def test_overlong_ids_are_refused():
    error = raises(400, prepare_events, [{"type": "x", "customerId": "c" * 257}], Source.STREAMING)
    assert error.body["errors"][0]["index"] == 0


def test_outcomes_use_the_same_rules():
    events = prepare_events([{"type": "click", "customerId": "c-1", "offerId": "o-1"}], Source.OUTCOME,
                            new_id=lambda: "x")
    assert events[0]["id"] == "x"
    raises(400, prepare_events, [{"type": "click"}], Source.OUTCOME)


# ------------------------------------------------------------------------------ definitions


def test_definition_takes_the_path_id_when_the_body_has_none():
    assert definition_for(trigger(), "hv-1")["id"] == "hv-1"
    assert definition_for(trigger(id=None), "hv-1")["id"] == "hv-1"
    assert definition_for(trigger(id="hv-1"), "hv-1")["id"] == "hv-1"


def test_body_given_is_not_changed():
    body = trigger()
    definition_for(body, "hv-1")
    assert "id" not in body


def test_definition_id_that_differs_from_the_path_is_422():
    error = raises(422, definition_for, trigger(id="other"), "hv-1")
    assert error.body["triggerId"] == "hv-1"
    assert "other" in error.body["errors"][0]


def test_broken_expression_is_422_naming_the_expression_and_every_problem():
    error = raises(422, definition_for,
                   trigger(conditions=["event.amount >", "event.ok == 1", "import os"], priority=500), "hv-1")
    errors = error.body["errors"]
    assert any("event.amount >" in e and "conditions[0]" in e for e in errors)
    assert any("import os" in e for e in errors)
    assert any("priority" in e for e in errors)
    assert error.body["triggerId"] == "hv-1"


@pytest.mark.parametrize("body", [[], "x", 5, None])
def test_definition_that_is_not_an_object_is_422(body: Any):
    raises(422, definition_for, body, "hv-1")


def test_invalid_path_id_is_422():
    raises(422, definition_for, trigger(), "bad id with spaces")


def test_public_trigger_masks_secret_and_header_values():
    compiled = compile_definition(trigger(id="hv-1", action={
        "type": "webhook", "url": "https://example.test/hook", "secret": "s3cret",
        "headers": {"Authorization": "Bearer abc", "X-Team": "growth"}}))
    shown = public_trigger(compiled)
    text = repr(shown)
    assert "s3cret" not in text and "Bearer abc" not in text and "growth" not in text
    assert set(shown["action"]["headers"]) == {"Authorization", "X-Team"}
    assert shown["id"] == "hv-1" and shown["eventType"] == "transaction"


def test_public_trigger_masks_secrets_inside_urls():
    webhook = compile_definition(trigger(id="hv-2", action={
        "type": "webhook", "url": "https://user:pa55@hooks.example/in?api_key=k3y&team=growth"}))
    assert public_trigger(webhook)["action"]["url"] == "https://***:***@hooks.example/in?api_key=***&team=***"
    recommend = compile_definition(trigger(id="hv-3", action={
        "type": "fire_recommend", "decisionFlowId": "f", "deliveryUrl": "https://push.example/r?sig=abc"}))
    assert public_trigger(recommend)["action"]["deliveryUrl"] == "https://push.example/r?sig=***"
    # The compiled trigger itself keeps the real URL: the sinks need it.
    assert "k3y" in webhook.command_action["url"]


def test_public_action_and_errors_mask_urls_without_changing_the_original():
    action = {"type": "webhook", "url": "https://u:p@h.example/?token=t", "signed": True}
    assert public_action(action) == {"type": "webhook", "url": "https://***:***@h.example/?token=***",
                                     "signed": True}
    assert action["url"] == "https://u:p@h.example/?token=t"
    assert public_errors(["action.url: https://u:p@h.example/?x=1 is refused"]) == [
        "action.url: https://***:***@h.example/?x=*** is refused"]


# ------------------------------------------------------------------------------ dry runs


def test_test_request_shapes():
    run = parse_test_request({"event": {"type": "t", "customerId": "c"}})
    assert run.customer is None and not run.customer_given and run.definition is None
    run = parse_test_request({"event": {"type": "t", "customerId": "c"}, "customer": {"segment": "vip"},
                              "definition": trigger()})
    assert run.customer == {"segment": "vip"} and run.customer_given and run.definition == trigger()
    assert parse_test_request({"event": {}, "customer": None}).customer_given


@pytest.mark.parametrize("body", [[], {"customer": {}}, {"event": []}, {"event": {}, "customer": 5},
                                  {"event": {}, "extra": 1}])
def test_bad_test_requests_are_400(body: Any):
    raises(400, parse_test_request, body)


def test_dry_run_event_parses_like_intake():
    event = dry_run_event({"type": "t", "customerId": "c-1", "amount": 3}, Source.OUTCOME, NOW)
    assert event.id == "dry-run" and event.source is Source.OUTCOME and event.timestamp == NOW
    assert event.fields == {"amount": 3}
    error = raises(400, dry_run_event, {"type": "t"}, Source.STREAMING, NOW)
    assert "customerId" in error.body["error"]
