"""Windowed aggregates of a trigger: compiled once per definition, identified by what they
compute so that identical aggregates in several triggers share one state per customer."""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from app.domain.expressions import Budget, Expression, Scope, parse_expression
from app.domain.filters import FilterCheck, compile_filters
from app.domain.models import AggregateDefinition, AggregateFn, Event, Source
from app.errors import ExpressionFailed, InvalidExpression

AGG = "agg"
# `of` sees the event only: an aggregate is state of the event stream, not of the row.
OF_NAMES = frozenset({"event"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # `now` in an `of` scope: OF_NAMES does not let it be read
_EVENT_FIELD = re.compile(r"\s*event\.([A-Za-z_][A-Za-z0-9_]*)\s*")
_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class CompiledAggregate:
    name: str  # as the trigger names it: `agg.<name>`
    id: str  # of what it computes: identical aggregates of any trigger share it
    fn: AggregateFn
    of: Expression | None
    window_ms: int
    source: Source
    event_type: str
    filters: Mapping[str, Any]
    passes_filters: FilterCheck = field(init=False, repr=False, compare=False)
    # `of` when it is just `event.<field>`, the common case, read without an evaluation.
    of_field: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "passes_filters", compile_filters(self.filters))
        plain = _EVENT_FIELD.fullmatch(self.of.text) if self.of is not None else None
        object.__setattr__(self, "of_field", plain.group(1) if plain else None)

    def qualifies(self, event: Event, event_json: Mapping[str, Any]) -> bool:
        return (event.source is self.source and self.event_type in (event.type, "*")
                and self.passes_filters(event_json))

    def value_of(self, event_json: Mapping[str, Any]) -> Any:
        """What the event contributes: `of`'s value, None when it has none (a missing field,
        an expression that fails): see windows.add for how each fn treats None."""
        if self.of is None:
            return None
        if self.of_field is not None:
            value = event_json.get(self.of_field)
            if type(value) in _SCALARS:  # objects and lists: as the expression reads them, below
                return value
        try:
            return self.of.evaluate(Scope(event=event_json, customer=None, now=_EPOCH), Budget())
        except ExpressionFailed:
            return None


def compile_aggregates(definitions: Mapping[str, AggregateDefinition], trigger_source: Source,
                       trigger_event_type: str, errors: list[str]) -> tuple[CompiledAggregate, ...]:
    compiled = []
    for name, definition in definitions.items():
        source = definition.source or trigger_source
        event_type = definition.event_type or trigger_event_type
        of = None
        if definition.of is not None:
            try:
                of = parse_expression(definition.of, OF_NAMES)
            except InvalidExpression as exc:
                errors.append(f"aggregates.{name}.of: {exc}")
                continue
        identity = {"fn": definition.fn.value, "of": definition.of, "windowMs": definition.window.millis,
                    "source": source.value, "eventType": event_type, "filters": definition.filters}
        compiled.append(CompiledAggregate(
            name=name, id=_identity_hash(identity), fn=definition.fn, of=of,
            window_ms=definition.window.millis, source=source, event_type=event_type,
            filters=definition.filters))
    return tuple(compiled)


def _identity_hash(identity: Mapping[str, Any]) -> str:
    canonical = orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(canonical, digest_size=8).hexdigest()


def referenced_names(expressions: Iterable[Expression]) -> set[str]:
    """The `agg.<name>` (and `agg['<name>']`) an expression reads."""
    names: set[str] = set()
    for expression in expressions:
        for node in ast.walk(expression._tree):
            if isinstance(node, ast.Attribute) and _is_agg(node.value):
                names.add(node.attr)
            elif (isinstance(node, ast.Subscript) and _is_agg(node.value)
                  and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str)):
                names.add(node.slice.value)
    return names


def _is_agg(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == AGG


def unknown_reference_errors(where: str, expressions: Iterable[Expression], defined: Iterable[str]) -> list[str]:
    known = set(defined)
    return [f"{where}: agg.{name} is not defined in aggregates"
            + (f" (defined: {', '.join(sorted(known))})" if known else " (the trigger defines no aggregates)")
            for name in sorted(referenced_names(expressions) - known)]
