"""Sandboxed expressions: parsed and checked once, evaluated many times with simpleeval."""

from __future__ import annotations

import ast
import operator
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from simpleeval import DEFAULT_OPERATORS, EvalWithCompoundTypes

from app.errors import ExpressionFailed, InvalidExpression

# The only names an expression may refer to, besides the functions below.
SCOPE_NAMES = frozenset({"event", "customer", "now"})

MAX_EXPRESSION_LENGTH = 2_000
MAX_AST_NODES = 400
MAX_EXPONENT = 1_000
MAX_POWER_BASE = 10**12
MAX_SEQUENCE_LENGTH = 100_000
# Size limits bound each step; this bounds the whole evaluation, checked between steps.
MAX_EVALUATION_SECONDS = 0.1


def _to_datetime(value: Any) -> datetime:
    """ISO 8601 text, epoch seconds or a datetime, as an aware UTC datetime."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=UTC)
    elif isinstance(value, str):
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:
        raise TypeError(f"cannot read a time from {type(value).__name__}")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _safe_pow(base: Any, exponent: Any) -> Any:
    # Huge powers are the cheapest way to burn a worker's CPU from a definition.
    if abs(exponent) > MAX_EXPONENT or abs(base) > MAX_POWER_BASE:
        raise ArithmeticError(f"power {base!r} ** {exponent!r} is too large")
    return operator.pow(base, exponent)


def _sized(value: Any, limit: int = MAX_SEQUENCE_LENGTH, _seen: dict[int, int] | None = None) -> int:
    """Elements of a sequence counted through nested lists, stopping once past `limit`:
    `[[1] * 100000] * 100000` is short at the top and ten billion elements deep. Repetition
    repeats references to one object, so each distinct object is measured once."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, Record):
        value = value._data
    if isinstance(value, Mapping):
        value = list(value.values())
    if not isinstance(value, list | tuple):
        return 0
    seen = {} if _seen is None else _seen
    total = len(value)
    for item in value:
        if total > limit:
            break
        key = id(item)
        if key not in seen:
            seen[key] = _sized(item, limit, seen)
        total += seen[key]
    return total


def _safe_mult(left: Any, right: Any) -> Any:
    for seq, count in ((left, right), (right, left)):
        size = _sized(seq)
        if size and isinstance(count, int) and size * count > MAX_SEQUENCE_LENGTH:
            raise ArithmeticError("repeated sequence would be too long")
    return operator.mul(left, right)


def _safe_mod(left: Any, right: Any) -> Any:
    # "%0999999999d" % 1 would build a gigabyte string: no printf-style formatting.
    if isinstance(left, str | bytes):
        raise TypeError("string formatting with % is not allowed")
    return operator.mod(left, right)


def _safe_add(left: Any, right: Any) -> Any:
    if _sized(left) + _sized(right) > MAX_SEQUENCE_LENGTH:
        raise ArithmeticError("concatenation would be too long")
    return operator.add(left, right)


OPERATORS: dict[type, Callable[..., Any]] = {
    **DEFAULT_OPERATORS,
    ast.Pow: _safe_pow,
    ast.Mult: _safe_mult,
    ast.Add: _safe_add,
    ast.Mod: _safe_mod,
}

FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "abs": abs,
    "min": min,
    "max": max,
    # round(1, -10**8) would compute 10**(10**8) in C, uninterruptibly.
    "round": lambda x, digits=0: round(x, max(-30, min(30, int(digits)))),
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "lower": lambda s: str(s).lower(),
    "upper": lambda s: str(s).upper(),
    "startswith": lambda s, prefix: str(s).startswith(prefix),
    "endswith": lambda s, suffix: str(s).endswith(suffix),
    "timestamp": _to_datetime,
    "minutes": lambda n: timedelta(minutes=n),
    "hours": lambda n: timedelta(hours=n),
    "days": lambda n: timedelta(days=n),
}

_ALLOWED_NODES: tuple[type, ...] = (
    ast.Expression, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.IfExp, ast.Call,
    ast.Constant, ast.Name, ast.Attribute, ast.Subscript, ast.Slice, ast.List, ast.Tuple,
    ast.Dict, ast.Load, ast.And, ast.Or, ast.Not, ast.USub, ast.UAdd, ast.Add, ast.Sub,
    ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.Eq, ast.NotEq, ast.Lt, ast.LtE,
    ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Is, ast.IsNot,
)


class Record:
    """A JSON object seen through attribute access: `event.amount`, `customer.tier`.

    A missing key raises for `event` (the condition is then false) but reads as
    None for `customer`, whose absent attributes the contract says are not errors.
    Nested objects are wrapped the same way so `event.after.status` works.
    """

    __slots__ = ("_data", "_missing_is_none", "_name")

    def __init__(self, data: Mapping[str, Any], name: str, missing_is_none: bool) -> None:
        self._data = data
        self._name = name
        self._missing_is_none = missing_is_none

    def _lookup(self, key: str) -> Any:
        try:
            value = self._data[key]
        except KeyError:
            if self._missing_is_none:
                return None
            raise KeyError(f"{self._name} has no field {key!r}") from None
        if isinstance(value, Mapping):
            return Record(value, f"{self._name}.{key}", self._missing_is_none)
        return value

    def __getattr__(self, key: str) -> Any:
        return self._lookup(key)

    def __getitem__(self, key: str) -> Any:
        return self._lookup(key)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __repr__(self) -> str:
        return f"{self._name}{dict(self._data)!r}"


