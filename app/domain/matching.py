"""Which definitions an event can match: an index by (source, eventType)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from app.domain.aggregates import CompiledAggregate
from app.domain.definitions import CompiledTrigger
from app.domain.filters import passes_filters
from app.domain.models import Source

__all__ = ["WILDCARD", "DefinitionIndex", "passes_filters"]

WILDCARD = "*"


class DefinitionIndex:
    """Enabled definitions grouped by (source, eventType), each group in evaluation order.

    Lookup cost depends on the definitions of the event's own type, not on how many
    definitions exist for other types.
    """

    def __init__(self) -> None:
        self._by_id: dict[str, CompiledTrigger] = {}
        self._groups: dict[tuple[str, str], list[CompiledTrigger]] = {}
        # Merged exact+wildcard lists, only for types some definition names, so events of
        # arbitrary unknown types cannot grow it.
        self._candidates: dict[tuple[str, str], tuple[CompiledTrigger, ...]] = {}
        self._prefiltered: dict[tuple[str, str], _Prefiltered] = {}
        self._timed: dict[tuple[str, str], TimedInterest | None] = {}
        # Whether any enabled trigger has a delay, cancelOn or aggregates: events then take
        # the timed path (app/evaluation/timed.py); otherwise nothing of it costs anything.
        self.any_timed = False
        self.any_delayed = False
        self.any_limited = False
        self.cancel_fields: frozenset[str] = frozenset()
        self.cancel_horizon_ms = 0
        self.aggregate_ids: frozenset[str] = frozenset()
        # Triggers whose experiment counts conversions, by the conversion's (source, eventType).
        self._conversions: dict[tuple[str, str], tuple[CompiledTrigger, ...]] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, trigger_id: str) -> bool:
        return trigger_id in self._by_id

    def get(self, trigger_id: str) -> CompiledTrigger | None:
        return self._by_id.get(trigger_id)

    def all(self) -> Iterable[CompiledTrigger]:
        return self._by_id.values()

    def put(self, trigger: CompiledTrigger) -> None:
        self.remove(trigger.id)
        self._by_id[trigger.id] = trigger
        definition = trigger.definition
        if definition.enabled:
            group = self._groups.setdefault((definition.source.value, definition.event_type), [])
            group.append(trigger)
            group.sort(key=lambda t: t.sort_key)
        self._changed()

    def _changed(self) -> None:
        self._candidates.clear()
        self._prefiltered.clear()
        self._timed.clear()
        enabled = [t for t in self._by_id.values() if t.definition.enabled]
        self.any_timed = any(t.delay_ms or t.aggregates for t in enabled)
        # Pending firings may exist for disabled triggers too (they are dropped when due).
        self.any_delayed = any(t.delay_ms for t in self._by_id.values())
        self.any_limited = any(t.definition.limit is not None for t in enabled)
        rules = [rule for t in self._by_id.values() for rule in t.cancel_on]
        # What a cancel event must keep, and for how long, to cancel firings scheduled later.
        self.cancel_fields = frozenset(name for rule in rules for name in rule.fields)
        self.cancel_horizon_ms = max((t.delay_ms for t in self._by_id.values() if t.cancel_on), default=0)
        self.aggregate_ids = frozenset(a.id for t in enabled for a in t.aggregates)
        # Disabled triggers too: their open windows still convert until they expire.
        conversions: dict[tuple[str, str], list[CompiledTrigger]] = {}
        for t in self._by_id.values():
            if t.definition.experiment is not None and (c := t.definition.experiment.conversion) is not None:
                conversions.setdefault((c.source.value, c.event_type), []).append(t)
        self._conversions = {key: tuple(group) for key, group in conversions.items()}

    @property
    def any_conversion(self) -> bool:
        return bool(self._conversions)

    def converted_by(self, source: Source, event_type: str) -> tuple[CompiledTrigger, ...]:
        """The triggers an event of this type may count a conversion for (filters aside)."""
        exact = self._conversions.get((source, event_type), ())
        wildcard = self._conversions.get((source, WILDCARD), ()) if event_type != WILDCARD else ()
        return exact + wildcard if wildcard else exact

    def remove(self, trigger_id: str) -> None:
        old = self._by_id.pop(trigger_id, None)
        if old is None:
            return
        key = (old.definition.source.value, old.definition.event_type)
        group = [t for t in self._groups.get(key, []) if t.id != trigger_id]
        if group:
            self._groups[key] = group
        else:
            self._groups.pop(key, None)
        self._changed()

    def candidates(self, source: Source, event_type: str) -> tuple[CompiledTrigger, ...]:
        """Enabled definitions for this exact type or the source's wildcard, in priority order."""
        # A StrEnum member hashes and compares as its text: no `.value` lookup per event.
        key = (source, event_type)
        if key not in self._groups:
            key = (source, WILDCARD)
        cached = self._candidates.get(key)
        if cached is None:
            exact = self._groups.get(key, [])
            wildcard = self._groups.get((source, WILDCARD), []) if key[1] != WILDCARD else []
            cached = tuple(sorted([*exact, *wildcard], key=lambda t: t.sort_key))
            self._candidates[key] = cached
        return cached

    def matching(self, source: Source, event_type: str, fields: Mapping[str, Any]) -> tuple[CompiledTrigger, ...]:
        """The candidates whose filters pass for `fields`, in priority order. With many
        definitions of one type told apart by a filter, only those that name the event's
        value are checked: the cost follows the matches, not the definitions."""
        key = (source, event_type)
        prefiltered = self._prefiltered.get(key)
        if prefiltered is None:
            candidates = self.candidates(source, event_type)
            if not candidates:
                return ()
            prefiltered = self._prefiltered[key] = _Prefiltered(candidates)
        return tuple(t for t in prefiltered.possible(fields) if t.passes_filters(fields))


    def timed(self, source: Source, event_type: str) -> TimedInterest | None:
        """What an event of this type means for the timed features: the aggregates it may
        count in, whether it may cancel pending firings, whether a candidate reads aggregates."""
        key = (source, event_type)
        if key in self._timed:
            return self._timed[key]
        enabled = [t for t in self._by_id.values() if t.definition.enabled]
        aggregates = {a.id: a for t in enabled for a in t.aggregates
                      if a.source is source and a.event_type in (event_type, WILDCARD)}
        # A pending firing of a since-disabled trigger is dropped when due, not cancelled.
        may_cancel = any(rule.source is source and rule.event_type in (event_type, WILDCARD)
                         for t in self._by_id.values() for rule in t.cancel_on)
        reads_aggregates = any(t.aggregates for t in self.candidates(source, event_type))
        interest = (TimedInterest(tuple(aggregates.values()), may_cancel, reads_aggregates)
                    if aggregates or may_cancel or reads_aggregates else None)
        if len(self._timed) < _MAX_CACHED_TYPES:  # events of arbitrary types cannot grow it
            self._timed[key] = interest
        return interest


