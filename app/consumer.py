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

Written against faust-streaming 0.15.3 (pyproject pins the 0.15 series): `_drain_messages`,
`_new_offset` and `_add_gap` are internals that a later series may change.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any, cast

import aiokafka
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from faust.types.tuples import ack_lock
from faust.utils.functional import consecutive_numbers
from mode import Service, ServiceT


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    # faust hard-codes fetch_max_wait_ms=1500. Brokers that hold a fetch until that wait
    # expires (Tansu does) would then add up to 1.5 s to every event's latency.
    fetch_max_wait_ms: int = 1500

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer


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

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

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

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self._seek_epoch += 1  # records in hand belong to the old assignment
        for tp in revoked:
            self._last_read.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    def _seek_started(self) -> None:
        self._seeking += 1
        self._seek_epoch += 1

    def _seek_finished(self) -> None:
        self._seeking -= 1
        self._seek_epoch += 1

    # -- 2. and 3. from fetched records to the streams ---------------------------------------

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        """faust's loop from fetched records to the streams, with the hand-over below."""
        callback = self.callback
        since_yield = 0
        try:
            while not (cast(Service, self)._stopped.is_set() or cast(Service, fetcher)._stopped.is_set()):
                self.diag.set_flag(CONSUMER_FETCHING)
                # Before the fetch: a seek that starts after this makes the batch suspect.
                epoch, seeking = self._seek_epoch, self._seeking
                records = self.getmany(timeout=1.0)
                await self.sleep(0)  # getmany can return at once, again and again
                if not self.should_stop:
                    async for tp, message in records:
                        since_yield += 1
                        if since_yield > 100:
                            await asyncio.sleep(0)
                            since_yield = 0
                        in_sequence = not seeking and epoch == self._seek_epoch
                        await self._hand_over(tp, message, callback, in_sequence)
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
