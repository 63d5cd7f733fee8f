"""A backtest: one trigger decided over past events in private, in-memory state — the workers'
own decisions (engine.evaluate / evaluate_due, timers, windows, the trigger's limit), counted
instead of emitted. Pure: the records come from the caller (app/backtest/runner.py)."""

from __future__ import annotations

import ast
import dataclasses
import heapq
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any

import orjson

from app.domain import policies, timers, windows
from app.domain.cooldown import CooldownMark
from app.domain.definitions import CompiledTrigger
from app.domain.engine import CustomerRow, Evaluation, evaluate, evaluate_due
from app.domain.matching import WILDCARD, DefinitionIndex
from app.domain.models import ActionCommand, Event, Source, TriggerLimit, priority_band
from app.domain.secrets import MASK, mask_url
from app.domain.timers import PendingFiring, to_millis

MAX_SAMPLES = 20
BANDS = ("critical", "high", "medium", "low")
NEVER = -1  # a partition whose events say nothing yet

AggregateState = dict[str, list[list[Any]]]


class NotBacktestable(ValueError):
    """A trigger a backtest cannot replay (the text says why)."""


def backtestable(trigger: CompiledTrigger) -> CompiledTrigger:
    """The trigger as a backtest decides it: enabled, so a disabled draft can be tried too.
    Scheduled triggers fire on ticks, not on events kept in Kafka: refused."""
    if trigger.definition.source is Source.SCHEDULED:
        raise NotBacktestable("source 'scheduled': a scheduled trigger fires on clock ticks, not on events "
                              "kept on a topic, so it cannot be backtested")
    if trigger.definition.enabled:
        return trigger
    return dataclasses.replace(trigger, definition=trigger.definition.model_copy(update={"enabled": True}))


def event_types_read(trigger: CompiledTrigger) -> dict[Source, set[str]]:
    """Per source, the event types the trigger reads: its own, its aggregates', its cancelOn
    rules'. Events of other types change nothing the trigger decides."""
    read: dict[Source, set[str]] = {}
    definition = trigger.definition
    read.setdefault(definition.source, set()).add(definition.event_type)
    for aggregate in trigger.aggregates:
        read.setdefault(aggregate.source, set()).add(aggregate.event_type)
    for rule in trigger.cancel_on:
        read.setdefault(rule.source, set()).add(rule.event_type)
    return read


def reads_customer(trigger: CompiledTrigger) -> bool:
    """Whether some condition reads `customer` (only then are rows worth loading)."""
    return any(isinstance(node, ast.Name) and node.id == "customer"
               for condition in trigger.conditions for node in ast.walk(condition._tree))


def day_range(start_ms: int, end_ms: int) -> list[date]:
    """Every UTC day that [start, end) touches."""
    first = datetime.fromtimestamp(start_ms / 1000, tz=UTC).date()
    last = datetime.fromtimestamp(max(start_ms, end_ms - 1) / 1000, tz=UTC).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _values_at(state: AggregateState, at_ms: int) -> Callable[[CompiledTrigger], dict[str, Any]]:
    return lambda trigger: {aggregate.name: windows.value(state.get(aggregate.id), aggregate.fn,
                                                          aggregate.window_ms, at_ms)
                            for aggregate in trigger.aggregates}


