"""`POST /triggers/backtest` on a worker: the request checked field by field, and at most one
backtest at a time per worker (it shares the event loop with the worker's events; the runner
yields to the loop every YIELD_EVERY records)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka.errors import KafkaError

from app.backtest.runner import MAX_EVENTS_HTTP, run_backtest
from app.domain.backtest import NotBacktestable, backtestable, check_range, parse_time
from app.domain.definitions import CompiledTrigger, compile_definition
from app.errors import InvalidDefinition
from app.settings import Settings
from app.topics import Topics

REQUEST_FIELDS = frozenset({"definition", "triggerId", "from", "to", "maxEvents"})
DRAFT_ID = "backtest-draft"  # the id of a definition sent without one


class BadBacktestRequest(Exception):
    """Answered with `status` (400, 404 or 422; 503 when Kafka cannot be read), the message
    and every error found."""

    def __init__(self, status: int, error: str, errors: list[str] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.errors = errors or [error]


class BacktestBusy(Exception):
    """Another backtest runs on this worker (answered 429)."""


@dataclass(frozen=True)
class BacktestRequest:
    trigger: CompiledTrigger
    start: datetime
    end: datetime
    max_events: int


def parse_backtest_request(body: Any, published: Callable[[str], CompiledTrigger | None],
                           now: datetime) -> BacktestRequest:
    """`{"definition": {...} | null, "triggerId": "..." (when no definition), "from", "to",
    "maxEvents" (optional, 1 to MAX_EVENTS_HTTP, default MAX_EVENTS_HTTP)}`."""
    if not isinstance(body, dict):
        raise BadBacktestRequest(400, "expected a JSON object with 'from', 'to' and a 'definition' or 'triggerId'")
    errors = [f"unknown field {name!r}" for name in sorted(set(body) - REQUEST_FIELDS)]
    times: dict[str, datetime] = {}
    for name in ("from", "to"):
        value = body.get(name)
        if not isinstance(value, str):
            errors.append(f"{name}: required, an ISO 8601 time (or -7d, now)")
            continue
        try:
            times[name] = parse_time(value, now, name)
        except ValueError as exc:
            errors.append(str(exc))
    if len(times) == 2:
        try:
            check_range(times["from"], times["to"])
        except ValueError as exc:
            errors.append(str(exc))
    max_events = body.get("maxEvents", MAX_EVENTS_HTTP)
    if isinstance(max_events, bool) or not isinstance(max_events, int) or not 1 <= max_events <= MAX_EVENTS_HTTP:
        errors.append(f"maxEvents: a whole number from 1 to {MAX_EVENTS_HTTP}")
    definition, trigger_id = body.get("definition"), body.get("triggerId")
    if definition is not None and not isinstance(definition, dict):
        errors.append("definition: a JSON object (a trigger definition) or null")
    if trigger_id is not None and not isinstance(trigger_id, str):
        errors.append("triggerId: a string")
    if definition is None and trigger_id is None:
        errors.append("definition: required unless triggerId names a published trigger")
    if errors:
        raise BadBacktestRequest(400, "; ".join(errors), errors)
    trigger = _trigger(definition, trigger_id, published)
    return BacktestRequest(trigger, times["from"], times["to"], max_events)


def _trigger(definition: dict[str, Any] | None, trigger_id: str | None,
             published: Callable[[str], CompiledTrigger | None]) -> CompiledTrigger:
    if definition is None:
        assert trigger_id is not None
        found = published(trigger_id)
        if found is None:
            raise BadBacktestRequest(404, f"triggerId: no trigger {trigger_id!r}")
        trigger = found
    else:
        data = dict(definition)
        data.setdefault("id", trigger_id or DRAFT_ID)
        try:
            trigger = compile_definition(data)
        except InvalidDefinition as exc:
            errors = [f"definition: {error}" for error in exc.errors]
            raise BadBacktestRequest(422, "invalid definition: " + "; ".join(exc.errors), errors) from None
    try:
        return backtestable(trigger)
    except NotBacktestable as exc:
        raise BadBacktestRequest(422, f"definition: {exc}") from None


class Backtests:
    """The worker's backtests: one at a time (a second is refused, not queued)."""

    def __init__(self, settings: Settings, topics: Topics) -> None:
        self.settings = settings
        self.topics = topics
        self.running = False

    async def run(self, request: BacktestRequest) -> dict[str, Any]:
        if self.running:
            raise BacktestBusy("a backtest is already running on this worker; retry when it has finished")
        self.running = True
        try:
            outcome = await run_backtest(self.settings, self.topics, request.trigger, request.start, request.end,
                                         request.max_events)
        except (KafkaError, TimeoutError) as exc:
            raise BadBacktestRequest(503, f"could not read Kafka (retry the request): {type(exc).__name__}") from exc
        finally:
            self.running = False
        return outcome.report
