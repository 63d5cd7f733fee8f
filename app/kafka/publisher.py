"""The one way records leave the engine: bounded in size, straight to faust's producer; and
the dead letter of an input record that could not be handled."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from app.domain.deadletters import MAX_RECORD_BYTES, RecordTooLarge, event_dead_letter
from app.domain.encoding import encode
from app.kafka.records import RawRecord
from app.metrics import Metrics, reason_code
from app.topics import Topics

log = logging.getLogger(__name__)

# A dead letter's key (and its `key` field) keep this many characters of the original key.
MAX_KEY_CHARS = 1_024


class Producer(Protocol):
    """faust's producer (`app.producer`), or a recording one in tests."""

    async def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None,
                   timestamp: float | None, headers: Any) -> Any: ...


class Publisher:
    def __init__(self, producer: Callable[[], Producer], topics: Topics, metrics: Metrics,
                 clock: Callable[[], datetime]) -> None:
        # A function: faust builds its producer when first asked, after the app is wired.
        self._producer = producer
        self.topics = topics
        self.metrics = metrics
        self.clock = clock
        self.counters: Counter[str] = Counter()

    async def send(self, topic: str, key: str | None, value: Any) -> None:
        """Hand a record to the producer; the consumer flushes the producer before it commits
        an offset, so a crash cannot commit past an event whose output was not written.
        (Straight to the producer: faust's Topic.send adds several layers per record.)

        Raises RecordTooLarge, having sent nothing, for a record the producer would refuse."""
        raw_key = key.encode() if key is not None else None
        raw = value if isinstance(value, bytes) else encode(value)
        check_size(topic, raw_key, raw)
        delivery = await self._producer().send(topic, raw_key, raw, None, None, None)
        if isinstance(delivery, asyncio.Future):
            delivery.add_done_callback(_log_failed_delivery)

    async def dead_letter(self, message: RawRecord, reason: str) -> None:
        """`message` to `events.deadletter` with the reason; never raises for its size."""
        key = message.key.decode("utf-8", "replace")[:MAX_KEY_CHARS] if message.key else None
        self.counters["deadlettered"] += 1
        self.metrics.dead_letters.labels(self.topics.deadletter, reason_code(reason)).inc()
        log.warning("event dead-lettered", extra={"topic": message.topic,
                                                  "partition": message.partition,
                                                  "offset": message.offset, "reason": reason[:200]})
        record = event_dead_letter(reason, message.topic, message.partition, message.offset, key,
                                   message.value, self.clock().isoformat())
        try:
            await self.send(self.topics.deadletter, key, record)
        except (RecordTooLarge, MessageSizeTooLargeError, TypeError, ValueError) as exc:
            # Bounded by construction, so this is a bug: say so loudly, and go on.
            self.counters["deadletter_failures"] += 1
            log.error("dead letter could not be written", exc_info=exc,
                      extra={"topic": message.topic, "offset": message.offset})

    async def record_failed(self, message: RawRecord, exc: Exception) -> None:
        """The safety net under every consumer: an unexpected exception while handling one
        record dead-letters that record with `<ExceptionType>: <message>`, and the next
        record is handled. Without it the exception reaches the fetcher, which stops the
        worker, and a restarted worker reads the same record and stops again.

        Errors of the broker connection are not the record's fault: they still propagate, so
        the record is read again when the worker is back rather than dead-lettered."""
        if isinstance(exc, KafkaError) and not isinstance(exc, MessageSizeTooLargeError):
            raise exc
        self.counters["record_failures"] += 1
        log.error("record failed; dead-lettered", exc_info=exc,
                  extra={"topic": message.topic, "partition": message.partition, "offset": message.offset})
        await self.dead_letter(message, f"{type(exc).__name__}: {exc}")


def check_size(topic: str, key: bytes | None, value: bytes) -> None:
    """RecordTooLarge for a record the producer would refuse."""
    size = len(value) + (len(key) if key is not None else 0)
    if size > MAX_RECORD_BYTES:
        raise RecordTooLarge(topic, size)


def _log_failed_delivery(delivery: asyncio.Future[Any]) -> None:
    if not delivery.cancelled() and delivery.exception() is not None:
        log.error("a record could not be written", extra={"error": repr(delivery.exception())})
