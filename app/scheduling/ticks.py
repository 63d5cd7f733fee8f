"""A tick for one partition: the scheduled trigger evaluated for every customer whose row lives
in that partition, so with any number of workers each customer is visited once per tick."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from functools import partial
from typing import Any

from faust.types import Message

from app.domain.engine import evaluate_scheduled
from app.domain.internal_records import read_tick
from app.domain.models import Source
from app.domain.schema import CUSTOMERS
from app.errors import MalformedEvent
from app.evaluation.evaluator import Evaluator
from app.kafka.partitioner import partition_for
from app.kafka.publisher import Publisher
from app.registry.catalogs import TriggerCatalog
from app.state.tables import Table

log = logging.getLogger(__name__)

# Walking the local store yields to the event loop once per this many rows.
_ROWS_PER_YIELD = 500


class ScheduledTicks:
    def __init__(self, partitions: int, triggers: TriggerCatalog, evaluator: Evaluator, rows: Table,
                 ticks_done: Table, publisher: Publisher) -> None:
        self.partitions = partitions
        self.triggers = triggers
        self.evaluator = evaluator
        self.rows = rows
        self.ticks_done = ticks_done  # "<trigger id>|<partition>" -> the last tick run there
        self.publisher = publisher

    async def on_tick(self, message: Message) -> None:
        try:
            tick = read_tick(message.value)
        except MalformedEvent as exc:
            await self.publisher.dead_letter(message, exc.reason)
            return
        trigger = self.triggers.get(tick.trigger_id)
        done_key = f"{tick.trigger_id}|{message.partition}"
        last = self.ticks_done.get(done_key)
        if trigger is None or trigger.definition.source is not Source.SCHEDULED or (
                last is not None and datetime.fromisoformat(last) >= tick.scheduled_at):
            return  # deleted or changed meanwhile, or this tick already ran (a re-published tick)
        visited = 0
        async for customer_id, row in self._customers_in(message.partition):
            event = tick.event_for(customer_id)
            result = evaluate_scheduled(trigger, event, row, partial(self.evaluator.cooldown, customer_id=customer_id),
                                        self.evaluator.clock())
            await self.evaluator.apply(event, result)
            visited += 1
        self.ticks_done[done_key] = tick.scheduled_at.isoformat()
        log.info("schedule tick ran", extra={"triggerId": trigger.id, "scheduledAt": tick.scheduled_at.isoformat(),
                                             "partition": message.partition, "customers": visited})

    async def _customers_in(self, partition: int) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Each `customers` row of the partition. The local store is walked lazily, yielding now
        and then, so a large audience neither loads into memory at once nor starves events."""
        prefix = f"{CUSTOMERS}|"
        for scanned, (key, row) in enumerate(self.rows.items(), start=1):
            if scanned % _ROWS_PER_YIELD == 0:
                await asyncio.sleep(0)
            if key.startswith(prefix):
                customer_id = key[len(prefix):]
                if partition_for(customer_id, self.partitions) == partition:
                    yield customer_id, row
