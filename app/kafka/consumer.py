"""faust's aiokafka consumer with offset bookkeeping that cannot commit past an unprocessed event.

faust decides which offsets may be committed from three things: the acknowledgements
streams give, the offset it last read per partition, and "gaps" (offsets with no record,
e.g. compacted away or transaction markers) it infers from jumps between records. Around
a rebalance each of them can be wrong, and every time the result is the same: a commit
moves past an event that nobody processed, and the event is never seen again. We saw it
as one missing firing in a few thousand events when workers restarted. The four ways:

1. A stream that already took a message off its queue when a rebalance began skips it
   and *acknowledges* it. Here only acknowledgements of messages an agent was handed
   (`mark_handled`) count; the others settle the message without making it committable.
2. faust resumes a partition before seeking it back to the committed offset, so records
   fetched from the old position go first and raise the read offset; the records read
   again from the committed offset were then dropped as "already read", including those
   cleared from a stream queue unprocessed. Here a stream record is never dropped: a
   re-read is an at-least-once replay that every sink recognises by firingId.
3. A hand-over the rebalance cut short (the record never reached a stream), a batch
   fetched before a seek, or a read offset reset by a seek made faust infer gaps over
   records that exist. Here a gap is believed only between records of one fetch sequence
   that no seek interrupted, each handed over in full.
4. faust commits over a single offset that was neither acknowledged nor a gap. Here the
   next offset to commit must be one of the two.

Event topics take a faster road (`Consumer._hand_over_batch`): their records go straight from the
fetch to a handler, a partition's batch at a time, without faust's per-message machinery
(a Message, a queue, a stream and an acknowledgement per record cost more than evaluating
the event). A partition's commit point is then simply the offset after its last handled
record, moved only over records that were handed to the handler (see `_batch_handled`).

Written against faust-streaming 0.15.3, mode-streaming 0.7.1 and aiokafka 0.14.0, pinned exactly in
pyproject.toml: `_drain_messages`, `_new_offset`, `_add_gap` and the attributes read here are
internals a later version may change, which tests/adapters/test_framework_internals.py detects.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import aiokafka
from aiokafka.structs import ConsumerRecord
from faust.streams import _current_event
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from faust.types.tuples import ack_lock
from faust.utils.functional import consecutive_numbers
from mode import Service, ServiceT

from app.kafka.end_offsets import confirmed_end_offsets

BatchHandler = Callable[[TP, Sequence[ConsumerRecord]], Awaitable[None]]

# Records handed to a batch handler at once. Small enough that a rebalance, which waits for
# the batch in hand, is not held up; large enough that per-batch costs vanish.
BATCH_SIZE = 256
# How often a worker whose event topics are all it was given checks whether it became ready.
NOT_READY_POLL_SECONDS = 0.05
# faust hard-codes fetch_max_wait_ms=1500. Brokers that hold a fetch until that wait
# expires (Tansu does) would then add up to 1.5 s to every event's latency.
DEFAULT_FETCH_MAX_WAIT_MS = 1500


@dataclass
class ConsumerConfig:
    """What the app tells its consumer: topics whose records skip faust's streams and go to a
    handler a batch at a time (consumed only while `ready()`), and the fetch wait."""

    batch_handlers: dict[str, BatchHandler] = field(default_factory=dict)
    ready: Callable[[], bool] = lambda: True
    fetch_max_wait_ms: int = DEFAULT_FETCH_MAX_WAIT_MS


def consumer_config(app: Any) -> ConsumerConfig:
    """The app's ConsumerConfig (`consumer_config` attribute), or the defaults for a plain app."""
    config = getattr(app, "consumer_config", None)
    return config if isinstance(config, ConsumerConfig) else ConsumerConfig()


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    # While a backlog is being worked off, the fetches that matter are answered from it, and
    # the short wait would only make the broker answer for every idle partition 100 times a
    # second, costing CPU both sides. So a fetch that brought this many records switches the
    # wait to `busy_fetch_max_wait_ms` until one brings fewer.
    busy_fetch_records: int = 2_000
    busy_fetch_max_wait_ms: int = 250

    @property
    def fetch_max_wait_ms(self) -> int:
        return consumer_config(self.app).fetch_max_wait_ms

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer

    async def _fetch_records(self, consumer: aiokafka.AIOKafkaConsumer, active_partitions: set[TP],
                             timeout: float | None = None, max_records: int | None = None) -> Any:
        records = await super()._fetch_records(consumer, active_partitions, timeout=timeout,
                                               max_records=max_records)
        busy = sum(map(len, records.values())) >= self.busy_fetch_records
        fetcher = getattr(consumer, "_fetcher", None)
        if fetcher is not None:
            fetcher._fetch_max_wait_ms = max(self.busy_fetch_max_wait_ms if busy else 0, self.fetch_max_wait_ms)
        return records

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        # Table recovery reads each changelog up to these offsets and then stops: they must not
        # fall short (see app/kafka/end_offsets.py for the broker that makes them).
        ends = await super()._highwaters(partitions)
        if self.consumer.in_transaction:
            return ends
        return cast(Mapping[TP, int], await confirmed_end_offsets(
            partial(self._create_client_consumer, cast(Any, self.transport)), cast(Mapping[Any, int], ends)))


class Consumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._handled: weakref.WeakSet[Message] = weakref.WeakSet()
        # Per stream partition: the last offset handed over in full from a fetch sequence no
        # seek interrupted (or, right after a seek, the offset before the committed one).
        self._last_read: dict[TP, int] = {}
        self._seek_epoch = 0  # bumped when a seek starts and when it ends
        self._seeking = 0
        self._suspended: asyncio.Future[Any] | None = None
        # Batch partitions: the next offset to commit (everything before it was handled), and
        # those whose next fetched record directly follows it (so a jump is a real gap).
        self._handled_to: dict[TP, int] = {}
        self._continuous: set[TP] = set()
        self._batch_idle = asyncio.Event()
        self._batch_idle.set()
        self.config = consumer_config(self.app)

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def fetch_wait_in_use_ms(self) -> int | None:
        """The wait aiokafka's running fetcher puts in its fetch requests (for /health), or None
        before the consumer has started: proof that TRIGGERS_FETCH_MAX_WAIT_MS took effect."""
        running = getattr(self._thread, "_consumer", None)
        fetcher = getattr(running, "_fetcher", None)
        return None if fetcher is None else int(fetcher._fetch_max_wait_ms)

    def caught_up(self, tp: TP) -> bool:
        """Whether every record of `tp` up to the high watermark of the last fetch was handled
        (a batch partition): no backlog is left, so time is now the clock's, not the events'.
        False while not known (before the first fetch, or no committed offset yet)."""
        highwater = self.highwater(tp)
        if highwater is None or highwater < 0:
            return False
        position = self._handled_to.get(tp, self._committed_offset.get(tp))
        return highwater == 0 or (position is not None and position >= highwater)

    # -- 1. acknowledgements --------------------------------------------------------------

    def mark_handled(self, message: Message) -> None:
        self._handled.add(message)

    def ack(self, message: Message) -> bool:
        if not self._skipped_by_rebalance(message) or message in self._handled:
            return bool(super().ack(message))
        with ack_lock:  # settled, so waiting for empty streams ends, but not committable
            message.acked = True
            self._unacked_messages.discard(message)
        return False

    def _skipped_by_rebalance(self, message: Message) -> bool:
        return (not self.app.flow_control.is_active()
                or message.generation_id != self.app.consumer_generation_id)

    # -- seeks and revocations break the fetch sequence --------------------------------------

    async def perform_seek(self) -> None:
        self._seek_started()
        try:
            await super().perform_seek()
        finally:
            self._seek_finished()
        self._continuous.clear()
        # faust keeps the committed offset (the next to read) as each partition's read offset.
        for tp, next_offset in list(self._read_offset.items()):
            if next_offset:
                self._last_read[tp] = next_offset - 1
            else:
                self._last_read.pop(tp, None)

    async def seek(self, partition: TP, offset: int) -> None:
        self._seek_started()
        try:
            await super().seek(partition, offset)
        finally:
            self._seek_finished()
        self._last_read.pop(partition, None)
        self._continuous.discard(partition)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self._seek_epoch += 1  # records in hand belong to the old assignment
        for tp in revoked:
            self._last_read.pop(tp, None)
            self._handled_to.pop(tp, None)
            self._continuous.discard(tp)
        await super().on_partitions_revoked(revoked)

    def _seek_started(self) -> None:
        self._seeking += 1
        self._seek_epoch += 1

    def _seek_finished(self) -> None:
        self._seeking -= 1
        self._seek_epoch += 1

    # -- 2. and 3. from fetched records to the streams ---------------------------------------

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        """faust's loop from fetched records to the streams, with the hand-overs below."""
        try:
            while not (cast(Service, self)._stopped.is_set() or cast(Service, fetcher)._stopped.is_set()):
                self.diag.set_flag(CONSUMER_FETCHING)
                # Before the fetch: a seek that starts after this makes the batch suspect.
                epoch, seeking = self._seek_epoch, self._seeking
                records, active = await self._wait_next_records(1.0)
                await self.sleep(0)  # the fetch can return at once, again and again
                if records and not self.should_stop:
                    await self._hand_over_all(records, active, not seeking and epoch == self._seek_epoch)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _hand_over_all(self, records: Mapping[TP, list[ConsumerRecord]], active: set[TP] | None,
                             in_sequence: bool) -> None:
        generation = self.app.consumer_generation_id
        handlers = self.batch_handlers
        since_yield = 0
        for tp, batch in records.items():
            if not self._flowing(generation):
                return  # a rebalance began: what was fetched is fetched again after it
            if active is not None and tp not in active and tp not in self._buffered_partitions:
                continue
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            handler = handlers.get(tp.topic)
            if handler is not None:
                await self._hand_over_batch(tp, batch, handler, generation, in_sequence)
                continue
            for record in batch:
                since_yield += 1
                if since_yield > 100:
                    await asyncio.sleep(0)
                    since_yield = 0
                if not self._flowing(generation):
                    return
                await self._hand_over(tp, self._to_message(tp, record), self.callback, in_sequence)

    def _flowing(self, generation: int) -> bool:
        return self.flow_active and self.app.consumer_generation_id == generation

    # -- batch partitions -------------------------------------------------------------------

    @property
    def batch_handlers(self) -> dict[str, BatchHandler]:
        """Topic name -> handler, registered on the app before the consumer starts."""
        return self.config.batch_handlers

    def _batches_ready(self) -> bool:
        return self.config.ready()

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        if active_partitions is not None and not self._batches_ready():
            # Not ready (definitions still loading, or unlicensed): leave the records on the
            # broker. Filtered here, on a copy: faust's pause and resume (table recovery) change
            # the set `_get_active_partitions` returns, so that one must stay the real one.
            active_partitions = {tp for tp in active_partitions if tp.topic not in self.batch_handlers}
            if not active_partitions:
                await asyncio.sleep(NOT_READY_POLL_SECONDS)
                return {}
        return await super()._getmany(active_partitions, timeout)

    async def _hand_over_batch(self, tp: TP, records: Sequence[ConsumerRecord], handler: BatchHandler,
                               generation: int, in_sequence: bool) -> None:
        self._batch_idle.clear()
        try:
            for start in range(0, len(records), BATCH_SIZE):
                if not self._flowing(generation):
                    self._continuous.discard(tp)  # the rest of this fetch is dropped
                    return
                chunk = records[start:start + BATCH_SIZE]
                with table_partition(tp):
                    await handler(tp, chunk)
                self._batch_handled(tp, chunk[0].offset, chunk[-1].offset, in_sequence)
                self._n_acked += len(chunk)
            if self._commit_every is not None and self._n_acked >= self._commit_every:
                self._n_acked = 0
                await self.commit()
        finally:
            self._batch_idle.set()

    def _batch_handled(self, tp: TP, first: int, last: int, in_sequence: bool) -> None:
        """Move the commit point over a handled run of records, if nothing before it is missing.

        A run that starts at or before the commit point covers everything up to its last
        record: one fetch returns a contiguous stretch of the log. A run that starts after it
        leaves a hole, believed to be a real gap in the log (a transaction marker, a compacted
        record) only if this partition's fetch sequence is unbroken since the last run."""
        handled, committed = self._handled_to.get(tp), self._committed_offset[tp]
        expected = committed if handled is None else handled if committed is None else max(handled, committed)
        if expected is None or first <= expected or (in_sequence and tp in self._continuous):
            self._handled_to[tp] = max(expected or 0, last + 1)
            if in_sequence:
                self._continuous.add(tp)
        else:
            self._continuous.discard(tp)

    async def wait_empty(self) -> None:
        # A rebalance or shutdown commits after this: let the batch in hand finish first.
        await self._batch_idle.wait()
        await super().wait_empty()

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Iterator[TP]:
        pending = set(super()._filter_tps_with_pending_acks(topics))
        pending.update(tp for tp in self._handled_to
                       if topics is None or tp in topics or tp.topic in topics)
        return iter(pending)

    async def _hand_over(self, tp: TP, message: Message, callback: Callable[[Message], Any],
                         in_sequence: bool = True) -> None:
        offset = message.offset
        if not self.app.topics.acks_enabled_for(message.topic):
            # Changelog records during recovery: faust's rule, a record read twice is skipped.
            read = self._read_offset[tp]
            if read is None or offset >= read:
                await self._deliver(callback, message)
                self._read_offset[tp] = offset
            return
        if self._commit_every is not None and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await self.commit()
        last = self._last_read.get(tp) if in_sequence else None
        if last is not None and offset > last + 1:
            await self._add_gap(tp, last + 1, offset - 1)  # the log has no record there
        if await self._deliver(callback, message) and in_sequence:
            self._last_read[tp] = offset
        else:
            self._last_read.pop(tp, None)  # no gap is believed here until the next seek

    async def _deliver(self, callback: Callable[[Message], Any], message: Message) -> bool:
        """True if the message reached the streams; a rebalance cuts the hand-over short.

        faust waits on four fresh futures per message for this (mode's wait_first); one task
        and one shared waiter for the suspend event do the same for a fraction of the cost."""
        delivery = asyncio.ensure_future(callback(message))
        if not delivery.done():
            await asyncio.wait((delivery, self._suspension()), return_when=asyncio.FIRST_COMPLETED)
        if delivery.done():
            delivery.result()  # a failure in the hand-over propagates, as in faust
            return True
        delivery.cancel()
        return False

    def _suspension(self) -> asyncio.Future[Any]:
        """A future done while `suspend_flow` is set, shared by every hand-over."""
        waiter = self._suspended
        if waiter is None or (waiter.done() and not self.suspend_flow.is_set()):
            waiter = self._suspended = asyncio.ensure_future(self.suspend_flow.wait())
        return waiter

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        # faust's version starts a gap no lower than committed + 1: it reads the committed
        # offset as the last one processed, while it is the next one to read.
        committed = self._committed_offset[tp]
        if committed is not None:
            offset_from = max(offset_from, committed)
        if offset_from <= offset_to:
            gaps = self._gap[tp]
            gaps.addi(offset_from, offset_to + 1)
            await asyncio.sleep(0)
            gaps.merge_overlaps()

    # -- 4. what may be committed ------------------------------------------------------------

    def _new_offset(self, tp: TP) -> int | None:
        if tp.topic in self.batch_handlers:
            return self._handled_to.get(tp)
        acked = self._acked[tp]
        if not acked:
            return None
        gaps = self._gap[tp]
        if gaps:  # offsets with no record count as processed, up to the highest acknowledged
            highest = max(acked)
            covered = sorted(gaps.overlap(0, highest), key=lambda interval: interval.begin)
            if covered:
                filled = [n for interval in covered for n in range(interval.begin, interval.end)]
                acked[:] = set(acked).union(filled)  # sorted below
                gaps.chop(0, max(filled[-1], highest + 1))
        acked.sort()
        committed = self._committed_offset[tp]
        if committed is not None and acked[0] > committed:
            return None  # the next offset to commit was neither processed nor a gap
        batch = next(consecutive_numbers(acked))
        acked[: len(batch)] = []
        self._acked_index[tp].difference_update(batch)
        return int(batch[-1]) + 1


class _PartitionEvent:
    """Stands in for faust's current event while a batch is handled: tables read and write
    the store, and send changelog records, for `message.partition`."""

    def __init__(self, tp: TP) -> None:
        self.message = self
        self.tp = tp
        self.topic = tp.topic
        self.partition = tp.partition


class table_partition:  # noqa: N801 - used as a context manager
    """Table access inside the block goes to `tp`'s partition, as it would inside an agent."""

    def __init__(self, tp: TP) -> None:
        self._event = _PartitionEvent(tp)

    def __enter__(self) -> None:
        self._token = _current_event.set(weakref.ref(self._event))  # type: ignore[arg-type]

    def __exit__(self, *exc: object) -> None:
        _current_event.reset(self._token)
