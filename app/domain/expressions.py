"""Sandboxed expressions: parsed and checked once, evaluated many times.

Common expressions are also compiled once into a Python function that gives exactly what
simpleeval gives; anything else, and any evaluation that raises, goes through simpleeval."""

from __future__ import annotations

import ast
import gc
import math
import operator
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from threading import get_ident as _get_ident
from time import perf_counter as _perf_counter
from typing import Any, ClassVar, NoReturn

from simpleeval import DEFAULT_OPERATORS, MAX_STRING_LENGTH, EvalWithCompoundTypes

from app.errors import ExpressionFailed, InvalidExpression

# The only names an expression may refer to, besides the functions below.
SCOPE_NAMES = frozenset({"event", "customer", "now"})
# A trigger's conditions and update_attribute expressions also see its aggregates.
TRIGGER_SCOPE_NAMES = SCOPE_NAMES | {"agg"}

MAX_EXPRESSION_LENGTH = 2_000
MAX_AST_NODES = 400
MAX_EXPONENT = 1_000
MAX_POWER_BASE = 10**12
MAX_SEQUENCE_LENGTH = 100_000
# Integers are arbitrary precision: a chain of `*` doubles their size at every step. No
# arithmetic takes or makes an integer beyond this (about 1 233 decimal digits).
MAX_INT_BITS = 4_096
# str() and the text functions refuse a value whose text would be longer than this.
MAX_TEXT_LENGTH = 100_000
# Size limits bound each step; this bounds all the expressions evaluated for one event
# together (a Budget), checked between steps and after each compiled evaluation.
MAX_EVALUATION_SECONDS = 0.1
# A static estimate of what an expression may cost (see expression_cost), summed over one
# definition's conditions (or attribute expressions, payload placeholders, a flow's offers).
MAX_DEFINITION_COST = 4_000
# Expressions costing more are not compiled (see parse_expression); ordinary ones cost < 40.
MAX_COMPILED_COST = 60


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


def _int_too_big(value: Any) -> bool:
    return type(value) is int and value.bit_length() > MAX_INT_BITS


def _refuse_big_ints(left: Any, right: Any) -> None:
    if _int_too_big(left) or _int_too_big(right):
        raise ArithmeticError(f"integer operand above {MAX_INT_BITS} bits")


def _safe_pow(base: Any, exponent: Any) -> Any:
    # Huge powers are the cheapest way to burn a worker's CPU from a definition.
    if abs(exponent) > MAX_EXPONENT or abs(base) > MAX_POWER_BASE:
        raise ArithmeticError(f"power {base!r} ** {exponent!r} is too large")
    if type(base) is int and type(exponent) is int and exponent > 0 and abs(base) > 1:
        # The result's size, estimated before computing it: exponent * log2(|base|) bits.
        if exponent * math.log2(abs(base)) > MAX_INT_BITS:
            raise ArithmeticError(f"power {base!r} ** {exponent!r} would be above {MAX_INT_BITS} bits")
    return operator.pow(base, exponent)


def _int_size(value: int) -> int:
    # About its decimal digits; small integers count nothing beyond their place in a list.
    bits = value.bit_length()
    return bits * 3 // 10 if bits > 64 else 0


def _sized(value: Any, limit: int = MAX_SEQUENCE_LENGTH, _seen: dict[int, int] | None = None) -> int:
    """Elements of a sequence counted through nested lists, stopping once past `limit`:
    `[[1] * 100000] * 100000` is short at the top and ten billion elements deep. Repetition
    repeats references to one object, so each distinct object is measured once (and counted
    each time it occurs). A large integer counts its digits: `[10 ** 1000] * 5000` is small
    at the top and five million characters as text."""
    if isinstance(value, str | bytes):
        return len(value)
    if type(value) is int:
        return _int_size(value)
    if isinstance(value, Record):
        value = value._data
    if isinstance(value, Mapping):
        value = list(value.values())
    if not isinstance(value, list | tuple):
        return 0
    flat = _flat_size(value, text=False)
    if flat is not None:
        return flat
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


# Upper bounds of the text of a scalar as str() writes it (a float's repr is at most 24).
_SCALAR_TEXT = {float: 24, bool: 5, type(None): 4, complex: 50, datetime: 32, timedelta: 40}


