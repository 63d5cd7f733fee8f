"""Endpoint health: origins, outcomes, the failing run, disabling and its reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.domain.endpoint_health import (
    EndpointState,
    EndpointStatus,
    InvalidEndpointRecord,
    Outcome,
    changed,
    enabled,
    observe,
    origin_of,
    outcome_of,
    parse_state,
    refusal,
)

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
HOURS = timedelta(hours=120)
ORIGIN = "https://hooks.example.com:443"
HEALTHY = EndpointState(origin=ORIGIN)


@pytest.mark.parametrize(("url", "origin"), [
    ("https://hooks.example.com/a/b?token=x", "https://hooks.example.com:443"),
    ("HTTPS://Hooks.Example.com:443/other", "https://hooks.example.com:443"),
    ("http://user:secret@hooks.example.com/x", "http://hooks.example.com:80"),
    ("http://127.0.0.1:8080/path", "http://127.0.0.1:8080"),
    ("http://[::1]:9000/", "http://[::1]:9000"),
])
def test_origin_is_scheme_host_and_port_without_credentials(url: str, origin: str) -> None:
    assert origin_of(url) == origin


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://example.com/x", "scheme must be http or https"),
    ("example.com/x", "scheme must be http or https, not 'missing'"),
    ("http:///path", "has no host"),
    ("http://example.com:port/", "not a valid URL"),
])
def test_a_url_without_an_origin_is_refused_naming_the_field(url: str, message: str) -> None:
    with pytest.raises(ValueError, match="url: ") as raised:
        origin_of(url)
    assert message in str(raised.value)


@pytest.mark.parametrize(("delivered", "status", "outcome"), [
    (True, 200, Outcome.SUCCESS),
    (True, 204, Outcome.SUCCESS),
    (False, 500, Outcome.FAILURE),
    (False, 503, Outcome.FAILURE),
    (False, None, Outcome.FAILURE),  # connection refused, timeout
    (False, 408, Outcome.FAILURE),
    (False, 429, Outcome.FAILURE),
    (False, 400, Outcome.NEUTRAL),
    (False, 404, Outcome.NEUTRAL),
    (False, 410, Outcome.NEUTRAL),
    (False, 422, Outcome.NEUTRAL),
])
def test_only_endpoint_faults_count_as_failures(delivered: bool, status: int | None, outcome: Outcome) -> None:
    assert outcome_of(delivered, status) is outcome


def test_a_first_failure_starts_a_failing_run() -> None:
    after = observe(HEALTHY, Outcome.FAILURE, T0, HOURS, "HTTP 503")
    assert after.state is EndpointStatus.FAILING and after.since == T0 and after.last_failure == "HTTP 503"
    assert changed(HEALTHY, after)


def test_more_failures_keep_the_run_start_and_are_not_a_change() -> None:
    failing = observe(HEALTHY, Outcome.FAILURE, T0, HOURS, "HTTP 503")
    later = observe(failing, Outcome.FAILURE, T0 + timedelta(hours=119), HOURS, "HTTP 500")
    assert later.state is EndpointStatus.FAILING and later.since == T0 and later.last_failure == "HTTP 500"
    assert not changed(failing, later)


def test_failing_for_the_whole_period_disables() -> None:
    failing = observe(HEALTHY, Outcome.FAILURE, T0, HOURS)
    disabled = observe(failing, Outcome.FAILURE, T0 + HOURS, HOURS, "gave up after 5 attempts: HTTP 502")
    assert disabled.state is EndpointStatus.DISABLED and disabled.since == T0
    assert changed(failing, disabled)


def test_fractional_hours_scale_the_period_down() -> None:
    short = timedelta(hours=0.0003)  # 1.08 s
    failing = observe(HEALTHY, Outcome.FAILURE, T0, short)
    assert observe(failing, Outcome.FAILURE, T0 + timedelta(seconds=1), short).state is EndpointStatus.FAILING
    assert observe(failing, Outcome.FAILURE, T0 + timedelta(seconds=1.1), short).state is EndpointStatus.DISABLED


def test_a_success_ends_the_run_so_the_next_failure_starts_over() -> None:
    failing = observe(HEALTHY, Outcome.FAILURE, T0, HOURS)
    healed = observe(failing, Outcome.SUCCESS, T0 + timedelta(hours=100), HOURS)
    assert healed.state is EndpointStatus.HEALTHY and healed.last_failure is None
    again = observe(healed, Outcome.FAILURE, T0 + timedelta(hours=121), HOURS)
    assert again.state is EndpointStatus.FAILING and again.since == T0 + timedelta(hours=121)


def test_a_bad_request_neither_extends_nor_ends_a_run() -> None:
    failing = observe(HEALTHY, Outcome.FAILURE, T0, HOURS)
    assert observe(failing, Outcome.NEUTRAL, T0 + HOURS * 2, HOURS) == failing
    assert observe(HEALTHY, Outcome.NEUTRAL, T0, HOURS) == HEALTHY


def test_a_success_on_a_healthy_endpoint_changes_nothing() -> None:
    assert observe(HEALTHY, Outcome.SUCCESS, T0, HOURS) == HEALTHY


def test_disabled_stays_disabled_until_enabled() -> None:
    disabled = EndpointState(origin=ORIGIN, state=EndpointStatus.DISABLED, since=T0, last_failure="HTTP 500")
    for outcome in Outcome:
        assert observe(disabled, outcome, T0 + HOURS * 3, HOURS) == disabled
    assert enabled(ORIGIN, T0 + HOURS * 3) == EndpointState(origin=ORIGIN, since=T0 + HOURS * 3)


def test_the_refusal_names_the_endpoint_the_run_and_how_to_enable_it() -> None:
    disabled = EndpointState(origin=ORIGIN, state=EndpointStatus.DISABLED, since=T0, last_failure="HTTP 500")
    reason = refusal(disabled)
    assert reason is not None
    assert reason.startswith(f"endpoint {ORIGIN} is disabled: only failures since 2026-12-01T10:00:00+00:00")
    assert "last failure: HTTP 500" in reason and "endpoints enable" in reason
    assert refusal(None) is None and refusal(HEALTHY) is None
    assert refusal(observe(HEALTHY, Outcome.FAILURE, T0, HOURS)) is None


def test_a_failure_reason_is_masked_and_bounded() -> None:
    failing = observe(HEALTHY, Outcome.FAILURE, T0, HOURS,
                      "ConnectError: http://u:pw@hooks.example.com/x?key=secret " + "x" * 1000)
    assert failing.last_failure is not None
    assert "pw" not in failing.last_failure and "secret" not in failing.last_failure
    assert len(failing.last_failure) <= 301


def test_a_record_round_trips_and_its_key_is_its_origin() -> None:
    state = EndpointState(origin=ORIGIN, state=EndpointStatus.DISABLED, since=T0, last_failure="HTTP 500")
    raw = str(state.to_json()).replace("'", '"').encode()
    assert parse_state(ORIGIN, raw) == state
    assert parse_state("http://other:80", raw).origin == "http://other:80"


@pytest.mark.parametrize("raw", [b"not json", b'{"state": "sleepy"}', b'{"since": "yesterday"}',
                                 b'{"since": "2026-12-01T10:00:00"}'])
def test_an_invalid_record_is_refused_naming_the_origin(raw: bytes) -> None:
    with pytest.raises(InvalidEndpointRecord, match="endpoint state for 'http://h:80' is invalid"):
        parse_state("http://h:80", raw)
