"""Shared fixtures: a real Kafka broker for the whole session, chosen in the contract's order."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.kafka import docker_answers


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """KAFKA_BOOTSTRAP_SERVERS if set, else Kafka in a container if Docker answers, else the
    embedded Tansu broker on a free port. Never skipped: one of the three always exists."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    if docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    from app.cli.devbroker import EmbeddedBroker, free_port

    log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
    broker = EmbeddedBroker(free_port(), log_path=log_path).start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()
