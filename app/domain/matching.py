"""Which definitions an event can match: an index by (source, eventType)."""

from __future__ import annotations

from collections.abc import Iterable

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
        self._candidates.clear()

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
        self._candidates.clear()

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