_MAX_CACHED_TYPES = 10_000


@dataclass(frozen=True)
class TimedInterest:
    aggregates: tuple[CompiledAggregate, ...]  # that an event of the type may count in (filters aside)
    may_cancel: bool
    reads_aggregates: bool  # some candidate trigger has aggregates


class _Prefiltered:
    """Candidates of one (source, eventType) indexed by the value one field must have.

    The field is the one most candidates filter on with plain values (text, numbers,
    booleans, null, or lists of them). A candidate is left out for an event only when its
    filter on that field cannot pass, so the full filter check afterwards decides as before.
    """

    def __init__(self, candidates: tuple[CompiledTrigger, ...]) -> None:
        self.all = candidates
        usable = Counter(name for t in candidates for name, expected in t.definition.filters.items()
                         if _plain_options(expected) is not None)
        self.field: str | None = None
        if len(candidates) < 4 or not usable:
            return  # a scan is as cheap
        self.field = usable.most_common(1)[0][0]
        unindexed: list[CompiledTrigger] = []
        indexed: dict[Any, list[CompiledTrigger]] = {}
        for trigger in candidates:
            options = _plain_options(trigger.definition.filters.get(self.field, _UNSET))
            if options is None:
                unindexed.append(trigger)
            else:
                for option in options:
                    bucket = indexed.setdefault(_index_key(option), [])
                    if trigger not in bucket:
                        bucket.append(trigger)
        self.unindexed = tuple(unindexed)
        self.by_value = {value: tuple(sorted([*triggers, *unindexed], key=lambda t: t.sort_key))
                         for value, triggers in indexed.items()}

    def possible(self, fields: Mapping[str, Any]) -> tuple[CompiledTrigger, ...]:
        if self.field is None:
            return self.all
        actual = fields.get(self.field, _UNSET)
        if actual is _UNSET:
            return self.unindexed
        try:
            return self.by_value.get(_index_key(actual), self.unindexed)
        except TypeError:  # a list or an object: equal to no plain value
            return self.unindexed


_UNSET = object()


def _plain_options(expected: Any) -> list[Any] | None:
    options = expected if isinstance(expected, list) else [expected]
    if expected is _UNSET or not all(isinstance(o, str | int | float | bool) or o is None for o in options):
        return None
    return options


def _index_key(value: Any) -> Any:
    # A filter's `true` matches only `true`, never 1 (which Python's dict would equate).
    return ("bool", value) if isinstance(value, bool) else value
