"""Endpoint health: per origin healthy, failing (since an unbroken run of failures began) or
disabled, decided from delivery outcomes. Pure: no I/O, time passed in."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from app.domain.secrets import mask_urls_in_text

DEFAULT_PORTS = {"http": 80, "https": 443}
# Statuses that blame the request, not the endpoint: the endpoint answered, so it is up.
# 408 (timeout) and 429 (overloaded) say the endpoint could not serve it: those count.
_ENDPOINT_FAULTS_4XX = frozenset({408, 429})
MAX_FAILURE_CHARS = 300
ENABLE_HINT = "re-enable with `faust -A app.main endpoints enable URL`"


class EndpointStatus(StrEnum):
    HEALTHY = "healthy"
    FAILING = "failing"
    DISABLED = "disabled"


class Outcome(StrEnum):
    """What one delivery says about its endpoint."""

    SUCCESS = "success"
    FAILURE = "failure"
    NEUTRAL = "neutral"  # the request was refused as bad: says nothing about the endpoint


class EndpointState(BaseModel):
    """One record of `endpoints.health`, keyed by its origin."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    origin: str
    state: EndpointStatus = EndpointStatus.HEALTHY
    # failing/disabled: the first failure of the unbroken run; healthy: when it became so.
    since: AwareDatetime | None = None
    last_failure: str | None = Field(default=None, alias="lastFailure")

    def to_json(self) -> dict[str, Any]:
        return {"origin": self.origin, "state": self.state.value,
                "since": self.since.isoformat() if self.since else None, "lastFailure": self.last_failure}


class InvalidEndpointRecord(ValueError):
    """A record on `endpoints.health` that is not an endpoint state."""


def parse_state(origin: str, raw: bytes) -> EndpointState:
    """The record's state; its key is the origin whatever the value says."""
    try:
        value = json.loads(raw)
    except ValueError:
        raise InvalidEndpointRecord(f"endpoint state for {origin!r} is invalid: not JSON") from None
    if not isinstance(value, dict):
        raise InvalidEndpointRecord(f"endpoint state for {origin!r} is invalid: not a JSON object")
    try:
        return EndpointState.model_validate({**value, "origin": origin})
    except ValidationError as exc:
        raise InvalidEndpointRecord(f"endpoint state for {origin!r} is invalid: "
                                    f"{exc.errors(include_url=False, include_input=False)}") from None


def origin_of(url: str) -> str:
    """`scheme://host:port` of an http(s) URL: no userinfo, path or query, the default port
    written out, so every URL of one server shares its health. ValueError names what is wrong."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError("url: not a valid URL (its port is not a number?)") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"url: the scheme must be http or https, not {scheme or 'missing'!r}")
    if not parts.hostname:
        raise ValueError("url: has no host")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{scheme}://{host}:{port or DEFAULT_PORTS[scheme]}"


def outcome_of(delivered: bool, status: int | None) -> Outcome:
    if delivered:
        return Outcome.SUCCESS
    if status is not None and 400 <= status < 500 and status not in _ENDPOINT_FAULTS_4XX:
        return Outcome.NEUTRAL
    return Outcome.FAILURE


def observe(state: EndpointState, outcome: Outcome, at: datetime, disable_after: timedelta,
            failure: str | None = None) -> EndpointState:
    """The state after one delivery's outcome. A disabled endpoint stays disabled (only an
    operator enables it); a success makes it healthy; a failure starts or extends a run of
    failures, and disables it once the run has lasted `disable_after`."""
    if state.state is EndpointStatus.DISABLED or outcome is Outcome.NEUTRAL:
        return state
    if outcome is Outcome.SUCCESS:
        if state.state is EndpointStatus.HEALTHY:
            return state
        return EndpointState(origin=state.origin, state=EndpointStatus.HEALTHY, since=at)
    reason = _short(failure) if failure else None
    since = state.since if state.state is EndpointStatus.FAILING and state.since is not None else at
    status = EndpointStatus.DISABLED if at - since >= disable_after else EndpointStatus.FAILING
    return EndpointState(origin=state.origin, state=status, since=since, last_failure=reason)


def changed(before: EndpointState, after: EndpointState) -> bool:
    """Whether `after` is worth publishing: a new state, not another failure of the same run."""
    return before.state is not after.state


def refusal(state: EndpointState | None) -> str | None:
    """Why a delivery to this endpoint is not attempted, or None."""
    if state is None or state.state is not EndpointStatus.DISABLED:
        return None
    since = state.since.isoformat() if state.since else "unknown"
    last = f"; last failure: {state.last_failure}" if state.last_failure else ""
    return f"endpoint {state.origin} is disabled: only failures since {since}{last} ({ENABLE_HINT})"


def enabled(origin: str, at: datetime) -> EndpointState:
    """What `endpoints enable` publishes: healthy from now."""
    return EndpointState(origin=origin, state=EndpointStatus.HEALTHY, since=at)


def _short(text: str) -> str:
    masked = mask_urls_in_text(text)
    return masked if len(masked) <= MAX_FAILURE_CHARS else masked[:MAX_FAILURE_CHARS] + "…"
