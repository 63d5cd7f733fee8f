"""The audit agent over in-memory doubles: the trail it reads back is what it wrote. Each
change once, `before` from its memory or (after a restart or a move) from the trail, and a
redelivered record skipped."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from app.domain.versions import AuditEntry
from app.kafka.publisher import Publisher
from app.metrics import Metrics
from app.registry import audit
from app.registry.audit import DefinitionAudit
from app.registry.catalogs import Catalogs
from app.settings import Settings
from app.topics import Topics
from tests.adapters.fakes import FakeClock, RecordingProducer

TOPICS = Topics()


def trigger(minimum: int) -> dict[str, Any]:
    return {"id": "t", "source": "streaming", "eventType": "purchase", "conditions": [f"event.amount > {minimum}"],
            "action": {"type": "enroll_journey", "journeyId": "vip"}}


@dataclass
class Message:
    """A faust Message as the agent reads it (timestamp in seconds)."""

    topic: str
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp: float = 1_767_258_000.0


def message(offset: int, value: Any, actor: str | None = "alice", topic: str = TOPICS.definitions,
            key: str = "t") -> Message:
    raw = None if value is None else value if isinstance(value, bytes) else json.dumps(value).encode()
    return Message(topic, offset, key.encode(), raw, [("actor", actor.encode())] if actor else [])


class Worker:
    """One worker's agent; `trail` is shared by every worker, like the topic."""

    def __init__(self, trail: RecordingProducer) -> None:
        self.generation = 1
        self.agent = DefinitionAudit(Settings(), TOPICS, Catalogs(TOPICS),
                                     Publisher(lambda: trail, TOPICS, Metrics(), FakeClock()),
                                     lambda: self.generation, self._flush)
        self.flushes = 0

    async def _flush(self) -> None:
        self.flushes += 1

    async def handle(self, *messages: Message) -> None:
        for each in messages:
            await self.agent.on_definition_message(each)  # type: ignore[arg-type]


@pytest.fixture
def trail(monkeypatch: pytest.MonkeyPatch) -> RecordingProducer:
    producer = RecordingProducer()

    async def read_trail(settings: Settings, topics: Topics, max_records: int | None = None) -> list[AuditEntry]:
        return [entry for value in producer.values(topics.audit) if (entry := AuditEntry.from_json(value))]

    monkeypatch.setattr(audit, "read_trail", read_trail)
    return producer


async def test_each_change_is_audited_with_what_it_replaced(trail: RecordingProducer) -> None:
    worker = Worker(trail)
    await worker.handle(message(0, trigger(1)), message(1, trigger(2), actor="bob"), message(2, None, actor=None),
                        message(3, b"{broken"), message(4, {"id": "j"}, topic=TOPICS.journey_definitions, key="j"))
    records = trail.values(TOPICS.audit)
    assert [(r["kind"], r["version"], r["actor"]) for r in records] == [
        ("trigger", 0, "alice"), ("trigger", 1, "bob"), ("trigger", 2, "unknown"), ("trigger", 3, "alice"),
        ("journey", 4, "alice")]
    assert [(r["before"], r["after"]) for r in records[:3]] == [(None, trigger(1)), (trigger(1), trigger(2)),
                                                                 (trigger(2), None)]
    assert records[3]["after"] == "{broken" and records[3]["before"] is None and records[3]["errors"]
    assert "errors" not in records[0] and records[0]["at"] == "2026-01-01T09:00:00+00:00"
    assert trail.keys(TOPICS.audit)[0] == "t"
    assert worker.flushes == 5  # each record on the broker before the next change


async def test_a_redelivered_record_is_not_audited_again(trail: RecordingProducer) -> None:
    worker = Worker(trail)
    await worker.handle(message(0, trigger(1)), message(1, trigger(2)))
    await worker.handle(message(0, trigger(1)), message(1, trigger(2)))  # a crash before the commit
    restarted = Worker(trail)  # an empty data directory: it knows only the trail
    await restarted.handle(message(1, trigger(2)), message(2, trigger(3)))
    records = trail.values(TOPICS.audit)
    assert [r["version"] for r in records] == [0, 1, 2]
    assert records[2]["before"] == trigger(2)


async def test_a_worker_that_takes_the_definitions_over_finds_before_on_the_trail(trail: RecordingProducer) -> None:
    first, second = Worker(trail), Worker(trail)
    await second.handle(message(0, trigger(1)))
    first.generation = second.generation = 2  # a rebalance: the partition moves to `first`
    await first.handle(message(1, trigger(2)))
    first.generation = second.generation = 3  # and back: `second` missed version 1
    await second.handle(message(2, trigger(3)))
    records = trail.values(TOPICS.audit)
    assert [(r["version"], r["before"]) for r in records] == [(0, None), (1, trigger(1)), (2, trigger(2))]
    assert second.agent.counters["reloads"] == 2


async def test_after_a_rebalance_the_next_record_in_sequence_needs_no_rereading(trail: RecordingProducer) -> None:
    worker = Worker(trail)
    await worker.handle(message(0, trigger(1)))
    worker.generation = 2
    await worker.handle(message(1, trigger(2)))
    assert worker.agent.counters == {"audited": 2, "replayed": 0, "reloads": 1}


async def test_each_definitions_topic_is_checked_on_its_own_after_a_rebalance(trail: RecordingProducer) -> None:
    first, second = Worker(trail), Worker(trail)
    journey = TOPICS.journey_definitions
    await first.handle(message(0, trigger(1)), message(0, {"id": "j"}, topic=journey, key="j"))
    first.generation = second.generation = 2  # only the journeys topic moves to `second`
    await first.handle(message(1, trigger(2)))
    await second.handle(message(1, {"id": "j", "name": "moved"}, topic=journey, key="j"))
    first.generation = second.generation = 3  # and back to `first`, which missed version 1
    await first.handle(message(2, trigger(3)))  # its triggers follow on: no need to read the trail
    await first.handle(message(2, {"id": "j", "name": "back"}, topic=journey, key="j"))
    [*_, last] = [r for r in trail.values(TOPICS.audit) if r["kind"] == "journey"]
    assert (last["version"], last["before"]) == (2, {"id": "j", "name": "moved"})
