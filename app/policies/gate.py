"""The gate every firing passes before its action is emitted: contact policies and trigger
limits (app/domain/policies.py), counted per customer in the `contacts` table, which lives in
the customer's partition like all their state — one writer per customer, whatever the number
of workers, and moved with the partition in a rebalance."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from app.domain import policies
from app.domain.definitions import CompiledTrigger
from app.domain.encoding import encode
from app.domain.models import ActionCommand, TriggerLimit
from app.domain.timers import PendingFiring, millis_iso, to_millis
from app.kafka.partitioner import partition_for
from app.kafka.publisher import Publisher
from app.metrics import Metrics
from app.registry.catalogs import Catalogs
from app.state.rows import RowStore
from app.state.tables import Table, stored
from app.timers.pending import PendingFirings
from app.topics import Topics

log = logging.getLogger(__name__)


class ContactGate:
    def __init__(self, topics: Topics, catalogs: Catalogs, contacts: Table, pending: PendingFirings,
                 row_store: RowStore, publisher: Publisher, metrics: Metrics, partitions: int,
                 clock: Callable[[], datetime]) -> None:
        self.topics = topics
        self.triggers = catalogs.triggers
        self.policies = catalogs.policies
        self.contacts = contacts
        self.pending = pending
        self.row_store = row_store
        self.publisher = publisher
        self.metrics = metrics
        self.partitions = partitions
        self.clock = clock
        self.counters: Counter[str] = Counter()

    @property
    def active(self) -> bool:
        return bool(self.policies.enabled) or self.triggers.index.any_limited

    async def admit(self, customer_id: str, commands: list[ActionCommand], at_ms: int) -> policies.Admission:
        """Which firings may be performed (in order); the others are published as
        suppressed, or held as pending firings until quiet hours end."""
        limits: dict[str, TriggerLimit] = {}
        for command in commands:
            trigger = self.triggers.get(command.trigger_id)
            if trigger is not None and trigger.definition.limit is not None:
                limits[command.trigger_id] = trigger.definition.limit
        enabled = self.policies.enabled
        customer = (self.row_store.customer(customer_id)
                    if any(policy.definition.quiet_hours for policy in enabled) else None)
        admission = policies.admit(commands, enabled, limits, stored(self.contacts, customer_id), at_ms, customer)
        if admission.contacts is not None:
            self.contacts[customer_id] = admission.contacts
        for command, reason, policy_id in admission.suppressed:
            await self._suppressed(command, reason, policy_id)
        for command, due_ms, policy_id in admission.deferred:
            self.counters["deferred"] += 1
            held = PendingFiring(command.firing_id, command.trigger_id, command.customer_id, command.event_id,
                                 due_ms, command.event, shadow=command.shadow)
            await self.pending.schedule(partition_for(customer_id, self.partitions), customer_id, [held], None,
                                        reason=f"quiet_hours: policy {policy_id} until {millis_iso(due_ms)}")
        return admission

    def explain(self, trigger: CompiledTrigger, customer_id: str, customer: dict[str, Any] | None,
                now: datetime) -> dict[str, Any]:
        """The policies and limit a firing of `trigger` would meet now (nothing counted)."""
        definition = trigger.definition
        return policies.explain_policies(str(trigger.command_action["type"]), definition.priority, trigger.id,
                                         self.policies.enabled, definition.limit,
                                         stored(self.contacts, customer_id), to_millis(now), customer,
                                         trigger.shadow)

    async def _suppressed(self, command: ActionCommand, reason: str, policy_id: str | None) -> None:
        record: dict[str, Any] = {
            "firingId": command.firing_id, "triggerId": command.trigger_id, "customerId": command.customer_id,
            "eventId": command.event_id, "reason": reason, "policyId": policy_id, "at": self.clock().isoformat()}
        if command.definition_version is not None:  # as on the firing it stopped
            record["definitionVersion"] = command.definition_version
        if command.shadow:  # what a policy would have done to it: counted apart, marked
            record["shadow"] = True
            self.counters[f"shadow_suppressed_{reason}"] += 1
        else:
            self.counters[f"suppressed_{reason}"] += 1
            self.metrics.suppressed.labels(reason).inc()
        await self.publisher.send(self.topics.suppressed, command.customer_id, encode(record))
