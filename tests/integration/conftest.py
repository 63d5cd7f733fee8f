"""A deployment under test: unique topics and group, real worker processes, a Kafka client."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from app.topics import Topics
from tests.support.kafka import KafkaClient, Record
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.integration


@dataclass
class Deployment:
    kafka: KafkaClient
    topics: Topics
    workers: list[WorkerProcess] = field(default_factory=list)

    async def put_definition(self, definition: dict[str, Any] | bytes | None,
                             trigger_id: str | None = None) -> None:
        """Publish on the definitions topic and wait until every worker has applied it."""
        key = trigger_id or (definition["id"] if isinstance(definition, dict) else None)
        await self.put(self.topics.definitions, "trigger", key, definition)

    async def put(self, topic: str, kind: str, key: str | None, value: Any) -> None:
        """Publish any definition and wait until every worker has read past it."""
        offset = await self.kafka.send(topic, key, value)
        for worker in self.workers:
            await worker.wait_for(lambda r: r["catalogs"][kind]["offset"] >= offset, timeout=30,
                                  what=f"caught up to {topic} offset {offset}")

    async def send_event(self, event: dict[str, Any] | bytes, key: str | None = None,
                         topic: str | None = None) -> None:
        if key is None and isinstance(event, dict):
            key = event.get("customerId")
        await self.kafka.send(topic or self.topics.streaming, key, event)

    async def firings(self, count: int, where: Any = lambda r: True, settle: float = 1.0,
                      timeout: float = 30.0, topic: str | None = None) -> list[dict[str, Any]]:
        """Firings matching `where`, read until `count` are seen (and `settle` s more)."""
        def matching(records: list[Record]) -> list[dict[str, Any]]:
            return [r.value for r in records if r.raw is not None and where(r.value)]

        records = await self.kafka.read(topic or self.topics.firings,
                                        until=lambda rs: len(matching(rs)) >= count,
                                        settle=settle, timeout=timeout)
        return matching(records)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


async def start_deployment(bootstrap: str, workdir: Path, workers: int = 1,
                           partitions: int = 4, env: dict[str, str] | None = None) -> Deployment:
    tag = uuid.uuid4().hex[:8]
    prefix, app_id = f"t{tag}.", f"trigger-engine-test-{tag}"
    deployment = Deployment(await KafkaClient(bootstrap).start(), Topics(prefix))
    for n in range(workers):
        deployment.workers.append(WorkerProcess(bootstrap, app_id, prefix, workdir,
                                                f"worker{n + 1}", partitions, env).start())
    for worker in deployment.workers:
        await worker.wait_healthy()
    return deployment


@pytest.fixture(scope="module")
async def engine(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[Deployment]:
    """One worker shared by a module's tests; tests keep apart by trigger and customer ids."""
    deployment = await start_deployment(kafka_bootstrap, tmp_path_factory.mktemp("engine"))
    yield deployment
    deployment.stop()
    await deployment.kafka.stop()
