"""The definition-errors agent's reports over in-memory doubles: one record on `triggers.errors`
per invalid definition, nothing for a valid one or a deletion."""

from __future__ import annotations

from typing import Any

from app.kafka.publisher import Publisher
from app.metrics import Metrics
from app.registry.catalogs import Catalogs
from app.registry.reports import MAX_ID_CHARS, DefinitionReports
from app.topics import Topics
from tests.adapters.fakes import FakeClock, RecordingProducer, record

VALID = {"id": "ok", "source": "streaming", "eventType": "purchase",
         "action": {"type": "enroll_journey", "journeyId": "welcome"}}


def reports() -> tuple[DefinitionReports, RecordingProducer]:
    topics, producer, clock = Topics(), RecordingProducer(), FakeClock()
    publisher = Publisher(lambda: producer, topics, Metrics(), clock)
    return DefinitionReports(topics, Catalogs(topics), publisher, clock), producer


async def report(key: str | None, value: Any, topic: str = "triggers.definitions") -> list[dict[str, Any]]:
    agent, producer = reports()
    await agent.on_definition_message(record(topic, key, value, offset=9))  # type: ignore[arg-type]
    return producer.values("triggers.errors")


async def test_a_valid_definition_and_a_deletion_are_not_reported() -> None:
    assert await report("ok", VALID) == []
    assert await report("ok", None) == []


async def test_an_invalid_trigger_is_reported_under_its_key_with_every_error() -> None:
    [error] = await report("bad", {**VALID, "id": "other", "priority": 500})
    assert (error["kind"], error["id"], error["triggerId"]) == ("trigger", "bad", "bad")
    assert error["errors"] and any("priority" in e for e in error["errors"])
    assert (error["topic"], error["offset"], error["at"]) == ("triggers.definitions", 9, "2026-01-01T09:00:00+00:00")


async def test_a_keyless_record_is_reported_once_without_an_id() -> None:
    [error] = await report(None, VALID)
    assert error["id"] is None and error["errors"] == ["a definition record needs a key (the definition's id)"]


async def test_a_hostile_key_is_cut_short_in_the_report() -> None:
    [error] = await report("k" * 5000, b"{not json")
    assert error["id"] == "k" * MAX_ID_CHARS + "…"


async def test_other_kinds_are_reported_without_a_trigger_id() -> None:
    [error] = await report("j", b"[1]", topic="journeys.definitions")
    assert error["kind"] == "journey" and "triggerId" not in error
