"""Intake, evaluation and scheduled ticks built over the in-memory doubles, for fast tests."""

from __future__ import annotations

import json
from typing import Any

from faust.types import TP

from app.evaluation.evaluator import Evaluator
from app.evaluation.timed import TimedEvaluation
from app.experiments.tracker import ConversionTracker
from app.intake.row_loads import RowLoads
from app.intake.sources import SourceIntake
from app.kafka.partitioner import partition_for
from app.kafka.publisher import Publisher
from app.metrics import Metrics
from app.policies.gate import ContactGate
from app.registry.catalogs import Catalogs
from app.settings import Settings
from app.state.aggregates import AggregateStore
from app.state.rows import RowStore
from app.timers.event_time import EventTime
from app.timers.pending import PendingFirings
from app.timers.service import Timers
from app.timers.store import TimerStore
from app.topics import Topics
from tests.adapters.fakes import DictTable, FakeClock, RecordingProducer

PARTITIONS = 4


class EngineParts:
    """What wiring.build makes for intake, evaluation and ticks, over dicts and a recording producer."""

    def __init__(self, partitions: int = PARTITIONS) -> None:
        from app.scheduling.ticks import ScheduledTicks

        self.partitions = partitions
        self.clock = FakeClock()
        self.producer = RecordingProducer()
        self.topics = Topics()
        self.catalogs = Catalogs(self.topics)
        self.metrics = Metrics()
        self.rows, self.cooldowns, self.ticks_done = DictTable(), DictTable(), DictTable()
        self.publisher = Publisher(lambda: self.producer, self.topics, self.metrics, self.clock)
        self.row_store = RowStore(self.rows, self.publisher)  # type: ignore[arg-type]
        self.timers_table, self.aggregates_table, self.contacts = DictTable(), DictTable(), DictTable()
        self.timer_store = TimerStore(self.timers_table)  # type: ignore[arg-type]
        self.pending = PendingFirings(self.topics, self.catalogs.triggers, self.timer_store, self.publisher,
                                      self.metrics, self.clock)
        self.gate = ContactGate(self.topics, self.catalogs, self.contacts, self.pending,  # type: ignore[arg-type]
                                self.row_store, self.publisher, self.metrics, partitions, self.clock)
        self.experiments_table = DictTable()
        self.conversions = ConversionTracker(self.topics, self.catalogs.triggers,
                                             self.experiments_table, self.publisher, self.clock)  # type: ignore[arg-type]
        self.evaluator = Evaluator(self.topics, self.catalogs.triggers, self.publisher, self.row_store,
                                   self.cooldowns, self.metrics, self.clock, self.gate,  # type: ignore[arg-type]
                                   self.conversions)
        self.row_loads = RowLoads(self.topics, self.catalogs.tables, self.row_store, self.publisher,
                                  self.metrics, self.clock)
        self.aggregates = AggregateStore(self.aggregates_table)  # type: ignore[arg-type]
        # Topic-partitions with nothing left to read: the rest have a backlog (event time).
        self.caught_up: set[TP] = set()
        self.event_time = EventTime([self.topics.streaming, self.topics.cdc, self.topics.outcomes,
                                     self.topics.schema, self.topics.rerouted], self.caught_up.__contains__)
        self.timers = Timers(self.topics, self.catalogs.triggers, self.pending, self.event_time, self.evaluator,
                             self.row_store, self.aggregates, self.metrics, self.clock)
        self.timed = TimedEvaluation(self.catalogs.triggers, self.evaluator, self.aggregates, self.timers,
                                     self.conversions)
        self.intake = SourceIntake(Settings(TRIGGERS_PARTITIONS=partitions), self.topics, self.evaluator,
                                   self.timed, self.row_loads, self.publisher, self.conversions)
        self.ticks = ScheduledTicks(partitions, self.catalogs.triggers, self.evaluator, self.rows,  # type: ignore[arg-type]
                                    self.ticks_done, self.publisher)  # type: ignore[arg-type]

    def define(self, **definition: Any) -> None:
        """Apply a trigger definition, as the definitions reader does."""
        self.catalogs.triggers.apply(definition["id"], json.dumps(definition).encode())
        assert definition["id"] in self.catalogs.triggers.items, self.catalogs.triggers.rejected

    def partition_of(self, customer_id: str) -> int:
        return partition_for(customer_id, self.partitions)

    def sent(self, topic: str) -> list[Any]:
        return self.producer.values(topic)


def trigger(trigger_id: str = "big-purchase", **overrides: Any) -> dict[str, Any]:
    """A streaming `purchase` trigger over 100 that enrolls the customer in a journey."""
    return {"id": trigger_id, "source": "streaming", "eventType": "purchase",
            "conditions": ["event.amount > 100"],
            "action": {"type": "enroll_journey", "journeyId": "welcome"}, **overrides}
