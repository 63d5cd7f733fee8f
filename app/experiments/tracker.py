"""Conversion windows in the `experiments` table (keyed by customer id, changelogged, so they
survive kill -9 and rebalances): opened by firings and held-out firings, converted by the
customer's outcome events, published on `triggers.conversions`. Rules: app/domain/experiments.py."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime

from app.domain.experiments import Window, conversion_record, convert, open_windows
from app.domain.filters import passes_filters
from app.domain.models import ActionCommand, Event, iso_text
from app.domain.timers import to_millis
from app.kafka.publisher import Publisher
from app.registry.catalogs import TriggerCatalog
from app.state.tables import Table, stored
from app.topics import Topics

log = logging.getLogger(__name__)


class ConversionTracker:
    def __init__(self, topics: Topics, triggers: TriggerCatalog, table: Table, publisher: Publisher,
                 clock: Callable[[], datetime]) -> None:
        self.topics = topics
        self.triggers = triggers
        self.table = table
        self.publisher = publisher
        self.clock = clock
        self.counters: Counter[str] = Counter()

    @property
    def active(self) -> bool:
        """Whether events must be shown to the tracker: some trigger counts conversions."""
        return self.triggers.index.any_conversion

    def wants(self, event: Event) -> bool:
        """Whether some trigger counts events of this type as conversions (filters aside)."""
        return bool(self.triggers.index.converted_by(event.source, event.type))

    def opened(self, customer_id: str, commands: Sequence[ActionCommand], at: datetime) -> None:
        """Open a window for each live or held-out firing of an experiment with a conversion
        (shadow firings measure nothing). Called where the customer's state lives."""
        at_ms = to_millis(at)
        windows = []
        for command in commands:
            trigger = self.triggers.get(command.trigger_id)
            experiment = trigger.definition.experiment if trigger is not None else None
            if command.shadow or command.group is None or experiment is None or experiment.conversion is None:
                continue
            within = experiment.conversion.within
            windows.append(Window(command.firing_id, command.trigger_id, command.group, at_ms, at_ms + within.millis))
        if windows:
            self._store(customer_id, open_windows(self._windows(customer_id), windows, at_ms))
            self.counters["conversion_windows_opened"] += len(windows)

    async def on_event(self, event: Event) -> None:
        """Convert the customer's open windows this event qualifies for, each once."""
        candidates = self.triggers.index.converted_by(event.source, event.type)
        if not candidates:
            return
        windows = self._windows(event.customer_id)
        if not windows:
            return
        event_json = event.as_json()
        qualifying = {trigger.id for trigger in candidates
                      if trigger.definition.experiment is not None
                      and trigger.definition.experiment.conversion is not None
                      and passes_filters(trigger.definition.experiment.conversion.filters, event_json)}
        after, converted = convert(windows, qualifying, to_millis(event.timestamp))
        if after != windows:
            self._store(event.customer_id, after)
        converted_at = iso_text(event.timestamp)
        for window in converted:
            record = conversion_record(window, event.customer_id, event.id, converted_at)
            await self.publisher.send(self.topics.conversions, event.customer_id, record)
            self.counters["conversions"] += 1
            log.debug("conversion", extra=record)

    def _windows(self, customer_id: str) -> list[Window]:
        return [Window.from_json(item) for item in stored(self.table, customer_id) or ()]

    def _store(self, customer_id: str, windows: list[Window]) -> None:
        if windows:
            self.table[customer_id] = [window.to_json() for window in windows]
        elif stored(self.table, customer_id) is not None:
            del self.table[customer_id]
