"""The consumer never commits past an event nobody processed (see app/kafka/consumer.py): neither
for topics read by agents, message by message, nor for event topics handled in batches."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from app.kafka.consumer import Consumer
from app.settings import Settings
from app.wiring import build as build_app

TOPIC = "actions.webhook"  # read by an agent
EVENTS = "events.streaming"  # handled in batches


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


async def test_a_record_read_again_from_the_committed_offset_is_processed(consumer: Consumer) -> None:
    """After a rebalance faust resumes a kept partition before seeking it back to the
    committed offset: records from the old position raise the read offset first, and the
    records read again from the committed offset must still reach the streams."""
    handed: list[int] = []

    async def to_streams(message: ConsumerMessage) -> None:
        handed.append(message.offset)

    tp = TP(TOPIC, 0)
    await consumer._hand_over(tp, message(564), to_streams)  # fetched from the old position
    await consumer._hand_over(tp, message(398), to_streams)  # read again after the seek
    await consumer._hand_over(tp, message(399), to_streams)
    assert handed == [564, 398, 399]


async def test_a_changelog_record_read_twice_is_still_dropped(consumer: Consumer) -> None:
    consumer.app.topics.acks_enabled_for = lambda topic: False  # type: ignore[method-assign]
    handed: list[int] = []

    async def to_tables(message: ConsumerMessage) -> None:
        handed.append(message.offset)

    tp = TP(TOPIC, 0)
    await consumer._hand_over(tp, message(10), to_tables)
    await consumer._hand_over(tp, message(9), to_tables)
    assert handed == [10]


async def to_nowhere(message: ConsumerMessage) -> None:
    pass


async def test_a_jump_between_records_of_one_fetch_sequence_is_a_gap_that_commits(consumer: Consumer) -> None:
    tp = TP(TOPIC, 0)
    consumer._committed_offset[tp] = 10
    for offset in (10, 13):  # 11 and 12 hold no record (compacted, or transaction markers)
        await consumer._hand_over(tp, message(offset), to_nowhere)
        consumer.mark_handled(handled := message(offset))
        handled.ack(consumer)
    assert consumer._new_offset(tp) == 14


async def test_no_gap_is_believed_after_a_hand_over_a_rebalance_cut_short(consumer: Consumer) -> None:
    tp = TP(TOPIC, 0)
    consumer._committed_offset[tp] = 10
    await consumer._hand_over(tp, message(10), to_nowhere)

    never = asyncio.Event()

    async def stuck(message: ConsumerMessage) -> None:
        await never.wait()  # a stream queue that stays full

    consumer.suspend_flow.set()  # a rebalance begins while 11 is being handed over
    await consumer._hand_over(tp, message(11), stuck)
    consumer.suspend_flow.clear()
    await consumer._hand_over(tp, message(12), to_nowhere)
    for offset in (10, 12):
        consumer.mark_handled(handled := message(offset))
        handled.ack(consumer)
    assert consumer._new_offset(tp) == 11  # up to 10; 11 stays uncommitted
    consumer._committed_offset[tp] = 11
    assert consumer._new_offset(tp) is None


async def test_a_record_from_a_batch_a_seek_interrupted_proves_no_gap(consumer: Consumer) -> None:
    tp = TP(TOPIC, 0)
    consumer._committed_offset[tp] = 10
    await consumer._hand_over(tp, message(10), to_nowhere)
    await consumer._hand_over(tp, message(20), to_nowhere, in_sequence=False)
    await consumer._hand_over(tp, message(21), to_nowhere)
    assert not consumer._gap[tp]


def test_a_commit_never_passes_a_single_unprocessed_offset(consumer: Consumer) -> None:
    tp = TP(TOPIC, 0)
    consumer._committed_offset[tp] = 642  # 642 was handed to a stream, never processed
    consumer.mark_handled(handled := message(643))
    handled.ack(consumer)
    assert consumer._new_offset(tp) is None  # faust's own rule would commit 644


# -- event topics, handled in batches ------------------------------------------------------

EVENTS_TP = TP(EVENTS, 0)


def records(*offsets: int) -> list[ConsumerRecord[bytes, bytes]]:
    return [ConsumerRecord(EVENTS, 0, offset, 0, 0, b"c-1", b"{}", None, 3, 2, []) for offset in offsets]


class Handler:
    def __init__(self) -> None:
        self.seen: list[int] = []

    async def __call__(self, tp: TP, batch: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        self.seen.extend(record.offset for record in batch)


async def test_a_handled_batch_moves_the_commit_point_past_its_last_record(consumer: Consumer) -> None:
    consumer._committed_offset[EVENTS_TP] = 10
    handler = Handler()
    await consumer._hand_over_batch(EVENTS_TP, records(10, 11, 12), handler, 7, True)
    assert handler.seen == [10, 11, 12]
    assert consumer._new_offset(EVENTS_TP) == 13


async def test_a_batch_starting_after_the_commit_point_commits_nothing_after_a_seek(consumer: Consumer) -> None:
    """Records 10-19 were never handled: a batch from 20 (fetched from an old position,
    or after a hand-over cut short) must not let the commit skip them."""
    consumer._committed_offset[EVENTS_TP] = 10
    await consumer._hand_over_batch(EVENTS_TP, records(20, 21), Handler(), 7, True)
    assert consumer._new_offset(EVENTS_TP) is None


async def test_a_jump_between_batches_of_one_fetch_sequence_is_a_gap(consumer: Consumer) -> None:
    consumer._committed_offset[EVENTS_TP] = 10
    await consumer._hand_over_batch(EVENTS_TP, records(10, 11), Handler(), 7, True)
    await consumer._hand_over_batch(EVENTS_TP, records(13, 14), Handler(), 7, True)  # 12: a marker
    assert consumer._new_offset(EVENTS_TP) == 15
    await consumer._hand_over_batch(EVENTS_TP, records(17), Handler(), 7, False)  # a seek came between
    assert consumer._new_offset(EVENTS_TP) == 15


async def test_a_seek_breaks_the_fetch_sequence(consumer: Consumer) -> None:
    consumer._committed_offset[EVENTS_TP] = 10
    await consumer._hand_over_batch(EVENTS_TP, records(10, 11), Handler(), 7, True)
    consumer._continuous.clear()  # what perform_seek does
    await consumer._hand_over_batch(EVENTS_TP, records(14), Handler(), 7, True)
    assert consumer._new_offset(EVENTS_TP) == 12


async def test_a_rebalance_stops_a_batch_between_chunks_and_commits_only_what_was_handled(
        consumer: Consumer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.kafka.consumer.BATCH_SIZE", 2)
    consumer._committed_offset[EVENTS_TP] = 0
    handler = Handler()

    async def rebalance_after_first_chunk(tp: TP, batch: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        await handler(tp, batch)
        consumer.app.consumer_generation_id = 8

    await consumer._hand_over_batch(EVENTS_TP, records(0, 1, 2, 3), rebalance_after_first_chunk, 7, True)
    assert handler.seen == [0, 1]
    assert consumer._new_offset(EVENTS_TP) == 2


async def test_a_rebalance_waits_for_the_batch_in_hand(consumer: Consumer) -> None:
    release = asyncio.Event()
    handled: list[int] = []

    async def slow(tp: TP, batch: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        await release.wait()
        handled.extend(record.offset for record in batch)

    batch = asyncio.create_task(consumer._hand_over_batch(EVENTS_TP, records(5), slow, 7, True))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(consumer._batch_idle.wait())
    await asyncio.sleep(0.01)
    assert not waiting.done()  # wait_empty (and so the commit of a revocation) waits here
    release.set()
    await batch
    await asyncio.wait_for(waiting, 1)
    assert handled == [5]


async def test_table_writes_in_a_batch_go_to_the_batch_partition(consumer: Consumer) -> None:
    from faust.streams import current_event

    from app.kafka.consumer import table_partition

    with table_partition(TP(EVENTS, 3)):
        event = current_event()
        assert event is not None and event.message.partition == 3
    assert current_event() is None


async def test_event_topics_are_not_fetched_until_the_engine_is_ready(
        consumer: Consumer, monkeypatch: pytest.MonkeyPatch) -> None:
    fetched_from: list[set[TP]] = []

    async def getmany(active_partitions: set[TP], timeout: float) -> dict[TP, list[Any]]:
        fetched_from.append(set(active_partitions))
        return {}

    monkeypatch.setattr(consumer._thread, "getmany", getmany)
    tps = {EVENTS_TP, TP(TOPIC, 0)}
    consumer.config.ready = lambda: False
    await consumer._getmany(set(tps), 0.01)
    await consumer._getmany({EVENTS_TP}, 0.01)  # nothing else to fetch: not fetched at all
    consumer.config.ready = lambda: True
    await consumer._getmany(set(tps), 0.01)
    assert fetched_from == [{TP(TOPIC, 0)}, tps]


def test_partitions_paused_before_the_engine_is_ready_stay_paused(consumer: Consumer) -> None:
    # Table recovery pauses the event partitions while definitions may still be loading; the
    # pause must hold once they are loaded, or events would meet half-recovered tables.
    consumer._active_partitions = {EVENTS_TP, TP(TOPIC, 0)}
    consumer.config.ready = lambda: False
    consumer.pause_partitions({EVENTS_TP})
    consumer.config.ready = lambda: True
    assert consumer._get_active_partitions() == {TP(TOPIC, 0)}
    consumer.resume_partitions({EVENTS_TP})
    assert consumer._get_active_partitions() == {EVENTS_TP, TP(TOPIC, 0)}
