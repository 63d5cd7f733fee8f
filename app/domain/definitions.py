"""Turning raw definition JSON into a checked, ready-to-evaluate trigger — or a full list of why not."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from app.domain import limits
from app.domain.aggregates import CompiledAggregate, compile_aggregates, unknown_reference_errors
from app.domain.decisions import CompiledDecisionFlow, DecisionFlowDefinition, compile_flow
from app.domain.expressions import SCOPE_NAMES, TRIGGER_SCOPE_NAMES, Expression, cost_error, parse_expression
from app.domain.filters import FilterCheck, compile_filters
from app.domain.intake import DuplicateKeys, check_json_value, load_unique_json
from app.domain.journeys import JourneyDefinition
from app.domain.models import (
    ACTION_TYPES,
    Action,
    CancelOn,
    Mode,
    TriggerDefinition,
    UpdateAttributeAction,
    WebhookAction,
)
from app.domain.policies import CompiledPolicy, InvalidTimezone, PolicyDefinition, compile_policy
from app.domain.schema import SchemaTable
from app.domain.shadow import state_id
from app.domain.webhooks import template_errors
from app.errors import InvalidDefinition, InvalidExpression

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class CompiledTrigger:
    """A valid definition with its expressions parsed once, for evaluation many times."""

    definition: TriggerDefinition
    conditions: tuple[Expression, ...]
    aggregates: tuple[CompiledAggregate, ...] = ()
    # The offset of the definition's record on its topic, set by the worker's catalog
    # (None when compiled from elsewhere: a file, a dry run); carried by its firings.
    version: int | None = field(default=None, compare=False)
    # The action as action commands carry it, and the filters as one check: built once.
    command_action: dict[str, Any] = field(init=False, repr=False, compare=False)
    passes_filters: FilterCheck = field(init=False, repr=False, compare=False)
    cancel_on: tuple[CancelRule, ...] = field(init=False, repr=False, compare=False)
    # The delay in milliseconds, 0 for a trigger that fires at once.
    delay_ms: int = field(init=False, repr=False, compare=False)
    # Mode shadow, and the id its per-customer state is kept under (app/domain/shadow.py).
    shadow: bool = field(init=False, repr=False, compare=False)
    state_id: str = field(init=False, repr=False, compare=False)
    # Each variant's action as commands carry it, by variant name (app/domain/experiments.py).
    variant_actions: dict[str, dict[str, Any]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "command_action", action_config(self.definition))
        object.__setattr__(self, "passes_filters", compile_filters(self.definition.filters))
        object.__setattr__(self, "cancel_on", tuple(CancelRule(rule) for rule in self.definition.cancel_on))
        delay = self.definition.delay
        object.__setattr__(self, "delay_ms", delay.millis if delay is not None else 0)
        object.__setattr__(self, "shadow", self.definition.mode is Mode.SHADOW)
        object.__setattr__(self, "state_id", state_id(self.definition.id, self.shadow))
        experiment = self.definition.experiment
        object.__setattr__(self, "variant_actions", {
            variant.name: command_config(variant.action) for variant in (experiment.variants if experiment else ())})

    @property
    def id(self) -> str:
        return self.definition.id

    @property
    def sort_key(self) -> tuple[int, str]:
        """Descending priority, ties by id: the contract's evaluation order."""
        return (-self.definition.priority, self.definition.id)

    def in_shadow(self) -> CompiledTrigger:
        """This trigger in mode shadow (a firing scheduled while it was shadow stays shadow)."""
        if self.shadow:
            return self
        return CompiledTrigger(self.definition.model_copy(update={"mode": Mode.SHADOW}), self.conditions,
                               self.aggregates, self.version)


class CancelRule:
    """One `cancelOn` entry, its filters checked as one function."""

    __slots__ = ("source", "event_type", "passes_filters", "same_fields", "fields")

    def __init__(self, rule: CancelOn) -> None:
        self.source = rule.source
        self.event_type = rule.event_type
        self.passes_filters = compile_filters(rule.filters)
        self.same_fields = tuple(rule.same_fields)
        # What a cancelling event must keep to be checked later: see timers.remember_cancel.
        self.fields = frozenset({*rule.filters, *rule.same_fields})

    def cancels(self, pending_event: Mapping[str, Any], event_json: Mapping[str, Any]) -> bool:
        """Whether the event `event_json` cancels a pending firing of `pending_event` (time is
        checked by the caller). A `sameFields` field must be present in both events and equal."""
        if event_json.get("source") != self.source or self.event_type not in (event_json.get("type"), "*"):
            return False
        if not self.passes_filters(event_json):
            return False
        return all(name in pending_event and name in event_json and _same(pending_event[name], event_json[name])
                   for name in self.same_fields)


