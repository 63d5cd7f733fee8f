"""Durable webhook delivery rules: the retry schedule, what an attempt's answer means, origins,
per-origin rate shares and the token bucket, and the record of a delivery that waits."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

SCHEDULE_SETTING = "TRIGGERS_WEBHOOK_RETRY_SCHEDULE"
DEFAULT_SCHEDULE = "0,5s,5m,30m,2h,5h,10h,10h"
MAX_SCHEDULE_DELAY_S = 86_400.0  # one day: a longer wait would outlive the performed log's purpose
MAX_SCHEDULE_ATTEMPTS = 50
# A server's Retry-After may ask for longer than the schedule, but never for more than this.
MAX_RETRY_AFTER_S = 3_600.0
# The smallest share of an origin's rate a worker with partitions gets (requests per second).
MIN_SHARE_PER_S = 0.01
MAX_ATTEMPTS_KEPT = 20  # attempts listed in a waiting record and its dead letter

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DELAY = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")


class ScheduleError(ValueError):
    """The retry schedule setting is malformed; the message names the setting."""


def parse_schedule(text: str, setting: str = SCHEDULE_SETTING) -> tuple[float, ...]:
    """Comma-separated delays before each attempt (the first must be 0: the first attempt is at
    once), each a number with an optional unit (ms, s, m, h, d; seconds when none)."""
    delays: list[float] = []
    for position, raw in enumerate(text.split(","), start=1):
        item = raw.strip().lower()
        match = _DELAY.match(item)
        if match is None:
            raise ScheduleError(f"{setting}: item {position} ({raw.strip()!r}) is not a delay such as "
                                "0, 500ms, 5s, 5m, 2h, 1d")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
        if seconds > MAX_SCHEDULE_DELAY_S:
            raise ScheduleError(f"{setting}: item {position} ({raw.strip()!r}) is longer than one day")
        delays.append(seconds)
    if delays[0] != 0:
        raise ScheduleError(f"{setting}: must start with 0 (the first attempt is made at once)")
    if len(delays) > MAX_SCHEDULE_ATTEMPTS:
        raise ScheduleError(f"{setting}: at most {MAX_SCHEDULE_ATTEMPTS} attempts")
    return tuple(delays)


def next_attempt_ms(schedule: tuple[float, ...], attempts_made: int, now_ms: int,
                    retry_after_s: float | None) -> int | None:
    """When the next attempt is due, or None when the schedule is exhausted. A server's
    Retry-After (capped) wins when it asks for longer than the schedule."""
    if attempts_made >= len(schedule):
        return None
    delay = schedule[attempts_made]
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, MAX_RETRY_AFTER_S))
    return now_ms + round(delay * 1000)


# --- what an attempt's answer means ---------------------------------------------------------


def final_failure(status: int | None) -> str | None:
    """Why an answer ends the schedule (None: it may be retried, or it was delivered).
    `410 Gone` says the endpoint is gone for good; any other 4xx but 408 and 429 says the
    request itself is at fault, and sending it again would not change that."""
    if status is None or 200 <= status < 300 or status in (408, 429) or status >= 500:
        return None
    if status == 410:
        return "HTTP 410 Gone: the endpoint is gone; schedule ended"
    return f"HTTP {status}: not retryable"


# --- origins and rates ----------------------------------------------------------------------


def origin(url: str) -> str:
    """scheme://host:port, no userinfo (a credential), no path or query: what maxPerSecond limits."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def origin_limits(limits: Iterable[tuple[str, int | None]]) -> dict[str, int]:
    """The smallest maxPerSecond per origin among (url, maxPerSecond) pairs: every command to
    an origin shares its one limit, and the strictest definition wins."""
    smallest: dict[str, int] = {}
    for url, per_second in limits:
        if per_second is None:
            continue
        key = origin(url)
        smallest[key] = min(per_second, smallest.get(key, per_second))
    return smallest


def worker_share(rate: float, assigned: int, total: int) -> float:
    """This worker's part of an origin's rate: proportional to the actions partitions it is
    assigned, so the parts of all workers add up to at most `rate` (deliveries are keyed, and
    a worker's partitions are its deliveries). The floor only keeps a bucket moving."""
    if total <= 0 or assigned <= 0:
        return MIN_SHARE_PER_S
    return max(rate * min(assigned, total) / total, MIN_SHARE_PER_S)


