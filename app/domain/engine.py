"""The decision: given one event, which triggers fire, in which order, and what state changes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.domain import windows
from app.domain.cooldown import CooldownMark, effective_time, may_fire
from app.domain.definitions import CompiledTrigger
from app.domain.experiments import assign
from app.domain.expressions import Budget, Scope
from app.domain.matching import DefinitionIndex, passes_filters
from app.domain.models import ActionCommand, Event, Source
from app.domain.shadow import PERFORMS
from app.domain.timers import PendingFiring, millis_iso, to_millis
from app.errors import ExpressionFailed

CustomerRow = Mapping[str, Any] | None
# `agg.<name>` of a trigger for the event being evaluated: {name: value}.
AggregateValues = Callable[[CompiledTrigger], dict[str, Any]]

_FIRING_NAMESPACE = uuid.UUID("6f1c2a8e-3b0d-4c8e-9a51-2f7d0e4b9c13")


def firing_id(trigger_id: str, event_id: str) -> str:
    """The same trigger and the same event always give the same firingId."""
    return str(uuid.uuid5(_FIRING_NAMESPACE, f"{trigger_id}\x00{event_id}"))


@dataclass
class Evaluation:
    """What one event caused: firings in emission order, cooldown marks to store, and why not."""

    firings: list[ActionCommand] = field(default_factory=list)
    # Keyed by the trigger's state id (its id, or shadow~<id>: app/domain/shadow.py).
    cooldown_marks: dict[str, CooldownMark] = field(default_factory=dict)
    condition_errors: list[tuple[str, str]] = field(default_factory=list)
    cooled_down: list[str] = field(default_factory=list)
    # Delayed triggers that matched: they fire (or not) at their due time.
    scheduled: list[PendingFiring] = field(default_factory=list)
    # What the contact gate did with firings (set by the shell): firingIds held until quiet
    # hours end, and (firingId, reason) of those it suppressed.
    held: list[str] = field(default_factory=list)
    suppressed: list[tuple[str, str]] = field(default_factory=list)
    # True when the event's evaluation budget ran out: the triggers not evaluated are in
    # condition_errors with budget_exhausted_reason.
    budget_exhausted: bool = False


def budget_exhausted_reason(budget: Budget) -> str:
    return f"not evaluated: evaluation budget of {budget.seconds * 1000:g} ms exhausted"


def evaluate(
    index: DefinitionIndex,
    event: Event,
    customer: CustomerRow | Callable[[], CustomerRow],
    cooldown_of: Callable[[str], CooldownMark | None],
    now: datetime,
    aggregates: AggregateValues | None = None,
) -> Evaluation:
    """Evaluate every candidate trigger for `event`, highest priority first (ties by id).

    `customer` may be a function that reads the row: it is then read only if some
    condition refers to `customer`."""
    result = Evaluation()
    if not index.candidates(event.source, event.type):
        return result
    event_json = event.as_json()
    candidates = index.matching(event.source, event.type, event_json)
    if not candidates:
        return result
    scope = Scope(event=event_json, customer=customer, now=now)
    # One budget for every candidate: the event's whole evaluation is bounded, not each trigger's.
    budget = Budget()
    for trigger in candidates:
        if budget.exhausted:  # set by the evaluation that found it spent
            _skip(trigger.id, budget, result)
            continue
        _consider(trigger, event, event_json, scope, cooldown_of, now, result, budget, aggregates)
    return result


def _skip(trigger_id: str, budget: Budget, result: Evaluation) -> None:
    result.budget_exhausted = True
    result.condition_errors.append((trigger_id, budget_exhausted_reason(budget)))


def evaluate_scheduled(trigger: CompiledTrigger, event: Event, customer: Mapping[str, Any],
                       cooldown_of: Callable[[str], CooldownMark | None], now: datetime) -> Evaluation:
    """One scheduled trigger for one customer at one tick: its filters apply to the
    customer's row (the audience), its conditions see the tick as `event`."""
    result = Evaluation()
    if trigger.definition.enabled and trigger.passes_filters(customer):
        event_json = event.as_json()
        scope = Scope(event=event_json, customer=customer, now=now)
        _consider(trigger, event, event_json, scope, cooldown_of, now, result, Budget())
    return result


