"""The consumer never counts an acknowledgement for a message no agent was handed.

faust's streams acknowledge a message they skip because a rebalance began; counted, that
acknowledgement lets the commit made during the rebalance pass an unprocessed event.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from app.kafka import Consumer
from app.main import build_app
from app.settings import Settings

TOPIC = "events.streaming"


@pytest.fixture
def consumer() -> Iterator[Consumer]:
    app = build_app(Settings(KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1"))
    app.topics.acks_enabled_for = lambda topic: True  # type: ignore[method-assign]
    app.consumer_generation_id = 7
    app.flow_control.resume()  # as in a running worker between rebalances
    consumer = app.consumer
    assert isinstance(consumer, Consumer)
    yield consumer


def message(offset: int, generation: int = 7) -> ConsumerMessage:
    return ConsumerMessage(TOPIC, 0, offset, 0.0, 0, None, b"c-1", b"{}", None, 2, 2,
                           tp=TP(TOPIC, 0), generation_id=generation)


def counted(consumer: Consumer) -> list[int]:
    return list(consumer._acked[TP(TOPIC, 0)])


def test_a_handled_message_is_counted(consumer: Consumer) -> None:
    handled = message(10)
    consumer.mark_handled(handled)
    assert handled.ack(consumer)
    assert counted(consumer) == [10]


def test_an_unhandled_message_is_counted_while_nothing_rebalances(consumer: Consumer) -> None:
    # e.g. a message for a topic no stream reads any more: faust acks it so commits go on
    assert message(11).ack(consumer)
    assert counted(consumer) == [11]


def test_a_message_skipped_for_an_old_generation_is_settled_but_not_counted(consumer: Consumer) -> None:
    stale = message(12, generation=6)
    consumer._unacked_messages.add(stale)
    assert not stale.ack(consumer)
    assert stale.acked and stale not in consumer._unacked_messages  # rebalance can go on
    assert counted(consumer) == []  # ... and the offset stays uncommitted


def test_a_message_skipped_while_the_flow_is_suspended_is_not_counted(consumer: Consumer) -> None:
    consumer.app.flow_control.suspend()
    try:
        skipped = message(13)
        assert not skipped.ack(consumer)
        handled = message(14)
        consumer.mark_handled(handled)  # an agent finishing its event during the rebalance
        assert handled.ack(consumer)
    finally:
        consumer.app.flow_control.resume()
    assert counted(consumer) == [14]