class EvaluationTimeout(Exception):
    pass


class _Evaluator(EvalWithCompoundTypes):  # type: ignore[misc]
    """simpleeval, except that any field of an event or customer reads as an attribute:
    its blocklist (`format`, `mro`, ...) guards Python objects, and a Record holds only data;
    and an evaluation stops once it has run longer than MAX_EVALUATION_SECONDS."""

    _deadline = 0.0

    def eval(self, expr: str, previously_parsed: ast.AST | None = None) -> Any:
        self._deadline = time.perf_counter() + MAX_EVALUATION_SECONDS
        return super().eval(expr, previously_parsed=previously_parsed)

    def _eval(self, node: ast.AST) -> Any:
        self._check_deadline()
        result = super()._eval(node)
        self._check_deadline()  # nested calls run on the way back up
        return result

    def _check_deadline(self) -> None:
        if time.perf_counter() > self._deadline:
            raise EvaluationTimeout(f"stopped after {MAX_EVALUATION_SECONDS * 1000:g} ms")

    def _eval_attribute(self, node: ast.Attribute) -> Any:
        if not node.attr.startswith("_"):
            target = self._eval(node.value)
            if isinstance(target, Record):
                return target[node.attr]
            if isinstance(target, Mapping):  # e.g. an object inside a list field: data, not methods
                return target[node.attr]
        return super()._eval_attribute(node)


@dataclass(frozen=True)
class Scope:
    """The names one evaluation sees; built once per event and shared by its expressions."""

    event: Mapping[str, Any]
    customer: Mapping[str, Any] | None
    now: datetime
    # Further read-only objects, e.g. `trigger` and `firing` in webhook payload templates.
    extra: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    _names: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = {
            "event": Record(self.event, "event", missing_is_none=False),
            "customer": Record(self.customer or {}, "customer", missing_is_none=True),
            "now": self.now,
            **{name: Record(value, name, missing_is_none=False) for name, value in self.extra.items()},
        }
        object.__setattr__(self, "_names", names)


def _new_evaluator() -> _Evaluator:
    # A copy: simpleeval adds list/tuple/dict/set to the functions it is given.
    return _Evaluator(operators=OPERATORS, functions=dict(FUNCTIONS), names={})


# Building an evaluator costs more than most evaluations, so one is shared and given each
# scope's names in turn: evaluation is synchronous and never nested, so nothing interleaves.
_EVALUATOR = _new_evaluator()


@dataclass(frozen=True)
class Expression:
    """One checked expression. Build it with `parse_expression`."""

    text: str
    _tree: ast.AST = field(repr=False, compare=False)

    def evaluate(self, scope: Scope) -> Any:
        _EVALUATOR.names = scope._names
        try:
            return _EVALUATOR.eval(self.text, previously_parsed=self._tree)
        except Exception as exc:  # noqa: BLE001 - any failure is "this event does not qualify"
            raise ExpressionFailed(f"{self.text!r}: {type(exc).__name__}: {exc}") from exc
        finally:
            _EVALUATOR.names = {}  # hold no event data between evaluations


def parse_expression(text: str, names: frozenset[str] = SCOPE_NAMES) -> Expression:
    """Parse and sandbox-check `text`, raising InvalidExpression with the reason."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidExpression(str(text), "empty expression")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise InvalidExpression(text[:80], f"longer than {MAX_EXPRESSION_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise InvalidExpression(text, f"syntax error: {exc.msg}") from None
    _check_tree(text, tree, names)
    return Expression(text=text, _tree=tree.body)


def _check_tree(text: str, tree: ast.Expression, names: frozenset[str]) -> None:
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_AST_NODES:
        raise InvalidExpression(text, f"more than {MAX_AST_NODES} syntax nodes")
    for node in nodes:
        if not isinstance(node, _ALLOWED_NODES):
            raise InvalidExpression(text, f"{type(node).__name__} is not allowed")
        if isinstance(node, ast.Name) and node.id not in names | FUNCTIONS.keys():
            allowed = ", ".join(sorted(names))
            raise InvalidExpression(text, f"unknown name {node.id!r} (use {allowed})")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise InvalidExpression(text, f"attribute {node.attr!r} is not allowed")
        if isinstance(node, ast.Call) and not (
            isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS
        ):
            raise InvalidExpression(text, "only these functions may be called: " + _functions())
        if isinstance(node, ast.Call) and node.keywords:
            raise InvalidExpression(text, "keyword arguments are not allowed")
        if isinstance(node, ast.Name) and node.id in FUNCTIONS and not _is_called(node, nodes):
            raise InvalidExpression(text, f"function {node.id!r} must be called")


def _is_called(name: ast.Name, nodes: list[ast.AST]) -> bool:
    return any(isinstance(n, ast.Call) and n.func is name for n in nodes)


def _functions() -> str:
    return ", ".join(sorted(FUNCTIONS))
