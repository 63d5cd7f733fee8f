"""Pending firings: scheduled and cancelled as events are handled, fired when their
partition's time (app/timers/event_time.py) reaches their due time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import Any

from faust.types import TP

from app.domain import timers
from app.domain.engine import evaluate_due
from app.domain.models import Event
from app.domain.positions import Position, already_applied
from app.domain.timers import PendingFiring, to_millis
from app.evaluation.evaluator import Evaluator
from app.kafka.consumer import table_partition
from app.metrics import Metrics
from app.registry.catalogs import TriggerCatalog
from app.state.aggregates import AggregateStore, values_at
from app.state.rows import RowStore
from app.timers.event_time import EventTime
from app.timers.pending import PendingFirings, cancel_reason
from app.topics import Topics

log = logging.getLogger(__name__)


class Timers:
    def __init__(self, topics: Topics, triggers: TriggerCatalog, pending: PendingFirings, event_time: EventTime,
                 evaluator: Evaluator, row_store: RowStore, aggregates: AggregateStore, metrics: Metrics,
                 clock: Callable[[], datetime]) -> None:
        self.topics = topics
        self.triggers = triggers
        self.pending = pending
        self.store = pending.store
        self.event_time = event_time
        self.evaluator = evaluator
        self.row_store = row_store
        self.aggregates = aggregates
        self.metrics = metrics
        self.clock = clock
        self.locks: dict[int, asyncio.Lock] = {}
        self.counters = pending.counters

    def lock(self, partition: int) -> asyncio.Lock:
        """Held while a partition's events or due firings are handled: one at a time, so a
        firing is decided once and a cancel never races its firing."""
        lock = self.locks.get(partition)
        if lock is None:
            lock = self.locks[partition] = asyncio.Lock()
        return lock

    # -- as events are handled ---------------------------------------------------------------

    async def advance(self, tp: TP, event_ms: int) -> None:
        """Before an event of `tp` is handled: fire what is due by the partition's time."""
        newest = self.event_time.observe(tp, event_ms)
        next_due = self.store.next_due(tp.partition)
        if next_due is not None and next_due <= newest:
            until = self.event_time.time(tp.partition, to_millis(self.clock()), reading=tp)
            if next_due <= until:
                await self.fire_due(tp.partition, until)

    def already_applied(self, customer_id: str, position: Position | None) -> bool:
        return already_applied(self.store.record(customer_id), position)

    async def schedule(self, partition: int, customer_id: str, firings: list[PendingFiring],
                       position: Position | None) -> None:
        await self.pending.schedule(partition, customer_id, firings, position)

    async def cancel(self, event: Event, event_json: dict[str, Any], event_ms: int,
                     position: Position | None) -> None:
        """Cancel the customer's pending firings this event cancels, and remember it for
        firings scheduled later by an earlier event (read after it: another topic, or out of
        order), so that what is cancelled does not depend on the order events are read in."""
        check = timers.cancels_pending(event_json, event_ms, self.pending.cancel_rules)
        record, cancelled = timers.cancel(self.store.record(event.customer_id), event.customer_id, check, position)
        index = self.triggers.index
        self.store.write(event.customer_id, timers.remember_cancel(
            record, event_json, event_ms, index.cancel_fields, index.cancel_horizon_ms, position))
        for firing in cancelled:
            await self._publish(firing, "cancelled", cancel_reason(event_json))

    # -- when due ------------------------------------------------------------------------------

    async def fire_due(self, partition: int, until_ms: int) -> None:
        for customer_id in self.store.pop_due(partition, until_ms):
            await self._fire_customer(customer_id, until_ms)

    async def fire_due_now(self, partition: int, now_ms: int) -> None:
        """The clock's pass over one partition (see Timers.tick in app/wiring.py)."""
        next_due = self.store.next_due(partition)
        if next_due is None or next_due > now_ms:
            return
        until = self.event_time.time(partition, now_ms)
        if next_due > until:
            return
        async with self.lock(partition):
            with table_partition(TP(self.topics.streaming, partition)):
                await self.fire_due(partition, until)

    async def _fire_customer(self, customer_id: str, until_ms: int) -> None:
        due = timers.due(self.store.record(customer_id), customer_id, until_ms)
        if not due:
            return  # fired or cancelled already: a stale index entry
        # Firings due together (held to the same quiet-hours end) are decided by priority, as
        # one event's firings are: the higher one spends the allowance first.
        due.sort(key=lambda firing: (firing.due_ms, *self._rank(firing.trigger_id), firing.firing_id))
        decided = {firing.firing_id for firing in due if await self._fire(firing)}
        # Removed only once performed: a crash before this fires them again, with the same
        # firingIds, which every sink recognises. A firing held until quiet hours end stays.
        remaining = timers.without(self.store.record(customer_id), decided)
        if remaining is not None:
            self.store.write(customer_id, remaining)

    def _rank(self, trigger_id: str) -> tuple[int, str]:
        trigger = self.triggers.get(trigger_id)
        return trigger.sort_key if trigger is not None else (0, trigger_id)

    async def _fire(self, firing: PendingFiring) -> bool:
        """Decide a due firing; False when it stays pending (held until quiet hours end)."""
        trigger = self.triggers.get(firing.trigger_id)
        if trigger is None or not trigger.definition.enabled:
            await self._publish(firing, "dropped", "trigger deleted" if trigger is None else "trigger disabled")
            return True
        if trigger.shadow and not firing.shadow:  # scheduled live, the trigger is shadow now: performs nothing
            firing = replace(firing, shadow=True)
        now = self.clock()
        # In a backlog the due time passed long ago: lateness then says how far behind the backlog is.
        self.metrics.timer_lateness_seconds.observe(max(0.0, to_millis(now) - firing.due_ms) / 1000)
        state = self.aggregates.state(firing.customer_id) if trigger.aggregates else {}
        result = evaluate_due(trigger, firing, partial(self.row_store.customer, firing.customer_id),
                              lambda trigger_id: self.evaluator.cooldown(trigger_id, firing.customer_id), now,
                              values_at(state, firing.due_ms))
        due_at = datetime.fromtimestamp(firing.due_ms / 1000, tz=now.tzinfo)
        await self.evaluator.apply_for(firing.customer_id, firing.event_id, result, min(due_at, now))
        if firing.firing_id in result.held:
            return False  # the gate published it as scheduled again, due when quiet hours end
        if result.firings:
            self.counters["delayed_fired"] += 1
            await self._publish(firing, "fired")
        elif result.suppressed:
            await self._publish(firing, "dropped", f"suppressed: {result.suppressed[0][1]}")
        elif result.cooled_down:
            await self._publish(firing, "dropped", "cooldown")
        elif result.condition_errors:
            await self._publish(firing, "dropped", f"condition error: {result.condition_errors[0][1]}"[:500])
        else:
            await self._publish(firing, "dropped", "conditions no longer hold")
        return True

    async def _publish(self, firing: PendingFiring, status: str, reason: str | None = None) -> None:
        await self.pending.publish(firing, status, reason)
