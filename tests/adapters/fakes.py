"""In-memory doubles for the shell's fast tests: tables as dicts, a recording producer, a clock
you set. Fast tests only: integration tests run against a real broker."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any


class DictTable(dict[str, Any]):
    """A faust table as the shell uses it: item access, `items()`, and `data` for one-read gets."""

    @property
    def data(self) -> DictTable:
        return self


class RecordingProducer:
    """faust's producer, recording what is sent; each send's delivery is already done."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, int | None]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
                   timestamp: float | None = None, headers: Any = None) -> asyncio.Future[None]:
        self.sent.append((topic, key, value, partition))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def values(self, topic: str) -> list[Any]:
        """The JSON values sent to `topic`, in order."""
        return [json.loads(value) for sent_to, _, value, _ in self.sent if sent_to == topic and value is not None]

    def keys(self, topic: str) -> list[str | None]:
        return [key.decode() if key is not None else None for sent_to, key, _, _ in self.sent if sent_to == topic]

    def topics(self) -> list[str]:
        return [topic for topic, *_ in self.sent]


class FakeClock:
    """`clock()` gives `now`; tests move it with `advance`."""

    def __init__(self, now: datetime = datetime(2026, 1, 1, 9, tzinfo=UTC)) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> None:
        self.now += by


@dataclass
class Record:
    """A fetched record (RawRecord) or a faust Message, as handlers read them."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float = 1_767_258_000_000  # 2026-01-01T09:00Z, in milliseconds


def record(topic: str, key: str | None, value: Any, partition: int = 0, offset: int = 0) -> Record:
    """A record whose value is `value` as JSON (bytes and None are taken as they are)."""
    raw = value if value is None or isinstance(value, bytes) else json.dumps(value).encode()
    return Record(topic, partition, offset, key.encode() if key is not None else None, raw)
