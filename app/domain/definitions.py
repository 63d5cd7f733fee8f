"""Turning raw definition JSON into a checked, ready-to-evaluate trigger — or a full list of why not."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from app.domain.decisions import CompiledDecisionFlow, DecisionFlowDefinition, compile_flow
from app.domain.expressions import Expression, parse_expression
from app.domain.filters import FilterCheck, compile_filters
from app.domain.intake import check_json_value, load_json
from app.domain.journeys import JourneyDefinition
from app.domain.models import TriggerDefinition, UpdateAttributeAction, WebhookAction
from app.domain.schema import SchemaTable
from app.domain.webhooks import template_errors
from app.errors import InvalidDefinition, InvalidExpression

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class CompiledTrigger:
    """A valid definition with its expressions parsed once, for evaluation many times."""

    definition: TriggerDefinition
    conditions: tuple[Expression, ...]
    attributes: dict[str, Expression]
    # The action as action commands carry it, and the filters as one check: built once.
    command_action: dict[str, Any] = field(init=False, repr=False, compare=False)
    passes_filters: FilterCheck = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "command_action", action_config(self.definition))
        object.__setattr__(self, "passes_filters", compile_filters(self.definition.filters))

    @property
    def id(self) -> str:
        return self.definition.id

    @property
    def sort_key(self) -> tuple[int, str]:
        """Descending priority, ties by id: the contract's evaluation order."""
        return (-self.definition.priority, self.definition.id)


def action_config(definition: TriggerDefinition) -> dict[str, Any]:
    """The action as carried by commands, minus what may be a credential: a webhook's
    secret and header values stay in the definition (commands say `"signed": true` and
    list `headerNames`), and the webhook sink reads them from there."""
    action = definition.action
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
        if isinstance(conditions, list) and all(isinstance(c, str) for c in conditions):
            _parse_all("conditions", conditions, problems)
        raise InvalidDefinition(trigger_id, problems) from None
    errors: list[str] = []
    if key is not None and key != definition.id:
        errors.append(f"id {definition.id!r} does not match the message key {key!r}")
    conditions = _parse_all("conditions", definition.conditions, errors)
    attributes: dict[str, Expression] = {}
    if isinstance(definition.action, UpdateAttributeAction):
        parsed = _parse_all("action.attributes", list(definition.action.attributes.values()), errors)
        attributes = dict(zip(definition.action.attributes, parsed, strict=False))
    if isinstance(definition.action, WebhookAction) and definition.action.payload is not None:
        errors.extend(f"action.payload: {error}" for error in template_errors(definition.action.payload))
    if errors:
        raise InvalidDefinition(definition.id, errors)
    return CompiledTrigger(definition, tuple(conditions), attributes)


def _as_object(value: bytes | str | dict[str, Any], key: str | None) -> dict[str, Any]:
    if isinstance(value, dict):
        try:
            check_json_value(value)
        except ValueError as exc:
            raise InvalidDefinition(key, [str(exc)]) from None
        return value
    try:
        data = load_json(value)
    except (ValueError, RecursionError) as exc:
        raise InvalidDefinition(key, [f"not valid JSON: {exc}"]) from None
    if not isinstance(data, dict):
        raise InvalidDefinition(key, [f"a definition is a JSON object, not {type(data).__name__}"])
    return data


def _parse_all(where: str, texts: list[str], errors: list[str]) -> list[Expression]:
    parsed: list[Expression] = []
    for index, text in enumerate(texts):
        try:
            parsed.append(parse_expression(text))
        except InvalidExpression as exc:
            errors.append(f"{where}[{index}]: {exc}")
    return parsed


def _pydantic_errors(exc: ValidationError) -> list[str]:
    messages = []
    for error in exc.errors(include_url=False, include_input=False):
        location = ".".join(str(part) for part in error["loc"]) or "definition"
        messages.append(f"{location}: {error['msg']}")
    return messages


def compile_journey(value: bytes | str | dict[str, Any], key: str | None = None) -> JourneyDefinition:
    return _validated(JourneyDefinition, value, key)


def compile_decision_flow(value: bytes | str | dict[str, Any], key: str | None = None
                          ) -> CompiledDecisionFlow:
    flow = _validated(DecisionFlowDefinition, value, key)
    try:
        return compile_flow(flow)
    except InvalidExpression as exc:
        raise InvalidDefinition(flow.id, [str(exc)]) from None


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