class Backtest:
    """The trigger's decisions over events handed in per partition, each partition's in its
    order. State is per customer, only what the trigger needs: its cooldown mark, its limit's
    counted firings, its pending firings (with the remembered cancel events, at most
    timers.MAX_PENDING_PER_CUSTOMER + timers.MAX_REMEMBERED_CANCELS entries) and its
    aggregates' bounded windows (docs/timers.md)."""

    def __init__(self, trigger: CompiledTrigger, start_ms: int, end_ms: int,
                 rows: Callable[[str], CustomerRow] = lambda customer_id: None,
                 on_firing: Callable[[ActionCommand], None] | None = None) -> None:
        self.on_firing = on_firing  # each would-be firing, for callers that want them all
        self.trigger = backtestable(trigger)
        self.index = DefinitionIndex()
        self.index.put(self.trigger)
        self.start_ms, self.end_ms = start_ms, end_ms
        self.rows = rows
        limit = self.trigger.definition.limit
        self.limits: dict[str, TriggerLimit] = {self.trigger.id: limit} if limit is not None else {}
        self.cooldowns: dict[str, CooldownMark] = {}
        self.contacts: dict[str, policies.Contacts] = {}
        self.pending: dict[str, timers.Record] = {}
        self.aggregates: dict[str, AggregateState] = {}
        self.due: dict[int, list[tuple[int, str]]] = {}  # per partition: (due ms, customer id)
        self.partition_time: dict[int, int] = {}
        self.counts: Counter[str] = Counter()
        self.suppressed: Counter[str] = Counter({"trigger_limit": 0})
        self.per_day: Counter[str] = Counter()
        self.per_band: Counter[str] = Counter({band: 0 for band in BANDS})
        self._samples: list[tuple[tuple[int, str], dict[str, Any]]] = []

    # -- events ----------------------------------------------------------------------------------

    def advance(self, partition: int, event_ms: int) -> None:
        """An event of `partition` dated `event_ms` comes next (or was skipped unread): decide
        the pending firings its partition's time has reached, as a worker reading a backlog
        does (docs/timers.md, "Time")."""
        newest = self.partition_time.get(partition, NEVER)
        if event_ms > newest:
            self.partition_time[partition] = newest = event_ms
        heap = self.due.get(partition)
        until = min(newest, self.end_ms)
        while heap and heap[0][0] <= until:
            _, customer_id = heapq.heappop(heap)
            self._fire_customer(customer_id, until)

    def handle(self, partition: int, event: Event) -> None:
        """One event, as app/evaluation/timed.py handles it: what is due first, then counted in
        aggregates, cancels, the decision, the delayed matches scheduled."""
        event_ms = to_millis(event.timestamp)
        self.advance(partition, event_ms)
        index = self.index
        interest = index.timed(event.source, event.type)
        values = None
        if interest is not None:
            event_json = event.as_json()
            if interest.aggregates or interest.reads_aggregates:
                values = _values_at(self._count(event, event_json, event_ms, interest.aggregates), event_ms)
            if interest.may_cancel:
                self._cancel(event.customer_id, event_json, event_ms)
        if not index.candidates(event.source, event.type):
            return
        customer_id = event.customer_id
        result = evaluate(index, event, partial(self.rows, customer_id), self._cooldown_of(customer_id),
                          event.timestamp, values)
        if result.firings or result.cooled_down or result.scheduled:
            self.counts["matched"] += 1
        self.counts["conditionErrors"] += len(result.condition_errors)
        self._apply(customer_id, result, event_ms)
        if result.scheduled:
            self._schedule(partition, customer_id, result.scheduled)

    def finish(self, complete: bool = True) -> None:
        """The end of the range: what is due by `end` is decided (live, the clock would pass
        it); what is due later stays pending and is counted as such. A run stopped early
        (`complete` False) decides only what the events read have reached, per partition: the
        rest could still be cancelled by events it did not read."""
        for partition, heap in self.due.items():
            until = self.end_ms if complete else min(self.end_ms, self.partition_time.get(partition, NEVER))
            while heap and heap[0][0] <= until:
                _, customer_id = heapq.heappop(heap)
                self._fire_customer(customer_id, until)
        self.counts["pending"] = sum(len(record.get("pending", [])) for record in self.pending.values())

    # -- state -------------------------------------------------------------------------------------

    def _cooldown_of(self, customer_id: str) -> Callable[[str], CooldownMark | None]:
        return lambda trigger_id: self.cooldowns.get(customer_id)

    def _count(self, event: Event, event_json: dict[str, Any], event_ms: int,
               qualifying: Iterable[Any]) -> AggregateState:
        state = self.aggregates.get(event.customer_id, {})
        for aggregate in qualifying:
            if aggregate.passes_filters(event_json):
                state = {**state, aggregate.id: windows.add(state.get(aggregate.id), aggregate.fn,
                                                            aggregate.window_ms, event_ms,
                                                            aggregate.value_of(event_json))}
                self.aggregates[event.customer_id] = state
        return state

    def _cancel_rules(self, trigger_id: str) -> tuple[Any, ...]:
        return self.trigger.cancel_on if trigger_id == self.trigger.id else ()

    def _cancel(self, customer_id: str, event_json: dict[str, Any], event_ms: int) -> None:
        check = timers.cancels_pending(event_json, event_ms, self._cancel_rules)
        record, cancelled = timers.cancel(self.pending.get(customer_id), customer_id, check, None)
        self.counts["cancelled"] += len(cancelled)
        self.pending[customer_id] = timers.remember_cancel(record, event_json, event_ms, self.index.cancel_fields,
                                                           self.index.cancel_horizon_ms, None)

    def _schedule(self, partition: int, customer_id: str, firings: list[PendingFiring]) -> None:
        before = self.pending.get(customer_id)
        record, scheduled, dropped, cancelled = timers.schedule(
            before, firings, None, timers.cancelled_earlier(before, self._cancel_rules))
        self.pending[customer_id] = record
        heap = self.due.setdefault(partition, [])
        for firing in scheduled:
            heapq.heappush(heap, (firing.due_ms, customer_id))
        self.counts["scheduled"] += len(scheduled) + len(cancelled)
        self.counts["cancelled"] += len(cancelled)
        self.counts["droppedPending"] += len(dropped)

    def _fire_customer(self, customer_id: str, until_ms: int) -> None:
        due = timers.due(self.pending.get(customer_id), customer_id, until_ms)
        if not due:
            return  # fired or cancelled already: a stale heap entry
        due.sort(key=lambda firing: (firing.due_ms, firing.firing_id))
        for firing in due:
            self._fire(firing)
        remaining = timers.without(self.pending.get(customer_id), {firing.firing_id for firing in due})
        if remaining is not None and (remaining.get("pending") or remaining.get("cancels")):
            self.pending[customer_id] = remaining
        else:
            self.pending.pop(customer_id, None)

    def _fire(self, firing: PendingFiring) -> None:
        """A pending firing at its due time, as app/timers/service.py decides it."""
        customer_id = firing.customer_id
        due_at = datetime.fromtimestamp(firing.due_ms / 1000, tz=UTC)
        state = self.aggregates.get(customer_id, {}) if self.trigger.aggregates else {}
        result = evaluate_due(self.trigger, firing, partial(self.rows, customer_id), self._cooldown_of(customer_id),
                              due_at, _values_at(state, firing.due_ms))
        self.counts["conditionErrors"] += len(result.condition_errors)
        if not (result.firings or result.cooled_down):
            self.counts["droppedAtDue"] += 1  # its conditions no longer hold
        self._apply(customer_id, result, firing.due_ms)

    def _apply(self, customer_id: str, result: Evaluation, at_ms: int) -> None:
        """As Evaluator.apply_for: the trigger's limit, then cooldown marks of what passed."""
        self.counts["cooledDown"] += len(result.cooled_down)
        firings, marks = result.firings, result.cooldown_marks
        if firings and self.limits:
            admission = policies.admit(firings, [], self.limits, self.contacts.get(customer_id), at_ms, None)
            if admission.contacts is not None:
                self.contacts[customer_id] = admission.contacts
            for _command, reason, _policy in admission.suppressed:
                self.suppressed[reason] += 1
            kept = {command.trigger_id for command in admission.admitted}
            firings = admission.admitted
            marks = {trigger_id: mark for trigger_id, mark in marks.items() if trigger_id in kept}
        for mark in marks.values():
            self.cooldowns[customer_id] = mark
        for command in firings:
            self._record(command, at_ms)

    def _record(self, command: ActionCommand, at_ms: int) -> None:
        self.counts["wouldFire"] += 1
        self.per_day[datetime.fromtimestamp(at_ms / 1000, tz=UTC).date().isoformat()] += 1
        self.per_band[priority_band(command.priority)] += 1
        # The earliest firings (by time, then id): the same whichever partition was read first.
        rank = (at_ms, command.firing_id)
        if len(self._samples) < MAX_SAMPLES or rank < self._samples[-1][0]:
            self._samples = sorted([*self._samples, (rank, sample_of(command))], key=lambda sample: sample[0])
            del self._samples[MAX_SAMPLES:]
        if self.on_firing is not None:
            self.on_firing(command)

    # -- the report ------------------------------------------------------------------------------

    def report(self, events_read: int, truncated: bool, seconds: float) -> dict[str, Any]:
        """The JSON both the CLI (`--json`) and POST /triggers/backtest answer with."""
        return {
            "triggerId": self.trigger.id,
            "from": _iso(self.start_ms), "to": _iso(self.end_ms),
            "eventsRead": events_read,
            "matched": self.counts["matched"],
            "wouldFire": self.counts["wouldFire"],
            "cooledDown": self.counts["cooledDown"],
            "suppressed": dict(self.suppressed),
            "pending": self.counts["pending"],
            "perDay": [{"day": day.isoformat(), "firings": self.per_day.get(day.isoformat(), 0)}
                       for day in day_range(self.start_ms, self.end_ms)],
            "perBand": dict(self.per_band),
            "samples": [sample for _rank, sample in self._samples],
            "truncated": truncated,
            "seconds": round(seconds, 3),
        }