def _consider(trigger: CompiledTrigger, event: Event, event_json: dict[str, Any], scope: Scope,
              cooldown_of: Callable[[str], CooldownMark | None], now: datetime, result: Evaluation,
              budget: Budget, aggregates: AggregateValues | None = None) -> None:
    values = _aggregate_values(trigger, scope, aggregates)
    if not _conditions_hold(trigger, scope, result, budget):
        return
    if trigger.delay_ms:  # matches now, decided again at its due time (evaluate_due)
        due_ms = to_millis(event.timestamp) + trigger.delay_ms
        result.scheduled.append(PendingFiring(firing_id(trigger.id, event.id), trigger.id, event.customer_id,
                                              event.id, due_ms, event_json, to_millis(event.timestamp),
                                              trigger.shadow))
        return
    _fire(trigger, event.id, event.customer_id, effective_time(event.timestamp, now), event_json, now,
          cooldown_of, result, values)


def _aggregate_values(trigger: CompiledTrigger, scope: Scope,
                      aggregates: AggregateValues | None) -> dict[str, Any] | None:
    if not trigger.aggregates:
        return None
    values = aggregates(trigger) if aggregates is not None else {}
    scope.set_aggregates(values)
    return values


def _fire(trigger: CompiledTrigger, event_id: str, customer_id: str, at: datetime, event_json: dict[str, Any],
          now: datetime, cooldown_of: Callable[[str], CooldownMark | None], result: Evaluation,
          aggregate_values: dict[str, Any] | None) -> None:
    """The cooldown check, then the firing (and its cooldown mark). Marks are read and kept
    under the trigger's state id: a shadow trigger's are its own (app/domain/shadow.py)."""
    cooldown = trigger.definition.cooldown_minutes
    if cooldown > 0 and not may_fire(cooldown_of(trigger.state_id), cooldown, event_id, at):
        result.cooled_down.append(trigger.id)
        return
    if cooldown > 0:
        result.cooldown_marks[trigger.state_id] = CooldownMark(fired_at=at, event_id=event_id)
    result.firings.append(_command(trigger, event_id, customer_id, event_json, now, aggregate_values))


def evaluate_due(trigger: CompiledTrigger, firing: PendingFiring, customer: CustomerRow | Callable[[], CustomerRow],
                 cooldown_of: Callable[[str], CooldownMark | None], now: datetime,
                 aggregates: AggregateValues | None = None) -> Evaluation:
    """A pending firing at its due time: the trigger's conditions again, with the customer's
    row as it is now and the aggregates at the due time, then cooldown; the firingId is the
    one it would have had without the delay. Filters were checked when it matched. A firing
    scheduled in shadow mode stays shadow, even if the trigger has gone live since."""
    if firing.shadow:
        trigger = trigger.in_shadow()
    result = Evaluation()
    scope = Scope(event=firing.event, customer=customer, now=now)
    values = _aggregate_values(trigger, scope, aggregates)
    if not _conditions_hold(trigger, scope, result, Budget()):
        return result
    due_at = datetime.fromtimestamp(firing.due_ms / 1000, tz=now.tzinfo)
    _fire(trigger, firing.event_id, firing.customer_id, effective_time(due_at, now), firing.event, now,
          cooldown_of, result, values)
    return result


def _conditions_hold(trigger: CompiledTrigger, scope: Scope, result: Evaluation, budget: Budget) -> bool:
    for condition in trigger.conditions:
        try:
            if not condition.evaluate(scope, budget):
                return False
        except ExpressionFailed as exc:
            # A condition that cannot be evaluated for this event is false, not fatal.
            result.condition_errors.append((trigger.id, str(exc)))
            if budget.exhausted:
                result.budget_exhausted = True
            return False
    return True


def _command(trigger: CompiledTrigger, event_id: str, customer_id: str, event_json: dict[str, Any],
             now: datetime, aggregate_values: dict[str, Any] | None) -> ActionCommand:
    # Every value comes from a checked definition and a parsed event: no second validation.
    experiment = trigger.definition.experiment
    group = assign(experiment, trigger.id, customer_id) if experiment is not None else None
    # A variant performs its own action; a held-out firing carries the trigger's (never performed).
    action = trigger.variant_actions.get(group, trigger.command_action) if group else trigger.command_action
    return ActionCommand.model_construct(
        firing_id=firing_id(trigger.id, event_id),
        trigger_id=trigger.id,
        priority=trigger.definition.priority,
        customer_id=customer_id,
        event_id=event_id,
        fired_at=now,
        action=dict(action),  # a copy: commands may be changed by their readers
        event=event_json,
        aggregates=aggregate_values,
        definition_version=trigger.version,
        shadow=trigger.shadow,
        group=group,
    )


