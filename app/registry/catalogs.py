"""Every worker's own copy of the definitions, by kind: compiled, indexed, and why rejected."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from app.domain.decisions import CompiledDecisionFlow
from app.domain.definitions import (
    CompiledTrigger,
    compile_decision_flow,
    compile_definition,
    compile_journey,
    compile_policy_definition,
    compile_schema_table,
)
from app.domain.journeys import JourneyDefinition
from app.domain.matching import DefinitionIndex
from app.domain.policies import CompiledPolicy
from app.domain.schema import CUSTOMERS, DEFAULT_CUSTOMERS, SchemaTable
from app.domain.versions import UNKNOWN_ACTOR, DefinitionVersion
from app.errors import InvalidDefinition
from app.topics import Topics

log = logging.getLogger(__name__)

T = TypeVar("T")

class Catalog(Generic[T]):
    """Definitions of one kind by id, as the latest record per id on their topic says.

    An invalid value removes the id's previous version: the compacted topic keeps only the
    latest value per id, so keeping an older one would make a worker that started before
    the bad write disagree with one started after it.
    """

    def __init__(self, kind: str, compile: Callable[[bytes, str], T]) -> None:
        self.kind = kind
        self._compile = _rejecting_the_unexpected(compile)
        self.items: dict[str, T] = {}
        self.rejected: dict[str, list[str]] = {}
        # When each current version was published (the record's timestamp), if known.
        self.published_at: dict[str, datetime] = {}
        # The current version of each valid definition: its record's offset, time and actor.
        self.versions: dict[str, DefinitionVersion] = {}
        # The value last applied per id, and its errors (None: valid): what `validate` asks
        # about has usually just been applied here, and compiling costs a millisecond.
        self._applied: dict[str, tuple[bytes, list[str] | None]] = {}

    def validate(self, value: bytes, key: str) -> T | None:
        """The compiled definition (None if known valid but since replaced), or
        InvalidDefinition; changes nothing."""
        applied = self._applied.get(key)
        if applied is not None and applied[0] == value:
            if applied[1] is not None:
                raise InvalidDefinition(key, applied[1])
            return self.items.get(key)
        return self._compile(value, key)

    def get(self, item_id: str) -> T | None:
        return self.items.get(item_id)

    def apply(self, key: str, value: bytes | None, published_at: datetime | None = None,
              version: int | None = None, actor: str = UNKNOWN_ACTOR) -> None:
        """`version`: the record's offset on its topic (None when not read from a topic)."""
        if published_at is not None:
            self.published_at[key] = published_at
        self.versions.pop(key, None)  # a deletion or rejection has no current version
        if value is None:
            self._remove(key)
            self.rejected.pop(key, None)
            self._applied.pop(key, None)
            log.info("definition deleted", extra={"kind": self.kind, "id": key})
            return
        try:
            item = self._compile(value, key)
        except InvalidDefinition as exc:
            self._remove(key)
            self.rejected[key] = exc.errors
            self._applied[key] = (value, exc.errors)
            log.warning("definition rejected", extra={"kind": self.kind, "id": key, "errors": exc.errors})
            return
        if version is not None:
            item = self._versioned(item, version)
            self.versions[key] = DefinitionVersion(version, published_at or datetime.now(UTC), actor)
        self._put(key, item)
        self.rejected.pop(key, None)
        self._applied[key] = (value, None)
        log.info("definition applied", extra={"kind": self.kind, "id": key})

    def _versioned(self, item: T, version: int) -> T:
        """The compiled item knowing its version (only triggers do: their firings carry it)."""
        return item

    def _put(self, key: str, item: T) -> None:
        self.items[key] = item

    def _remove(self, key: str) -> None:
        self.items.pop(key, None)


def _rejecting_the_unexpected(compile: Callable[[bytes, str], T]) -> Callable[[bytes, str], T]:
    """`compile`, with any error but InvalidDefinition turned into one: a definition that
    trips a bug in validation is rejected and reported like any invalid one, instead of
    stopping the reader that every worker's definitions come through."""
    def checked(value: bytes, key: str) -> T:
        try:
            return compile(value, key)
        except InvalidDefinition:
            raise
        except Exception as exc:  # noqa: BLE001 - reported on triggers.errors with the reason
            log.exception("definition validation failed unexpectedly", extra={"id": key[:256]})
            raise InvalidDefinition(key, [f"could not be validated: {type(exc).__name__}: {exc}"[:1000]]) from exc
    return checked


class TriggerCatalog(Catalog[CompiledTrigger]):
    """Triggers, also indexed by (source, eventType) for matching."""

    def __init__(self) -> None:
        super().__init__("trigger", lambda value, key: compile_definition(value, key=key))
        self.index = DefinitionIndex()

    def _versioned(self, item: CompiledTrigger, version: int) -> CompiledTrigger:
        return replace(item, version=version)

    def _put(self, key: str, item: CompiledTrigger) -> None:
        super()._put(key, item)
        self.index.put(item)

    def _remove(self, key: str) -> None:
        super()._remove(key)
        self.index.remove(key)


class TableCatalog(Catalog[SchemaTable]):
    def __init__(self) -> None:
        super().__init__("schema_table", compile_schema_table)

    def table(self, name: str) -> SchemaTable | None:
        found = self.items.get(name)
        return found if found is not None or name != CUSTOMERS else DEFAULT_CUSTOMERS


class PolicyCatalog(Catalog[CompiledPolicy]):
    """Contact policies; `enabled` lists those in force, in id order."""

    def __init__(self) -> None:
        super().__init__("policy", compile_policy_definition)
        self.enabled: list[CompiledPolicy] = []

    def _put(self, key: str, item: CompiledPolicy) -> None:
        super()._put(key, item)
        self._changed()

    def _remove(self, key: str) -> None:
        super()._remove(key)
        self._changed()

    def _changed(self) -> None:
        self.enabled = [policy for _, policy in sorted(self.items.items()) if policy.definition.enabled]


def journey_catalog() -> Catalog[JourneyDefinition]:
    return Catalog("journey", compile_journey)


def decision_flow_catalog() -> Catalog[CompiledDecisionFlow]:
    return Catalog("decision_flow", compile_decision_flow)


class Catalogs:
    """All kinds of definitions a worker knows, and the topic each comes from."""

    def __init__(self, topics: Topics) -> None:
        self.triggers = TriggerCatalog()
        self.journeys = journey_catalog()
        self.decision_flows = decision_flow_catalog()
        self.tables = TableCatalog()
        self.policies = PolicyCatalog()
        self.by_topic: dict[str, Catalog[Any]] = {
            topics.definitions: self.triggers,
            topics.journey_definitions: self.journeys,
            topics.decision_flow_definitions: self.decision_flows,
            topics.table_definitions: self.tables,
            topics.policy_definitions: self.policies,
        }
