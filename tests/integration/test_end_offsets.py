"""A partition's end offset counts every record of its last batch, whatever the broker says."""

from __future__ import annotations

import asyncio
import uuid
from functools import partial

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from app.cli.devbroker import free_port
from app.kafka.end_offsets import confirmed_end_offsets

pytestmark = pytest.mark.integration


async def _produce_batch(producer: AIOKafkaProducer, topic: str, values: list[bytes]) -> None:
    # Sent before any is awaited, within linger_ms: one record batch.
    sent = [await producer.send(topic, key=b"k", value=value, partition=0) for value in values]
    await asyncio.gather(*sent)


async def test_end_offsets_include_the_whole_last_batch(kafka_bootstrap: str) -> None:
    batched, empty = f"end-offsets-{uuid.uuid4().hex[:8]}", f"end-offsets-empty-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(batched, 1, 1), NewTopic(empty, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=100)
    await producer.start()
    try:
        await _produce_batch(producer, batched, [b"a", b"b", b"c"])
        await _produce_batch(producer, batched, [b"d", b"e"])  # offsets 3 and 4
    finally:
        await producer.stop()

    tps = [TopicPartition(batched, 0), TopicPartition(empty, 0)]
    probe = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
    await probe.start()
    try:
        reported = await probe.end_offsets(tps)
    finally:
        await probe.stop()
    # Tansu reports 4 here (the last batch's base offset + 1); Kafka reports 5.
    confirmed = await confirmed_end_offsets(partial(AIOKafkaConsumer, bootstrap_servers=kafka_bootstrap), reported)
    assert confirmed == {TopicPartition(batched, 0): 5, TopicPartition(empty, 0): 0}


async def test_without_an_answer_the_reported_end_offsets_stand() -> None:
    # Nothing listens on the port: the check gives up and leaves what the broker reported,
    # which is what faust's recovery would have used without it.
    nowhere = f"127.0.0.1:{free_port()}"
    reported = {TopicPartition("anything", 0): 7, TopicPartition("anything", 1): 0}
    confirmed = await confirmed_end_offsets(partial(AIOKafkaConsumer, bootstrap_servers=nowhere), reported)
    assert confirmed == reported