@dataclass
class TokenBucket:
    """At most `rate` takes per second, no burst: a capacity of one token means two takes are
    never closer than 1/rate seconds, so no one-second window sees more than `rate`."""

    rate: float
    tokens: float = 1.0
    updated_ms: int | None = None

    def _refill(self, now_ms: int) -> None:
        if self.updated_ms is not None:
            self.tokens = min(1.0, self.tokens + (now_ms - self.updated_ms) * self.rate / 1000)
        self.updated_ms = now_ms

    def take(self, now_ms: int) -> bool:
        self._refill(now_ms)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait_ms(self, now_ms: int) -> int:
        """How long until a take would succeed."""
        self._refill(now_ms)
        return 0 if self.tokens >= 1.0 else int((1.0 - self.tokens) * 1000 / self.rate) + 1

    def set_rate(self, rate: float) -> None:
        self.rate = rate


# --- the waiting delivery ---------------------------------------------------------------------


def delivery_key(customer_id: str, firing_id: str) -> str:
    """Key in the deliveries table: customer first, so it lands in the customer's partition."""
    return f"{customer_id}|{firing_id}"


@dataclass(frozen=True)
class Source:
    """Where the command was read: a dead letter names it."""

    topic: str
    partition: int
    offset: int

    def to_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}


@dataclass(frozen=True)
class WaitingDelivery:
    """A delivery in the deliveries table: parked (no attempt yet, waiting for a slot or a
    rate token) or between attempts. The body is kept, never the secret or header values:
    those are read from the definition again at each attempt."""

    action_type: str
    command: dict[str, Any]
    body: str
    endpoint: str
    due_ms: int
    source: Source
    attempts: tuple[dict[str, Any], ...] = ()  # the latest MAX_ATTEMPTS_KEPT
    reason: str | None = None
    max_per_second: int | None = None
    attempts_made: int = 0
    firing_id: str = field(init=False)
    customer_id: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "firing_id", str(self.command["firingId"]))
        object.__setattr__(self, "customer_id", str(self.command["customerId"]))

    @property
    def key(self) -> str:
        return delivery_key(self.customer_id, self.firing_id)

    @property
    def parked(self) -> bool:
        return self.attempts_made == 0

    def after_failure(self, attempt: dict[str, Any], due_ms: int, reason: str) -> WaitingDelivery:
        return WaitingDelivery(self.action_type, self.command, self.body, self.endpoint, due_ms, self.source,
                               self.with_attempts(attempt), reason, self.max_per_second, self.attempts_made + 1)

    def with_attempts(self, attempt: dict[str, Any]) -> tuple[dict[str, Any], ...]:
        return (*self.attempts, attempt)[-MAX_ATTEMPTS_KEPT:]

    def to_json(self) -> dict[str, Any]:
        return {"actionType": self.action_type, "command": self.command, "body": self.body,
                "endpoint": self.endpoint, "dueMs": self.due_ms, "source": self.source.to_json(),
                "attempts": list(self.attempts), "reason": self.reason, "maxPerSecond": self.max_per_second,
                "attemptsMade": self.attempts_made}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WaitingDelivery:
        source = data["source"]
        return cls(str(data["actionType"]), dict(data["command"]), str(data["body"]), str(data["endpoint"]),
                   int(data["dueMs"]), Source(str(source["topic"]), int(source["partition"]), int(source["offset"])),
                   tuple(data.get("attempts") or ()), data.get("reason"), data.get("maxPerSecond"),
                   int(data.get("attemptsMade") or 0))


# --- after an attempt ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What follows an attempt: `delivered`, `retry` at `due_ms`, or `dead` (a dead letter)."""

    kind: str
    reason: str | None = None
    due_ms: int | None = None


def after_attempt(schedule: tuple[float, ...], attempts_made: int, status: int | None, error: str | None,
                  refused: bool, retry_after_s: float | None, now_ms: int) -> Outcome:
    """`attempts_made` counts the attempt just made."""
    if status is not None and 200 <= status < 300:
        return Outcome("delivered")
    if refused:
        return Outcome("dead", str(error))
    final = final_failure(status)
    if final is not None:
        return Outcome("dead", final)
    answer = f"HTTP {status}" if status is not None else str(error)
    due = next_attempt_ms(schedule, attempts_made, now_ms, retry_after_s)
    if due is None:
        return Outcome("dead", f"gave up after {attempts_made} attempts (schedule exhausted): {answer}")
    return Outcome("retry", f"attempt {attempts_made} failed: {answer}", due)
