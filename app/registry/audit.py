"""The audit trail of definition changes on `triggers.audit`: written by one group agent (every
change once, with what it replaced), read back by `triggers history` and the HTTP API.

Why the agent remembers `before` from the trail itself: the definitions topics are compacted,
so the record an update replaced may be gone from them by the time the change is audited (a
worker that was down for days, a new worker on an empty data directory). The trail holds every
value ever published, and only this agent writes it, so its last entry per id is the value the
next change replaces.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from faust.types import Message

from app.domain.encoding import encode
from app.domain.versions import (
    AuditEntry,
    NotRestorable,
    UnknownVersion,
    actor_of_headers,
    audit_record,
    history,
    parsed_value,
)
from app.errors import InvalidDefinition
from app.kafka.publisher import Publisher
from app.registry.catalogs import Catalog, Catalogs
from app.registry.reader import at_end
from app.settings import Settings
from app.topics import Topics

log = logging.getLogger(__name__)

# `history` and rollback read at most this many of the newest audit records: the trail grows
# forever, and a request must not read all of it. At a few kilobytes a record, that is a few
# hundred megabytes at worst; versions older than that are not listed (nor rolled back to).
MAX_HISTORY_RECORDS = 100_000
# The agent reads the trail this many times (1 s, 2 s, ... apart) before it gives a change up.
READ_ATTEMPTS = 5


@dataclass
class KindTrail:
    """What the agent knows of one definitions topic: the last version audited, and the value
    each id has after it (deleted ids absent)."""

    last_version: int = -1
    values: dict[str, Any] = field(default_factory=dict)


class DefinitionAudit:
    """Appends each change of each definitions topic to `triggers.audit`, in ONE worker per
    topic: it runs in the definition agent, and the group gives each topic's single partition
    to one member.

    Its memory (a KindTrail per topic) is rebuilt from the whole trail when it may be stale:
    at its first record after the worker starts, and after a rebalance at the first record of
    a topic that does not directly follow the last one it audited of that topic. A record at or below the last
    audited version was audited already — redelivered after a crash or a rebalance, by this
    worker or another, whose record the rebuilt memory holds — and is skipped. What can still
    write a version twice: two owners at once (a worker that lost the partition mid-write), or
    a record redelivered to this worker after another audited it without committing; history
    lists each (kind, id, version) once.

    Each audit record is flushed to the broker before the next change is handled.
    """

    def __init__(self, settings: Settings, topics: Topics, catalogs: Catalogs, publisher: Publisher,
                 generation: Callable[[], int], flush: Callable[[], Awaitable[None]]) -> None:
        self.settings = settings
        self.topics = topics
        self.catalogs = catalogs
        self.publisher = publisher
        self.generation = generation
        self.flush = flush
        self.trails: dict[str, KindTrail] | None = None
        # Per topic, the consumer generation in which its memory was last known current: each
        # definitions topic is a partition of its own, which a rebalance may move on its own.
        self._current_in: dict[str, int] = {}
        self.counters = {"audited": 0, "replayed": 0, "reloads": 0}

    async def on_definition_message(self, message: Message) -> None:
        if message.key is None:
            return  # no id: reported on triggers.errors, audited nowhere
        trail = await self._trail_for(message.topic, message.offset)
        if message.offset <= trail.last_version:
            self.counters["replayed"] += 1
            log.info("definition change audited before", extra={"topic": message.topic, "version": message.offset})
            return
        catalog = self.catalogs.by_topic[message.topic]
        key = message.key.decode("utf-8", "replace")
        after = parsed_value(message.value)
        record = audit_record(catalog.kind, key, message.offset, _record_time(message.timestamp),
                              actor_of_headers(message.headers), trail.values.get(key), after,
                              _errors(catalog, message.value, key))
        await self.publisher.send(self.topics.audit, key, record)
        # On the broker before the next change is handled: a worker taking the topic over
        # reads the trail, and a record still in this producer would be audited twice.
        await self.flush()
        trail.last_version = message.offset
        if after is None:
            trail.values.pop(key, None)
        else:
            trail.values[key] = after
        self.counters["audited"] += 1
        log.info("definition change audited", extra={"kind": catalog.kind, "id": key[:256], "version": message.offset,
                                                     "actor": record["actor"]})

    async def _trail_for(self, topic: str, offset: int) -> KindTrail:
        generation = self.generation()
        if self.trails is None or (self._current_in.get(topic) != generation
                                   and offset != self.trails[topic].last_version + 1):
            self.trails = await self._reload()
            self._current_in = dict.fromkeys(self.trails, generation)
        self._current_in[topic] = generation
        return self.trails[topic]

    async def _reload(self) -> dict[str, KindTrail]:
        self.counters["reloads"] += 1
        trails = {topic: KindTrail() for topic in self.catalogs.by_topic}
        topic_of = {catalog.kind: topic for topic, catalog in self.catalogs.by_topic.items()}
        entries = await self._read_whole_trail()
        # By version, not by place on the trail: two writers at once may have interleaved.
        for entry in sorted(entries, key=lambda e: e.version):
            topic = topic_of.get(entry.kind)
            if topic is None:
                continue
            trail = trails[topic]
            trail.last_version = max(trail.last_version, entry.version)
            if entry.is_deletion:
                trail.values.pop(entry.id, None)
            elif entry.after is not None:
                trail.values[entry.id] = entry.after
        log.info("audit trail read", extra={"records": len(entries),
                                            **{t: trail.last_version for t, trail in trails.items()}})
        return trails

    async def _read_whole_trail(self) -> list[AuditEntry]:
        attempt = 1
        while True:
            try:
                return await read_trail(self.settings, self.topics, max_records=None)
            except KafkaError as exc:
                if attempt >= READ_ATTEMPTS:
                    raise
                log.warning("audit trail not read, trying again", extra={"attempt": attempt, "error": repr(exc)})
                await asyncio.sleep(attempt)
                attempt += 1


def _errors(catalog: Catalog[Any], value: bytes | None, key: str) -> list[str] | None:
    """Why the change was rejected (None: valid, or a deletion)."""
    if value is None:
        return None
    try:
        catalog.validate(value, key)
    except InvalidDefinition as exc:
        return exc.errors
    return None


def _record_time(timestamp: float | None) -> datetime:
    # faust gives the record's timestamp in seconds.
    return datetime.fromtimestamp(timestamp, tz=UTC) if timestamp else datetime.now(UTC)


async def read_trail(settings: Settings, topics: Topics, max_records: int | None = MAX_HISTORY_RECORDS
                     ) -> list[AuditEntry]:
    """The audit records on the trail, oldest first: the newest `max_records` of them (None:
    all). A short-lived consumer outside any group; records that are not audit records are
    skipped."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_list, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    entries: list[AuditEntry] = []
    try:
        tp = TopicPartition(topics.audit, 0)
        consumer.assign([tp])
        start = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, max(start, end - max_records) if max_records is not None else start)
        while not await at_end(consumer, {tp: end}):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    if record.offset < end:
                        entry = AuditEntry.from_json(parsed_value(record.value))
                        if entry is not None:
                            entries.append(entry)
    finally:
        await consumer.stop()
    return entries


