"""The path of an event when some trigger has a delay, cancelOn or aggregates: fire what is
due first, count the event in its aggregates, cancel what it cancels, then decide as usual —
with `agg.<name>` in scope — and schedule the delayed matches. (Without such triggers, events
take the plain path in app/intake/sources.py and none of this costs anything.)"""

from __future__ import annotations

from faust.types import TP

from app.domain.models import Event
from app.domain.positions import Position
from app.domain.timers import to_millis
from app.evaluation.evaluator import Evaluator
from app.experiments.tracker import ConversionTracker
from app.registry.catalogs import TriggerCatalog
from app.state.aggregates import AggregateStore, values_at
from app.timers.service import Timers


class TimedEvaluation:
    def __init__(self, triggers: TriggerCatalog, evaluator: Evaluator, aggregates: AggregateStore,
                 timers: Timers, conversions: ConversionTracker | None = None) -> None:
        self.triggers = triggers
        self.conversions = conversions
        self.evaluator = evaluator
        self.aggregates = aggregates
        self.timers = timers

    @property
    def active(self) -> bool:
        """Whether events must take this path: a timed trigger exists, or firings are pending."""
        return self.triggers.index.any_timed or bool(self.timers.store.pending)

    async def handle(self, tp: TP, event: Event, position: Position | None) -> None:
        event_ms = to_millis(event.timestamp)
        async with self.timers.lock(tp.partition):
            await self.timers.advance(tp, event_ms)
            # After the firings due by now: a conversion event sees the windows they open.
            if self.conversions is not None and self.conversions.wants(event):
                await self.conversions.on_event(event)
            await self._handle(tp, event, event_ms, position)

    async def _handle(self, tp: TP, event: Event, event_ms: int, position: Position | None) -> None:
        index = self.triggers.index
        interest = index.timed(event.source, event.type)
        values = None
        # Read again after a crash, a record must not cancel or schedule twice (its decision
        # is made again, and its firings carry the same firingIds, as for any event).
        replayed = index.any_delayed and self.timers.already_applied(event.customer_id, position)
        if interest is not None:
            event_json = event.as_json()
            if interest.aggregates or interest.reads_aggregates:
                state = self.aggregates.update(event, event_json, event_ms, position, interest.aggregates,
                                               index.aggregate_ids)
                values = values_at(state, event_ms)
            if interest.may_cancel and not replayed:
                await self.timers.cancel(event, event_json, event_ms, position)
        result = self.evaluator.evaluate_now(event, values)
        if result is None:
            return
        await self.evaluator.apply(event, result)
        if result.scheduled and not replayed:
            await self.timers.schedule(tp.partition, event.customer_id, result.scheduled, position)