def explain(trigger: CompiledTrigger, event: Event, customer: Mapping[str, Any] | None,
            now: datetime, aggregate_state: Mapping[str, list[list[Any]]] | None = None) -> dict[str, Any]:
    """Why `trigger` would or would not fire for `event` — every check, no state written, no
    output. Cooldown is not checked. `aggregate_state`: the customer's aggregates as stored
    (None: no history, so they count the test event alone); the test event is counted in
    them as the engine would, without being stored."""
    definition = trigger.definition
    event_json = event.as_json()
    scheduled = definition.source is Source.SCHEDULED
    # A scheduled trigger sees ticks (any eventType) and filters its audience on the row.
    type_matches = scheduled or (definition.source is event.source and definition.event_type in (event.type, "*"))
    filtered = (customer or {}) if scheduled else event_json
    filters = [{"field": name, "expected": expected, "actual": filtered.get(name),
                "passed": passes_filters({name: expected}, filtered)}
               for name, expected in definition.filters.items()]
    scope = Scope(event=event_json, customer=customer, now=now)
    aggregates = _explain_aggregates(trigger, event, event_json, aggregate_state or {})
    if trigger.aggregates:
        scope.set_aggregates({name: report["value"] for name, report in aggregates.items()})
    budget = Budget()  # as for an event: the trigger's conditions share one budget
    conditions: list[dict[str, Any]] = []
    for condition in trigger.conditions:
        try:
            value = condition.evaluate(scope, budget)
            conditions.append({"expression": condition.text, "result": _jsonable(value), "passed": bool(value)})
        except ExpressionFailed as exc:
            conditions.append({"expression": condition.text, "error": str(exc), "passed": False})
    would_fire = (definition.enabled and type_matches and all(f["passed"] for f in filters)
                  and all(c["passed"] for c in conditions))
    report = {"triggerId": trigger.id, "wouldFire": would_fire, "enabled": definition.enabled,
              "typeMatches": type_matches, "filters": filters, "conditions": conditions,
              "cooldown": "not checked in a dry run", "action": trigger.command_action,
              "mode": definition.mode.value, "performs": PERFORMS[trigger.shadow]}
    if trigger.aggregates:
        report["aggregates"] = aggregates
    if trigger.delay_ms:
        report["delay"] = _explain_delay(trigger, event, event_json)
    return report


def _explain_aggregates(trigger: CompiledTrigger, event: Event, event_json: dict[str, Any],
                        state: Mapping[str, list[list[Any]]]) -> dict[str, Any]:
    event_ms = to_millis(event.timestamp)
    report = {}
    for aggregate in trigger.aggregates:
        entries = state.get(aggregate.id)
        counted = aggregate.qualifies(event, event_json)
        if counted:
            entries = windows.add(entries, aggregate.fn, aggregate.window_ms, event_ms, aggregate.value_of(event_json))
        report[aggregate.name] = {
            "fn": aggregate.fn.value, "windowSeconds": aggregate.window_ms // 1000,
            "value": windows.value(entries, aggregate.fn, aggregate.window_ms, event_ms),
            "countsThisEvent": counted, "history": "stored" if state else "none: the test event alone"}
    return report


def _explain_delay(trigger: CompiledTrigger, event: Event, event_json: dict[str, Any]) -> dict[str, Any]:
    """When a match would fire, and which events would cancel it first."""
    due_ms = to_millis(event.timestamp) + trigger.delay_ms
    delay = trigger.definition.delay
    return {
        "delay": delay.to_json() if delay is not None else None,
        "dueAt": millis_iso(due_ms),
        "atDueTime": "conditions are evaluated again with the customer's row as it is then; cooldown is checked then",
        "cancelledBy": [
            {"source": rule.source.value, "eventType": rule.event_type, "filters": dict(rule.filters),
             "sameFields": {name: event_json.get(name) for name in rule.same_fields},
             "before": millis_iso(due_ms)}
            for rule in trigger.definition.cancel_on],
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)
