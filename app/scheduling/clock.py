"""The leader's clock for scheduled triggers: publishes each due tick once to every partition."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from faust.types import TopicT

from app.domain.internal_records import Tick
from app.domain.models import Source
from app.domain.schedules import tick_to_run
from app.registry.catalogs import TriggerCatalog

log = logging.getLogger(__name__)


class ScheduleClock:
    """Runs on the group leader only. Its memory of what it checked is lost with leadership;
    a new leader looks back the catch-up window, and a tick published twice is ignored by
    the partitions that already ran it (see app/scheduling/ticks.py)."""

    def __init__(self, triggers: TriggerCatalog, channel: TopicT, partitions: int, catch_up: timedelta,
                 clock: Callable[[], datetime]) -> None:
        self.triggers = triggers
        self.channel = channel  # the ticks topic
        self.partitions = partitions
        self.catch_up = catch_up
        self.clock = clock
        self.checked_until: dict[str, datetime] = {}
        self._first_pass = True

    async def publish_due_ticks(self) -> None:
        now = self.clock()
        # Forget triggers that were deleted or changed away, so a re-created one starts fresh.
        self.checked_until = {tid: at for tid, at in self.checked_until.items() if tid in self.triggers.items}
        for trigger in list(self.triggers.items.values()):
            definition = trigger.definition
            if definition.source is not Source.SCHEDULED or not definition.enabled or definition.schedule is None:
                continue
            # On this leader's first pass, look back for missed ticks; a trigger that appears
            # later is new and starts from now (it must not fire for a tick before it existed).
            since = self.checked_until.get(trigger.id, None if self._first_pass else now)
            published = self.triggers.published_at.get(trigger.id)
            if published is not None:  # never a tick from before this version existed
                since = max(since, published) if since is not None else max(published, now - self.catch_up)
            try:
                tick = tick_to_run(definition.schedule, since, now, self.catch_up)
            except Exception:  # one broken schedule must not stop the others
                log.exception("schedule could not be computed", extra={"triggerId": trigger.id})
                continue
            self.checked_until[trigger.id] = now
            if tick is not None:
                await self._publish(Tick(trigger.id, tick))
        self._first_pass = False

    async def _publish(self, tick: Tick) -> None:
        value = tick.record()
        for partition in range(self.partitions):
            await self.channel.send(key=tick.trigger_id.encode(), value=value, partition=partition)
        log.info("schedule tick published", extra={"triggerId": tick.trigger_id,
                                                   "scheduledAt": tick.scheduled_at.isoformat()})