def topic_of_kind(topics: Topics, kind: str) -> str | None:
    """The definitions topic of a kind (`trigger`, `journey`, ...), None for an unknown kind."""
    for topic, catalog in Catalogs(topics).by_topic.items():
        if catalog.kind == kind:
            return topic
    return None


def kinds(topics: Topics) -> list[str]:
    return [catalog.kind for catalog in Catalogs(topics).by_topic.values()]


async def versions(settings: Settings, topics: Topics, kind: str, item_id: str) -> list[AuditEntry]:
    """The versions of one definition, oldest first, within the newest MAX_HISTORY_RECORDS
    audit records; UnknownVersion when there are none."""
    found = history(await read_trail(settings, topics), kind, item_id)
    if not found:
        raise UnknownVersion(f"no {kind} {item_id!r} on {topics.audit} "
                             f"(the newest {MAX_HISTORY_RECORDS} changes were read)")
    return found


def restored_value(topics: Topics, kind: str, item_id: str, entry: AuditEntry) -> bytes:
    """The value that restores version `entry`: as it was, if today's validation accepts it."""
    value = encode(entry.after)
    catalog = next(c for c in Catalogs(topics).by_topic.values() if c.kind == kind)
    try:
        catalog.validate(value, item_id)
    except InvalidDefinition as exc:
        raise NotRestorable(f"version {entry.version} of {kind} {item_id!r} is not valid today: "
                            f"{'; '.join(exc.errors)}") from None
    return value