def _text_size(value: Any, limit: int = MAX_TEXT_LENGTH, _seen: dict[int, int] | None = None) -> int:
    """An estimate, from above within a small factor, of len(str(value)), stopping once past
    `limit`: measured before converting, so a value too large is never converted."""
    kind = type(value)
    if kind is str or kind is bytes:
        return len(value) + 2
    if kind is int:
        return int(value.bit_length()) * 3 // 10 + 2  # its digits, within two
    if kind in _SCALAR_TEXT:
        return _SCALAR_TEXT[kind]
    if isinstance(value, Record):
        return len(value._name) + _text_size(value._data, limit, _seen)
    items: list[Any]
    if isinstance(value, Mapping):
        items = [part for pair in value.items() for part in pair]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        return 100  # anything else this sandbox can reach prints a short repr
    flat = _flat_size(items, text=True)
    if flat is not None:
        return flat
    seen = {} if _seen is None else _seen
    total = 2
    for item in items:
        if total > limit:
            break
        key = id(item)
        if key not in seen:
            seen[key] = _text_size(item, limit, seen)
        total += seen[key] + 2
    return total


def _flat_size(items: list[Any] | tuple[Any, ...], text: bool) -> int | None:
    """_sized or _text_size of a list of only strings, only integers or only other scalars,
    measured by C loops (a Python loop over 100 000 elements takes milliseconds); None for
    anything else."""
    kinds = set(map(type, items))
    count = len(items)
    if kinds == {str}:
        return sum(map(len, items)) + (4 * count + 2 if text else count)
    if kinds == {int}:
        bits = sum(map(int.bit_length, items))
        return bits * 3 // 10 + 3 * count + 2 if text else (count + bits * 3 // 10 if bits > 64 * count else count)
    if kinds and kinds <= _SCALAR_TEXT.keys():
        return (max(_SCALAR_TEXT[kind] for kind in kinds) + 2) * count + 2 if text else count
    return None


def _safe_str(*args: Any) -> str:
    # str() of a list of big numbers or of a repeated record writes megabytes in one C call.
    if args and type(args[0]) is not str and _text_size(args[0]) > MAX_TEXT_LENGTH:
        raise ValueError(f"text of this value would be longer than {MAX_TEXT_LENGTH} characters")
    return str(*args)


def _safe_mult(left: Any, right: Any) -> Any:
    if type(left) is int and type(right) is int:
        if left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise ArithmeticError(f"product would be above {MAX_INT_BITS} bits")
        return left * right
    for seq, count in ((left, right), (right, left)):
        size = _sized(seq)
        if size and isinstance(count, int) and size * count > MAX_SEQUENCE_LENGTH:
            raise ArithmeticError("repeated sequence would be too long")
    _refuse_big_ints(left, right)
    return operator.mul(left, right)


def _safe_mod(left: Any, right: Any) -> Any:
    # "%0999999999d" % 1 would build a gigabyte string: no printf-style formatting.
    if isinstance(left, str | bytes):
        raise TypeError("string formatting with % is not allowed")
    _refuse_big_ints(left, right)
    return operator.mod(left, right)


def _safe_add(left: Any, right: Any) -> Any:
    if type(left) in _NUMBERS and type(right) in _NUMBERS:  # the common case, checked first
        _refuse_big_ints(left, right)
        return left + right
    if _sized(left) + _sized(right) > MAX_SEQUENCE_LENGTH:
        raise ArithmeticError("concatenation would be too long")
    return operator.add(left, right)


def _safe_sub(left: Any, right: Any) -> Any:
    _refuse_big_ints(left, right)
    return left - right


def _safe_truediv(left: Any, right: Any) -> Any:
    _refuse_big_ints(left, right)
    return left / right


def _safe_floordiv(left: Any, right: Any) -> Any:
    _refuse_big_ints(left, right)
    return left // right


_NUMBERS = frozenset({int, float})


