"""Evaluating one event: candidates, the engine's decision with the row read on demand, then
cooldown marks stored and each firing emitted as its action command and its firing record
(a shadow trigger's firing as its record on `triggers.shadow` only, a held-out firing of an
experiment on `triggers.holdout` only)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from functools import partial

from app.domain.cooldown import CooldownMark, effective_time
from app.domain.deadletters import MAX_RECORD_BYTES, action_dead_letter
from app.domain.encoding import encode
from app.domain.engine import AggregateValues, Evaluation, evaluate
from app.domain.models import ActionCommand, Event, Source
from app.domain.shadow import state_id
from app.domain.timers import to_millis
from app.experiments.tracker import ConversionTracker
from app.kafka.publisher import Publisher
from app.metrics import Metrics
from app.policies.gate import ContactGate
from app.registry.catalogs import TriggerCatalog
from app.state.rows import RowStore
from app.state.tables import Table, cooldown_key, stored
from app.topics import Topics

log = logging.getLogger(__name__)

_EVENTS_COUNTER = {source: f"events.{source.value}" for source in Source}


class Evaluator:
    """Decides for events (intake's) and applies decisions (intake's and scheduled ticks')."""

    def __init__(self, topics: Topics, triggers: TriggerCatalog, publisher: Publisher, row_store: RowStore,
                 cooldowns: Table, metrics: Metrics, clock: Callable[[], datetime],
                 gate: ContactGate | None = None, experiments: ConversionTracker | None = None) -> None:
        self.topics = topics
        self.triggers = triggers
        self.publisher = publisher
        self.row_store = row_store
        self.cooldowns = cooldowns
        self.metrics = metrics
        self.clock = clock
        self.gate = gate
        self.experiments = experiments
        self.counters: Counter[str] = Counter()

    async def evaluate(self, event: Event) -> None:
        result = self.evaluate_now(event)
        if result is not None:
            await self.apply(event, result)

    def evaluate_now(self, event: Event, aggregates: AggregateValues | None = None) -> Evaluation | None:
        """The decision for one event, without I/O; None when it leaves nothing to write."""
        self.counters[_EVENTS_COUNTER[event.source]] += 1
        self.metrics.events_in.inc(event.source)
        index = self.triggers.index
        if not index.candidates(event.source, event.type):
            return None  # most events match no trigger: skip the state reads entirely
        started = time.perf_counter()
        result = evaluate(index, event, partial(self.row_store.customer, event.customer_id),
                          lambda trigger_id: self.cooldown(trigger_id, event.customer_id), self.clock(), aggregates)
        self.metrics.evaluation_seconds.observe(time.perf_counter() - started)
        if result.budget_exhausted:  # its skipped triggers are condition errors too
            self.counters["evaluation_budget_exhausted"] += 1
        if result.firings or result.condition_errors or result.cooled_down or result.scheduled:
            return result
        return None

    def cooldown(self, trigger_id: str, customer_id: str) -> CooldownMark | None:
        mark = stored(self.cooldowns, cooldown_key(trigger_id, customer_id))
        return CooldownMark.from_json(mark) if mark else None

    async def apply(self, event: Event, result: Evaluation) -> None:
        await self.apply_for(event.customer_id, event.id, result, effective_time(event.timestamp, self.clock()))

    async def apply_for(self, customer_id: str, event_id: str, result: Evaluation, at: datetime) -> None:
        """Pass the firings through the contact gate (policies and limits, counted at `at`:
        the event's time, or a delayed firing's due time), store the cooldown marks of those
        that pass, then emit them in order. A firing too large to produce is refused first,
        so its cooldown is not stored either. (Scheduled firings are the timers' to store:
        app/evaluation/timed.py.)"""
        self._count(event_id, result)
        if result.firings and self.gate is not None and self.gate.active:
            await self._admit(customer_id, result, at)
        firings: list[tuple[ActionCommand, bytes]] = []
        refused: set[str] = set()
        for command in result.firings:
            value = encode(command.to_json())
            if len(value) + len(command.customer_id) > MAX_RECORD_BYTES:
                refused.add(state_id(command.trigger_id, command.shadow))
                await self._refuse_firing(command, len(value))
            else:
                firings.append((command, value))
        for trigger_state_id, mark in result.cooldown_marks.items():  # a shadow trigger's under its own id
            if trigger_state_id not in refused:
                self.cooldowns[cooldown_key(trigger_state_id, customer_id)] = mark.to_json()
        if self.experiments is not None:  # conversion windows, stored like the marks before the output
            self.experiments.opened(customer_id, [command for command, _ in firings], at)
        for command, value in firings:
            await self._emit(command, value)

    async def _admit(self, customer_id: str, result: Evaluation, at: datetime) -> None:
        assert self.gate is not None
        admission = await self.gate.admit(customer_id, result.firings, to_millis(at))
        if len(admission.admitted) != len(result.firings):  # no action and no cooldown for the others
            kept = {state_id(command.trigger_id, command.shadow) for command in admission.admitted}
            result.firings = admission.admitted
            result.cooldown_marks = {tid: mark for tid, mark in result.cooldown_marks.items() if tid in kept}
            result.held = [command.firing_id for command, _, _ in admission.deferred]
            result.suppressed = [(command.firing_id, reason) for command, reason, _ in admission.suppressed]

    def _count(self, event_id: str, result: Evaluation) -> None:
        for trigger_id, error in result.condition_errors:
            self.counters["condition_errors"] += 1
            self.metrics.condition_errors.labels(trigger_id).inc()
            log.debug("condition error", extra={"triggerId": trigger_id, "eventId": event_id, "error": error})
        self.counters["cooled_down"] += len(result.cooled_down)

    async def _refuse_firing(self, command: ActionCommand, size: int) -> None:
        reason = f"firing is {size} bytes, more than the {MAX_RECORD_BYTES}-byte record limit"
        self.counters["firings_refused"] += 1
        self.metrics.dead_letters.labels(self.topics.actions_deadletter, "firing_too_large").inc()
        log.warning("firing refused", extra={"triggerId": command.trigger_id, "firingId": command.firing_id,
                                             "reason": reason})
        await self.publisher.send(self.topics.actions_deadletter, command.customer_id, action_dead_letter(
            command.action_type, reason, self.clock().isoformat(), [], command.to_json(), None))

    async def _emit(self, command: ActionCommand, value: bytes) -> None:
        """The action command first, then its record on `triggers.firings`; a shadow
        firing only on `triggers.shadow`, a held-out one only on `triggers.holdout`."""
        if command.shadow:
            await self._emit_shadow(command, value)
            return
        if command.held_out:
            await self.publisher.send(self.topics.holdout, command.customer_id, value)
            self.counters["holdout_firings"] += 1
            log.debug("held-out firing", extra={"triggerId": command.trigger_id, "customerId": command.customer_id,
                                                "firingId": command.firing_id})
            return
        await self.publisher.send(self.topics.action(command.action_type), command.customer_id, value)
        await self.publisher.send(self.topics.firings, command.customer_id, value)
        self.counters["firings"] += 1
        self.metrics.firings.labels(command.trigger_id, command.action_type).inc()
        log.debug("trigger fired", extra={"triggerId": command.trigger_id, "customerId": command.customer_id,
                                         "firingId": command.firing_id, "action": command.action_type})

    async def _emit_shadow(self, command: ActionCommand, value: bytes) -> None:
        await self.publisher.send(self.topics.shadow, command.customer_id, value)
        self.counters["shadow_firings"] += 1
        self.metrics.shadow_firings.labels(command.trigger_id, command.action_type).inc()
        log.debug("shadow trigger fired", extra={"triggerId": command.trigger_id, "customerId": command.customer_id,
                                                "firingId": command.firing_id, "action": command.action_type})
