"""Test-side Kafka access: produce JSON, and read a topic from the start until a condition holds."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


def docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no usable Docker engine"
        return False


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: str | None
    raw: bytes | None

    @property
    def value(self) -> Any:
        return None if self.raw is None else json.loads(self.raw)


class KafkaClient:
    """What an outside client that only knows CONTRACT.md would do."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> KafkaClient:
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await self._producer.start()
        return self

    async def stop(self) -> None:
        if self._producer:
            await self._producer.stop()

    async def send(self, topic: str, key: str | bytes | None, value: Any,
                   partition: int | None = None) -> int:
        """Produce one record and return its offset."""
        assert self._producer is not None
        raw = value if isinstance(value, bytes) or value is None else json.dumps(value).encode()
        raw_key = key.encode() if isinstance(key, str) else key
        metadata = await self._producer.send_and_wait(topic, key=raw_key, value=raw,
                                                      partition=partition)
        return int(metadata.offset)

    async def read(self, topic: str, until: Callable[[list[Record]], bool] | None = None,
                   timeout: float = 30.0, settle: float = 0.0) -> list[Record]:
        """Every record on `topic` from the beginning, read until `until(records)` is true
        (then `settle` seconds more, to catch records that should not be there) or timeout."""
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=self.bootstrap, group_id=None,
                                    auto_offset_reset="earliest", enable_auto_commit=False,
                                    fetch_max_wait_ms=20)
        await consumer.start()
        records: list[Record] = []
        try:
            deadline = time.monotonic() + timeout
            satisfied_at: float | None = None
            while time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=100)
                for batch in batches.values():
                    records.extend(
                        Record(m.topic, m.partition, m.offset,
                               m.key.decode("utf-8", "replace") if m.key is not None else None, m.value)
                        for m in batch)
                if satisfied_at is None and (until is None or until(records)):
                    satisfied_at = time.monotonic()
                if satisfied_at is not None and time.monotonic() - satisfied_at >= settle:
                    break
                await asyncio.sleep(0)
        finally:
            await consumer.stop()
        return records
