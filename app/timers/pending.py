"""Adding pending firings to the timers table, and their records on `triggers.pending`: for
delayed triggers (app/evaluation/timed.py) and for firings held until quiet hours end
(app/policies/gate.py)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from app.domain import timers
from app.domain.deadletters import MAX_RECORD_BYTES
from app.domain.encoding import encode
from app.domain.positions import Position
from app.domain.timers import PendingFiring
from app.kafka.publisher import Publisher
from app.metrics import Metrics
from app.registry.catalogs import TriggerCatalog
from app.timers.store import TimerStore
from app.topics import Topics


class PendingFirings:
    def __init__(self, topics: Topics, triggers: TriggerCatalog, store: TimerStore, publisher: Publisher,
                 metrics: Metrics, clock: Callable[[], datetime]) -> None:
        self.topics = topics
        self.triggers = triggers
        self.store = store
        self.publisher = publisher
        self.metrics = metrics
        self.clock = clock
        self.counters: Counter[str] = Counter()

    async def schedule(self, partition: int, customer_id: str, firings: list[PendingFiring],
                       position: Position | None, reason: str | None = None) -> None:
        before = self.store.record(customer_id)
        record, scheduled, dropped, cancelled = timers.schedule(
            before, firings, position, timers.cancelled_earlier(before, self.cancel_rules))
        if len(encode(record)) + len(customer_id) > MAX_RECORD_BYTES:
            # Its changelog record could not be produced: the new firings are dropped instead.
            for firing in scheduled:
                await self.publish(firing, "dropped", "the customer's pending firings would exceed the "
                                                      f"{MAX_RECORD_BYTES}-byte record limit")
            return
        self.store.write(customer_id, record)
        self.store.index(partition, scheduled)
        for firing in scheduled:
            await self.publish(firing, "scheduled", reason)
        for firing in dropped:
            await self.publish(firing, "dropped", f"more than {timers.MAX_PENDING_PER_CUSTOMER} pending "
                                                  "firings for this customer")
        for firing, canceller in cancelled:  # a cancel event read before the event it cancels
            # Its records read as any cancelled firing's do: scheduled first (contract.md 11.7).
            await self.publish(firing, "scheduled", reason)
            await self.publish(firing, "cancelled", cancel_reason(canceller))

    def cancel_rules(self, trigger_id: str) -> tuple[Any, ...]:
        trigger = self.triggers.get(trigger_id)
        return trigger.cancel_on if trigger is not None else ()

    async def publish(self, firing: PendingFiring, status: str, reason: str | None = None) -> None:
        self.counters[f"pending_{status}"] += 1
        self.metrics.pending_firings.labels(status).inc()
        await self.publisher.send(self.topics.pending, firing.customer_id,
                                  encode(firing.status(status, self.clock(), reason)))


def cancel_reason(event_json: Mapping[str, Any]) -> str:
    return f"{event_json.get('type')} event {event_json.get('id')} before the due time"