def _same(left: Any, right: Any) -> bool:
    """Equal as in filters: `true` is not 1."""
    return left == right and isinstance(left, bool) == isinstance(right, bool)


def action_config(definition: TriggerDefinition) -> dict[str, Any]:
    """The action as carried by commands, minus what may be a credential: a webhook's
    secret and header values stay in the definition (commands say `"signed": true` and
    list `headerNames`), and the webhook sink reads them from there."""
    return command_config(definition.action)


def command_config(action: Action) -> dict[str, Any]:
    """One action (the trigger's or a variant's) as commands carry it: see action_config."""
    config = action.model_dump(mode="json", by_alias=True, exclude_none=True,
                               exclude={"secret", "headers"})
    if isinstance(action, WebhookAction):
        config["signed"] = action.secret is not None
        config["headerNames"] = sorted(action.headers)
    return config


def compile_definition(value: bytes | str | dict[str, Any], key: str | None = None) -> CompiledTrigger:
    """Validate a whole definition; raise InvalidDefinition listing every problem found."""
    data = _as_object(value, key)
    trigger_id = data.get("id") if isinstance(data.get("id"), str) else key
    try:
        definition = TriggerDefinition.model_validate(data)
    except ValidationError as exc:
        # Report bad expressions too, so one round of fixes is enough.
        problems = _pydantic_errors(exc)
        conditions = data.get("conditions")
        if (isinstance(conditions, list) and len(conditions) <= limits.MAX_CONDITIONS
                and all(isinstance(c, str) for c in conditions)):
            parsed = _parse_all("conditions", conditions, problems, TRIGGER_SCOPE_NAMES)
            defined = data.get("aggregates")
            problems.extend(unknown_reference_errors("conditions", parsed,
                                                     defined if isinstance(defined, dict) else ()))
        raise InvalidDefinition(trigger_id, problems) from None
    errors: list[str] = []
    if key is not None and key != definition.id:
        errors.append(f"id {definition.id!r} does not match the message key {key!r}")
    conditions = _parse_all("conditions", definition.conditions, errors, TRIGGER_SCOPE_NAMES)
    if (too_costly := cost_error("conditions", conditions)) is not None:
        errors.append(too_costly)
    aggregates = compile_aggregates(definition.aggregates, definition.source, definition.event_type, errors)
    names = list(definition.aggregates)
    errors.extend(unknown_reference_errors("conditions", conditions, names))
    _check_action("action", definition.action, names, errors)
    for position, variant in enumerate(definition.experiment.variants if definition.experiment else ()):
        _check_action(f"experiment.variants.{position}.action", variant.action, names, errors)
    if errors:
        raise InvalidDefinition(definition.id, errors)
    return CompiledTrigger(definition, tuple(conditions), aggregates)


def _check_action(where: str, action: Action, aggregate_names: list[str], errors: list[str]) -> None:
    """The expressions an action holds (update_attribute's values, a webhook's payload
    placeholders), checked like conditions; `where` names the action in the errors."""
    if isinstance(action, UpdateAttributeAction):
        # Checked here, parsed again by the update_attribute action from the command's texts.
        parsed = _parse_all(f"{where}.attributes", list(action.attributes.values()), errors, TRIGGER_SCOPE_NAMES)
        if (too_costly := cost_error(f"{where}.attributes", parsed)) is not None:
            errors.append(too_costly)
        errors.extend(unknown_reference_errors(f"{where}.attributes", parsed, aggregate_names))
    if isinstance(action, WebhookAction) and action.payload is not None:
        placeholders: list[Expression] = []
        errors.extend(f"{where}.payload: {error}"
                      for error in payload_limit_errors(action.payload) or template_errors(action.payload,
                                                                                           placeholders))
        errors.extend(unknown_reference_errors(f"{where}.payload", placeholders, aggregate_names))