def sample_of(command: ActionCommand) -> dict[str, Any]:
    """A firing as a sample shows it: its action's secret, header values and the secrets in its
    URLs masked, as every read of a definition masks them."""
    sample = command.to_json()
    action = dict(sample["action"])
    if "secret" in action:
        action["secret"] = MASK
    if isinstance(action.get("headers"), dict):
        action["headers"] = {name: MASK for name in action["headers"]}
    for name in ("url", "deliveryUrl"):
        if isinstance(action.get(name), str):
            action[name] = mask_url(action[name])
    return {**sample, "action": action}


def _iso(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def relevant_needles(trigger: CompiledTrigger, source: Source) -> tuple[bytes, ...] | None:
    """The JSON strings one of which a raw event of `source` must contain to matter to the
    trigger (its `"type"` value), or None when any event may (a wildcard, or CDC events whose
    type is built from the envelope). Lets the reader skip most events without parsing them."""
    types = event_types_read(trigger).get(source, set())
    if source is Source.CDC or WILDCARD in types:
        return None
    return tuple(orjson.dumps(event_type) for event_type in sorted(types))


def may_matter(raw: bytes | None, needles: tuple[bytes, ...] | None) -> bool:
    """False only for a record that cannot be an event of a type the trigger reads: none of
    the needles appears in it and no JSON escape could hide one."""
    if needles is None or raw is None:
        return True
    return any(needle in raw for needle in needles) or b"\\u" in raw


_RELATIVE_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, now: datetime, name: str) -> datetime:
    """A backtest bound: ISO 8601 (`2026-11-30`, `2026-11-30T08:00`, `...Z`, `...+01:00`; no
    zone means UTC), `now`, or relative to now: `-7d`, `-12h`, `-30m`, `-2w`. ValueError
    naming `name` (the option or field) otherwise."""
    value = text.strip()
    if value == "now":
        return now
    if value.startswith("-") and value[1:-1].isdigit() and value[-1] in _RELATIVE_UNITS:
        return now - timedelta(**{_RELATIVE_UNITS[value[-1]]: int(value[1:-1])})
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name}: {text[:64]!r} is not a time: use ISO 8601 (2026-11-30, 2026-11-30T08:00:00Z, "
                         "2026-11-30T09:00+01:00), 'now', or relative like -7d, -12h, -30m") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def check_range(start: datetime, end: datetime, start_name: str = "from", end_name: str = "to") -> None:
    if start >= end:
        raise ValueError(f"{start_name} ({start.isoformat()}) must be before {end_name} ({end.isoformat()})")