OPERATORS: dict[type, Callable[..., Any]] = {
    **DEFAULT_OPERATORS,
    ast.Pow: _safe_pow,
    ast.Mult: _safe_mult,
    ast.Add: _safe_add,
    ast.Sub: _safe_sub,
    ast.Div: _safe_truediv,
    ast.FloorDiv: _safe_floordiv,
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
    "str": _safe_str,
    "bool": bool,
    "lower": lambda s: _safe_str(s).lower(),
    "upper": lambda s: _safe_str(s).upper(),
    "startswith": lambda s, prefix: _safe_str(s).startswith(prefix),
    "endswith": lambda s, suffix: _safe_str(s).endswith(suffix),
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


# Exact types of JSON values that are not objects: no Mapping check needed.
_NEVER_MAPPINGS = frozenset({str, int, float, bool, type(None), list})


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
        if type(value) not in _NEVER_MAPPINGS and isinstance(value, Mapping):  # the ABC check is slow
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


class Budget:
    """The CPU time that every expression evaluated for one event may use together: the
    candidate triggers' conditions share one, so three slow triggers cannot each take the
    whole allowance. Once it is spent, `exhausted` stays true and every later evaluation
    with it fails at once.

    The wall clock is cheap to read; only when it says "late" is the thread's CPU time asked,
    because time spent waiting (for a CPU, the interpreter lock, the collector of another
    thread) is not the expressions' doing and must not make a condition false."""

    __slots__ = ("_cpu_started", "_deadline", "_gc_started", "exhausted", "seconds")

    # The thread's CPU time at the start, read from the system at most once a millisecond
    # per thread (asking costs more than a cheap event's whole evaluation): a reading plus
    # the wall time since it is at least the CPU time now, so a reused one never counts
    # time that was not spent, and forgives at most a millisecond.
    _marks: ClassVar[dict[int, tuple[float, float]]] = {}

    def __init__(self, seconds: float | None = None) -> None:
        self.seconds = seconds = MAX_EVALUATION_SECONDS if seconds is None else seconds
        self.exhausted = False
        self._deadline = (wall := _perf_counter()) + seconds
        self._gc_started = _collections.seconds
        mark = self._marks.get(thread := _get_ident())
        if mark is not None and wall - mark[0] < 0.001:
            self._cpu_started = mark[1] + (wall - mark[0])
        else:
            self._cpu_started = cpu = time.thread_time()
            self._marks[thread] = (wall, cpu)

    def check(self) -> None:
        """Raise EvaluationTimeout once the budget is spent."""
        if time.perf_counter() > self._deadline:  # always so once exhausted
            self._late()

    def left(self) -> bool:
        """Whether any of the budget is left: `check` without raising."""
        if time.perf_counter() <= self._deadline:
            return True
        try:
            self._late()
        except EvaluationTimeout:
            return False
        return True

    def _late(self) -> None:
        # A garbage collection that ran meanwhile is the heap's cost, not the expressions'.
        used = time.thread_time() - self._cpu_started - (_collections.seconds - self._gc_started)
        if self.exhausted or used > self.seconds:
            self.exhausted = True
            raise EvaluationTimeout(f"stopped after {self.seconds * 1000:g} ms")
        self._deadline = time.perf_counter() + self.seconds - used


class _Collections:
    """The CPU time spent in garbage collections so far (gc.callbacks), which a Budget does
    not charge: a full collection of a large heap can take longer than the whole budget."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.thread_time()
        else:
            self.seconds += time.thread_time() - self._started


_collections = _Collections()
gc.callbacks.append(_collections)


# What simpleeval's check of values passes without looking further (its _PRIMITIVE_TYPES).
_PLAIN_SCALARS = frozenset({int, float, str, bool, type(None), bytes, complex})


class _Evaluated(ast.expr):
    """A node standing for a value already computed, so simpleeval's attribute rules can be
    applied to it without evaluating its expression a second time."""

    _fields = ("value",)

    def __init__(self, value: Any) -> None:
        super().__init__()
        self.value = value


class _Evaluator(EvalWithCompoundTypes):  # type: ignore[misc]
    """simpleeval, except that any field of an event or customer reads as an attribute:
    its blocklist (`format`, `mro`, ...) guards Python objects, and a Record holds only data;
    and an evaluation stops once its Budget is spent, checked between steps."""

    budget = Budget(0.0)  # replaced for every evaluation

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.nodes[_Evaluated] = lambda node: node.value

    def _eval(self, node: ast.AST) -> Any:
        budget = self.budget
        if time.perf_counter() > budget._deadline:
            budget._late()
        result = super()._eval(node)
        if time.perf_counter() > budget._deadline:  # nested calls run on the way back up
            budget._late()
        return result

    def _check_disallowed_items(self, item: Any) -> None:
        # simpleeval looks into every container of every step's value, element by element in
        # Python: at the size limits, milliseconds per step. A list, tuple or dict of only
        # plain scalars (its element types gathered in C) holds nothing to refuse.
        kind = type(item)
        if kind is list or kind is tuple:
            if _PLAIN_SCALARS.issuperset(map(type, item)):
                return
        elif kind is dict and _PLAIN_SCALARS.issuperset(map(type, item.values())):
            return
        super()._check_disallowed_items(item)

    def _eval_attribute(self, node: ast.Attribute) -> Any:
        if not node.attr.startswith("_"):
            target = self._eval(node.value)
            if isinstance(target, Record):
                return target[node.attr]
            if isinstance(target, Mapping):  # e.g. an object inside a list field: data, not methods
                return target[node.attr]
            # simpleeval's rules for Python objects (`now.year`), on the value just computed:
            # evaluating node.value again would make `a.b.c...` exponential in its length.
            node = ast.Attribute(value=_Evaluated(target), attr=node.attr, ctx=node.ctx)
        return super()._eval_attribute(node)


class Scope:
    """The names one evaluation sees; built once per event and shared by its expressions.

    `customer` may be a function returning the row: it is then called only when an
    expression first refers to `customer` (most conditions do not, and the row is a store read).
    `extra` holds further read-only objects, e.g. `trigger` and `firing` in webhook payload
    templates. A plain class with slots: one is built for every event with candidates."""

    __slots__ = ("_names",)

    def __init__(self, event: Mapping[str, Any],
                 customer: Mapping[str, Any] | None | Callable[[], Mapping[str, Any] | None],
                 now: datetime, extra: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        names: dict[str, Any]
        if callable(customer):
            names = _CustomerOnDemand(customer)
        else:
            names = {"customer": _customer_record(customer)}
        names["event"] = Record(event, "event", missing_is_none=False)
        names["now"] = now
        if extra:
            for name, value in extra.items():
                names[name] = Record(value, name, missing_is_none=False)
        self._names = names

    def set_aggregates(self, values: Mapping[str, Any]) -> None:
        """`agg.<name>` for the trigger evaluated next (each trigger names its own)."""
        self._names["agg"] = Record(values, "agg", missing_is_none=False)


def _customer_record(row: Mapping[str, Any] | None) -> Record:
    return Record(row or {}, "customer", missing_is_none=True)


class _CustomerOnDemand(dict[str, Any]):
    """Scope names that read the customer row the first time `customer` is looked up."""

    def __init__(self, load: Callable[[], Mapping[str, Any] | None]) -> None:
        # Starts empty, so dict.__init__ has nothing to do: not calling it saves its cost per event.
        self._load = load

    def __missing__(self, name: str) -> Any:
        if name != "customer":
            raise KeyError(name)
        record = self["customer"] = _customer_record(self._load())
        return record


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
    # The same expression as a Python function of the scope's names, when every node of it is
    # in the fast subset (see _compile); None evaluates with simpleeval only.
    _compiled: Callable[[Mapping[str, Any]], Any] | None = field(default=None, repr=False, compare=False)
    # The static estimate of expression_cost, summed per definition by cost_error.
    cost: int = field(default=0, repr=False, compare=False)

    def evaluate(self, scope: Scope, budget: Budget | None = None) -> Any:
        """The expression's value in `scope`, within `budget` (shared with the other
        expressions evaluated for the same event; a fresh one for this expression alone if
        None). Raises ExpressionFailed with the reason, EvaluationTimeout once spent."""
        if budget is None:
            budget = Budget()
        compiled = self._compiled
        if compiled is not None:
            try:
                result = compiled(scope._names)
            except Exception:  # noqa: BLE001, S110 - simpleeval below gives the exact error
                pass
            else:
                # Each compiled step is bounded by the size guards; the budget is checked after.
                if time.perf_counter() <= budget._deadline:  # never once exhausted: it is past
                    return result
                try:
                    budget._late()
                except EvaluationTimeout as exc:
                    self._fail(exc)
                return result
        _EVALUATOR.names = scope._names
        _EVALUATOR.budget = budget
        try:
            return _EVALUATOR.eval(self.text, previously_parsed=self._tree)
        except Exception as exc:  # noqa: BLE001 - any failure is "this event does not qualify"
            self._fail(exc)
        finally:
            _EVALUATOR.names = {}  # hold no event data between evaluations

    def _fail(self, exc: Exception) -> NoReturn:
        raise ExpressionFailed(f"{self.text!r}: {type(exc).__name__}: {exc}") from exc


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
    cost = expression_cost(tree)
    # A compiled expression is checked against the budget only when it returns: only cheap
    # ones are compiled, so that overshoot stays a few steps; costlier ones are checked at
    # every step by simpleeval.
    compiled = _compile(tree.body, names) if cost <= MAX_COMPILED_COST else None
    return Expression(text=text, _tree=tree.body, _compiled=compiled, cost=cost)


# Steps that can each take up to a few milliseconds on data at the size limits (calls
# convert or scan whole values; `*` and `**` build them) weigh more than a field read.
_COSTLY_STEPS: dict[type, int] = {ast.Call: 10, ast.Pow: 10, ast.Mult: 10, ast.Mod: 5, ast.Subscript: 2}


def expression_cost(tree: ast.AST) -> int:
    """A static estimate of what evaluating `tree` may cost: one per value node, more for
    calls and for operators that build values. `event.amount > 1000` costs 4."""
    cost = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.expr):
            cost += _COSTLY_STEPS.get(type(node), 1)
        elif type(node) in _COSTLY_STEPS:  # an operator: Pow, Mult, Mod
            cost += _COSTLY_STEPS[type(node)]
    return cost


def cost_error(where: str, expressions: Iterable[Expression]) -> str | None:
    """Why `expressions`, the field `where` of one definition, are too costly together, or
    None: the per-event budget stops a slow evaluation, this refuses one up front."""
    total = sum(expression.cost for expression in expressions)
    if total > MAX_DEFINITION_COST:
        return f"{where}: total expression cost {total} exceeds {MAX_DEFINITION_COST}"
    return None


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


# --- Compiling the fast subset ------------------------------------------------------------
#
# A checked tree whose nodes are all in the subset below becomes the body of
# `lambda _n: ...`, compiled once, that computes what _Evaluator computes, node for node:
#
# - a scope name is `_n["event"]`, a lookup in the scope's names mapping (as simpleeval's);
# - `x.attr` is `_attr(x, "attr")`: an item of a Record or Mapping, never Python attribute
#   access; on anything else (`now.year`) it raises _Fallback and simpleeval decides;
# - operators are calls of the functions in OPERATORS, calls are calls of those in FUNCTIONS,
#   both looked up when compiling; comparison chains, and/or and if/else run in the same order
#   and return the same objects; constants are the tree's own objects (closure variables, so
#   `is` and folding behave as in simpleeval);
# - every node's value that simpleeval would check (modules, forbidden functions) is checked
#   with simpleeval's own check; values of a type that check passes untouched skip it.
#
# Sandbox: the generated code is built as an AST from the checked tree, so user text only ever
# appears in it as constants (names and attributes as string keys), never as identifiers. Its
# globals hold no builtins, only the helpers below; it can only look items up, build
# lists/tuples/dicts and call OPERATORS, FUNCTIONS and these helpers. Pow, Mult and Mod, which
# can be made slow, are not in the subset: those expressions keep simpleeval's deadline. Any
# exception in a compiled function makes `evaluate` re-run simpleeval, so errors are exactly
# simpleeval's; expressions are pure, so evaluating twice is safe.

_FAST_BINARY: dict[type, str] = {ast.Add: "Add", ast.Sub: "Sub", ast.Div: "Div", ast.FloorDiv: "FloorDiv"}
_FAST_UNARY: dict[type, str] = {ast.Not: "Not", ast.USub: "USub", ast.UAdd: "UAdd"}
_COMPARE: dict[type, str] = {
    ast.Eq: "Eq", ast.NotEq: "NotEq", ast.Lt: "Lt", ast.LtE: "LtE", ast.Gt: "Gt", ast.GtE: "GtE",
    ast.In: "In", ast.NotIn: "NotIn", ast.Is: "Is", ast.IsNot: "IsNot",
}
# Types on which simpleeval's per-node check does nothing: not modules, not callable, not
# containers it looks into. Checking exact types keeps subclasses on the full check.
_UNCHECKED_TYPES = frozenset({int, float, complex, str, bytes, bool, type(None), Record, datetime, timedelta})


class _Fallback(Exception):
    """Raised by compiled code for what only simpleeval handles."""


class _NotFast(Exception):
    """A node outside the compiled subset."""


def _no_check(value: Any) -> None:
    return None


# simpleeval's check of every node's value (modules, forbidden functions, inside containers).
_check_items: Callable[[Any], None] = getattr(_EVALUATOR, "_check_disallowed_items", _no_check)


def _checked(value: Any) -> Any:
    _check_items(value)
    return value


def _attr(target: Any, attr: str) -> Any:
    """`target.attr` as _Evaluator reads it from a Record or a Mapping."""
    if type(target) is Record:
        value = target._lookup(attr)  # what Record's [] does, one call less
    elif isinstance(target, Record | Mapping):
        value = target[attr]
    else:
        raise _Fallback  # e.g. `now.year`: Python attribute access, left to simpleeval's checks
    if type(value) not in _UNCHECKED_TYPES:
        _check_items(value)
    return value


_GLOBALS: dict[str, Any] = {
    "__builtins__": {},
    "_type": type,
    "_unchecked": _UNCHECKED_TYPES,
    "_checked": _checked,
    "_attr": _attr,
    **{f"_op_{name}": OPERATORS[op] for table in (_FAST_BINARY, _FAST_UNARY, _COMPARE) for op, name in table.items()},
    **{f"_f_{name}": function for name, function in FUNCTIONS.items()},
}


def _load(name: str) -> ast.Name:
    return ast.Name(id=name, ctx=ast.Load())


def _call(name: str, *args: ast.expr) -> ast.Call:
    return ast.Call(func=_load(name), args=list(args), keywords=[])


class _Compiler:
    def __init__(self, names: frozenset[str]) -> None:
        self.names = names
        self.constants: list[Any] = []
        self.temps = 0

    def temp(self) -> str:
        self.temps += 1
        return f"_t{self.temps}"

    def assign(self, name: str, value: ast.expr) -> ast.NamedExpr:
        return ast.NamedExpr(target=ast.Name(id=name, ctx=ast.Store()), value=value)

    def checked(self, value: ast.expr) -> ast.expr:
        """`value`, through simpleeval's check unless its type needs none (inline: no call)."""
        t = self.temp()
        test = ast.Compare(left=_call("_type", self.assign(t, value)), ops=[ast.In()],
                           comparators=[_load("_unchecked")])
        return ast.IfExp(test=test, body=_load(t), orelse=_call("_checked", _load(t)))

    def emit(self, node: ast.AST) -> ast.expr:
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.Name):
            if node.id not in self.names:
                raise _NotFast
            return self.checked(ast.Subscript(value=_load("_n"), slice=ast.Constant(node.id), ctx=ast.Load()))
        if isinstance(node, ast.Attribute):
            if node.attr.startswith("_"):
                raise _NotFast
            return _call("_attr", self.emit(node.value), ast.Constant(node.attr))
        if isinstance(node, ast.Subscript):
            if isinstance(node.slice, ast.Slice):
                raise _NotFast
            return self.checked(ast.Subscript(value=self.emit(node.value), slice=self.emit(node.slice),
                                              ctx=ast.Load()))
        if isinstance(node, ast.List):
            return self.checked(ast.List(elts=[self.emit(e) for e in node.elts], ctx=ast.Load()))
        if isinstance(node, ast.Tuple):
            return self.checked(ast.Tuple(elts=[self.emit(e) for e in node.elts], ctx=ast.Load()))
        if isinstance(node, ast.Dict):
            if any(key is None for key in node.keys):  # {**x}
                raise _NotFast
            return self.checked(ast.Dict(keys=[self.emit(k) for k in node.keys if k is not None],
                                         values=[self.emit(v) for v in node.values]))
        if isinstance(node, ast.BinOp) and type(node.op) in _FAST_BINARY:
            operation = f"_op_{_FAST_BINARY[type(node.op)]}"
            return self.checked(_call(operation, self.emit(node.left), self.emit(node.right)))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _FAST_UNARY:
            value = _call(f"_op_{_FAST_UNARY[type(node.op)]}", self.emit(node.operand))
            return value if isinstance(node.op, ast.Not) else self.checked(value)  # not: a bool
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And | ast.Or):
            return self.boolop(node)
        if isinstance(node, ast.IfExp):
            # The value is the body's or the other branch's, already checked.
            return ast.IfExp(test=self.emit(node.test), body=self.emit(node.body), orelse=self.emit(node.orelse))
        if isinstance(node, ast.Call):
            return self.call(node)
        raise _NotFast

    def constant(self, node: ast.Constant) -> ast.expr:
        value = node.value
        if isinstance(value, str | bytes) and len(value) > MAX_STRING_LENGTH:
            raise _NotFast  # simpleeval refuses it, with its message
        # The tree's own object, as simpleeval returns it; a closure variable, so `1000 is 1000`
        # compares two objects as in simpleeval rather than one merged constant, nothing is
        # folded, and `None[0]` is no compile-time SyntaxWarning.
        self.constants.append(value)
        return _load(f"_k{len(self.constants)}")

    def compare(self, node: ast.Compare) -> ast.expr:
        # simpleeval: left, then each comparator in turn; stop at the first falsy result and
        # return it, else the last result. An `and` of the steps does the same (one truth test
        # per step but the last), each comparator kept in a temporary for the next step.
        if any(type(op) not in _COMPARE for op in node.ops):
            raise _NotFast
        steps: list[ast.expr] = []
        left = self.emit(node.left)
        for index, (op, comparator) in enumerate(zip(node.ops, node.comparators, strict=True)):
            right = self.emit(comparator)
            if index < len(node.ops) - 1:
                t = self.temp()
                steps.append(_call(f"_op_{_COMPARE[type(op)]}", left, self.assign(t, right)))
                left = _load(t)
            else:
                steps.append(_call(f"_op_{_COMPARE[type(op)]}", left, right))
        result = steps[0] if len(steps) == 1 else ast.BoolOp(op=ast.And(), values=steps)
        return self.checked(result)

    def boolop(self, node: ast.BoolOp) -> ast.expr:
        # Python's and/or return the deciding value like simpleeval's; simpleeval also tests the
        # truth of the last value, which `t if (not (t := last)) or True else t` does once.
        values = [self.emit(value) for value in node.values]
        t = self.temp()
        truth = ast.BoolOp(op=ast.Or(), values=[ast.UnaryOp(op=ast.Not(), operand=self.assign(t, values[-1])),
                                                 ast.Constant(True)])
        values[-1] = ast.IfExp(test=truth, body=_load(t), orelse=_load(t))
        return ast.BoolOp(op=node.op, values=values)  # the value is one of the checked values

    def call(self, node: ast.Call) -> ast.expr:
        if not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS) or node.keywords:
            raise _NotFast
        if any(isinstance(arg, ast.Starred) for arg in node.args):
            raise _NotFast
        return self.checked(_call(f"_f_{node.func.id}", *(self.emit(arg) for arg in node.args)))


def _lambda(params: list[str], body: ast.expr) -> ast.Lambda:
    arguments = ast.arguments(posonlyargs=[], args=[ast.arg(arg=p) for p in params], vararg=None,
                              kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[])
    return ast.Lambda(args=arguments, body=body)


def _compile(tree: ast.AST, names: frozenset[str]) -> Callable[[Mapping[str, Any]], Any] | None:
    """`tree` (checked by _check_tree) as a function of the scope's names, or None when it has
    a node outside the fast subset."""
    compiler = _Compiler(names)
    try:
        body = compiler.emit(tree)
        constants = [f"_k{i}" for i in range(1, len(compiler.constants) + 1)]
        # `lambda _k1, ...: lambda _n: body`, called once with the constants.
        factory = ast.fix_missing_locations(ast.Expression(body=_lambda(constants, _lambda(["_n"], body))))
        code = compile(factory, "<expression>", "eval")
    except (_NotFast, RecursionError, MemoryError, SyntaxError, ValueError):
        return None
    function: Callable[[Mapping[str, Any]], Any] = eval(code, _GLOBALS)(*compiler.constants)  # noqa: S307
    return function