def payload_limit_errors(payload: Any) -> list[str]:
    """A webhook payload template's size, depth and placeholder count against the limits
    (checked before its placeholders are parsed, which costs time per placeholder)."""
    text = _json_text(payload)
    errors = []
    if len(text.encode()) > limits.MAX_PAYLOAD_BYTES:
        errors.append(f"larger than {limits.MAX_PAYLOAD_BYTES} bytes as JSON")
    if _depth(payload) > limits.MAX_PAYLOAD_DEPTH:
        errors.append(f"nested deeper than {limits.MAX_PAYLOAD_DEPTH} levels")
    if text.count("{{") > limits.MAX_PAYLOAD_PLACEHOLDERS:
        errors.append(f"more than {limits.MAX_PAYLOAD_PLACEHOLDERS} placeholders ('{{{{')")
    return errors


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _depth(value: Any) -> int:
    """Levels of objects and lists (a scalar is 0)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            stack.extend((item, depth + 1) for item in (node.values() if isinstance(node, dict) else node))
    return deepest


def _as_object(value: bytes | str | dict[str, Any], key: str | None) -> dict[str, Any]:
    """The definition as a JSON object: strict JSON, no repeated key, within the size limit."""
    if isinstance(value, dict):
        try:
            check_json_value(value)
        except ValueError as exc:
            raise InvalidDefinition(key, [str(exc)]) from None
        _check_size(len(_json_text(value).encode("utf-8", "replace")), key)
        return value
    _check_size(len(value) if isinstance(value, bytes) else len(value.encode("utf-8", "replace")), key)
    try:
        data = load_unique_json(value)
    except DuplicateKeys as exc:
        raise InvalidDefinition(key, exc.problems) from None
    except (ValueError, RecursionError) as exc:
        raise InvalidDefinition(key, [f"not valid JSON: {exc}"]) from None
    if not isinstance(data, dict):
        raise InvalidDefinition(key, [f"a definition is a JSON object, not {type(data).__name__}"])
    return data


def _check_size(size: int, key: str | None) -> None:
    if size > limits.MAX_DEFINITION_BYTES:
        raise InvalidDefinition(key, [f"definition: {size} bytes as JSON; the limit is "
                                      f"{limits.MAX_DEFINITION_BYTES} bytes"])


def _parse_all(where: str, texts: list[str], errors: list[str],
               names: frozenset[str] = SCOPE_NAMES) -> list[Expression]:
    parsed: list[Expression] = []
    for index, text in enumerate(texts):
        try:
            parsed.append(parse_expression(text, names))
        except InvalidExpression as exc:
            errors.append(f"{where}[{index}]: {exc}")
    return parsed


def _pydantic_errors(exc: ValidationError) -> list[str]:
    messages = []
    for error in exc.errors(include_url=False, include_input=False):
        messages.append(f"{_location(error['loc'])}: {error['msg']}")
    return messages


_ACTION_TYPES = frozenset(ACTION_TYPES)


def _location(loc: tuple[int | str, ...]) -> str:
    """The field as the author wrote it: `action.headers.Host`, not pydantic's
    `action.webhook.headers.Host.[key]` (the union member tried, and a marker for dict keys)."""
    # An over-long key is shortened: the message names it, it need not repeat it.
    parts = [_shortened(str(part)) for part in loc if part != "[key]"]
    if len(parts) > 1 and parts[0] == "action" and parts[1] in _ACTION_TYPES:
        del parts[1]
    return ".".join(parts) or "definition"


def _shortened(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def compile_journey(value: bytes | str | dict[str, Any], key: str | None = None) -> JourneyDefinition:
    return _validated(JourneyDefinition, value, key)


def compile_decision_flow(value: bytes | str | dict[str, Any], key: str | None = None
                          ) -> CompiledDecisionFlow:
    flow = _validated(DecisionFlowDefinition, value, key)
    try:
        return compile_flow(flow)
    except InvalidExpression as exc:
        raise InvalidDefinition(flow.id, [str(exc)]) from None


def compile_policy_definition(value: bytes | str | dict[str, Any], key: str | None = None) -> CompiledPolicy:
    policy = _validated(PolicyDefinition, value, key)
    try:
        return compile_policy(policy)
    except InvalidTimezone as exc:
        raise InvalidDefinition(policy.id, [str(exc)]) from None


def compile_schema_table(value: bytes | str | dict[str, Any], key: str | None = None) -> SchemaTable:
    return _validated(SchemaTable, value, key, id_field="name")


def _validated(model: type[M], value: bytes | str | dict[str, Any], key: str | None,
               id_field: str = "id") -> M:
    data = _as_object(value, key)
    item_id = data.get(id_field) if isinstance(data.get(id_field), str) else key
    try:
        item = model.model_validate(data)
    except ValidationError as exc:
        raise InvalidDefinition(item_id, _pydantic_errors(exc)) from None
    if key is not None and key != getattr(item, id_field):
        raise InvalidDefinition(item_id, [f"{id_field} {item_id!r} does not match the message key {key!r}"])
    return item
