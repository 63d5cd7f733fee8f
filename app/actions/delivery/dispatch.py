"""HTTP deliveries in tasks of their own, from the deliveries table: per-endpoint slots, an
in-flight bound, per-origin rate shares; a delivery that cannot start at once waits in the table."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

from faust.types import TP

from app.actions.delivery.acks import InOrderAcks
from app.actions.delivery.http import Attempt, AttemptResult
from app.actions.delivery.store import DeliveryStore, Lane, lane
from app.domain.delivery import TokenBucket, WaitingDelivery, origin, worker_share
from app.kafka.consumer import table_partition
from app.metrics import Metrics

log = logging.getLogger(__name__)

# Longer waits for a rate token are left to the clock's pass.
WAKE_WITHIN_MS = 5_000


@dataclass(frozen=True)
class HttpRequest:
    """A POST that completes a command (a webhook, a recommendation's delivery)."""

    url: str
    body: bytes
    secret: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    max_per_second: int | None = None


class Delivery(Protocol):
    """HttpDelivery (app/actions/delivery/http.py), or a fake in tests."""

    async def attempt(self, url: str, body: bytes, firing_id: str, secret: str | None,
                      headers: dict[str, str], number: int) -> AttemptResult: ...


class Settler(Protocol):
    """The Sink of an action type: rebuilds a waiting delivery's request (the secret and
    headers from the definition as it is now) and settles each attempt's result."""

    def request_for(self, waiting: WaitingDelivery) -> HttpRequest: ...

    async def settle(self, partition: int, waiting: WaitingDelivery, result: AttemptResult) -> None: ...

    async def refusal(self, waiting: WaitingDelivery) -> str | None: ...

    async def refuse(self, waiting: WaitingDelivery, reason: str) -> None: ...

    async def unbuildable(self, waiting: WaitingDelivery, exc: Exception) -> None: ...


@dataclass(frozen=True)
class Limits:
    max_in_flight: int
    per_endpoint: int  # at most half of max_in_flight: one endpoint never takes every slot


def slot_limits(max_in_flight: int, per_endpoint_concurrency: int) -> Limits:
    return Limits(max_in_flight, max(1, min(per_endpoint_concurrency, max_in_flight // 2)))


class Dispatcher:
    """A slow endpoint must hold only its own slots: each attempt runs in a task of its own,
    and a delivery that finds its endpoint's slots, the worker's in-flight bound or its
    origin's rate used up waits in the deliveries table (parked), its command acknowledged;
    the clock's pass (`pump_all`) and every finished attempt start what is due. Memory stays
    bounded whatever waits: the table is on disk, the index holds (due ms, key)."""

    def __init__(self, http: Delivery, store: DeliveryStore, metrics: Metrics, limits: Limits,
                 origin_limit: Callable[[str], int | None], partitions_share: Callable[[], tuple[int, int]],
                 topic_of: Callable[[str], str], clock_ms: Callable[[], int], counters: Counter[str],
                 index_ready: Callable[[], bool] = lambda: True) -> None:
        self.http = http
        self.store = store
        self.metrics = metrics
        self.limits = limits
        self.origin_limit = origin_limit
        self.partitions_share = partitions_share  # (assigned, total) partitions of the actions topics
        self.topic_of = topic_of
        self.clock_ms = clock_ms
        # False while a rebalance is under way or the index is not yet rebuilt for it: a finished
        # attempt then starts nothing (the partition may be gone); the clock's pass catches up.
        self.index_ready = index_ready
        self.acks = InOrderAcks()
        self.counters = counters
        self._settlers: dict[str, Settler] = {}
        self._busy: Counter[str] = Counter()  # attempts running per endpoint
        self._running: set[str] = set()  # keys of deliveries with an attempt running
        self._buckets: dict[str, TokenBucket] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._wakes: set[Lane] = set()  # lanes with a wake-up pending

    def register(self, action_type: str, settler: Settler) -> None:
        self._settlers[action_type] = settler

    def backlog(self) -> dict[str, int]:
        """For /health: attempts running, and deliveries waiting in the table (`parked`: due,
        waiting for a slot or a rate token; `waiting`: every indexed one, retries included)."""
        return {"inFlight": len(self._running),
                "endpoints": sum(1 for n in self._busy.values() if n),
                "unacknowledged": self.acks.waiting(),
                "waiting": self.store.pending,
                "parked": self.store.due_count(self.clock_ms())}

    def running(self, key: str) -> bool:
        return key in self._running

    def submit(self, partition: int, waiting: WaitingDelivery, request: HttpRequest) -> None:
        """A new delivery: stored first (the command is acknowledged once this returns, so a
        crash from here on finds it in the table), then started, or left parked."""
        self.store.write(waiting)
        lane_ = lane(partition, waiting.endpoint)
        next_due = self.store.next_due(lane_)
        queued = next_due is not None and next_due <= waiting.due_ms  # earlier ones go first
        if not queued and self._take_capacity(waiting, waiting.due_ms) is None:
            self._start(partition, waiting, request)
            return
        self.counters[f"{waiting.action_type}.deferred"] += 1
        self.store.index(partition, waiting)

    def pump_all(self) -> None:
        """The clock's pass: start every due delivery that may start now."""
        now_ms = self.clock_ms()
        # The longest-waiting lane first: lanes sharing an origin's rate take turns.
        for lane_ in sorted(self.store.heaps, key=lambda lane_: self.store.next_due(lane_) or 0):
            self.pump(lane_, now_ms)

    def pump_endpoint(self, endpoint_: str, now_ms: int) -> None:
        """A slot of `endpoint_` is free: its lanes in every partition, the longest-waiting
        first (the finished attempt's own lane may have nothing parked while others do; left to
        the clock's pass, the slot would idle until then)."""
        lanes = [lane_ for lane_ in self.store.heaps if lane_[1] == endpoint_]
        for lane_ in sorted(lanes, key=lambda lane_: self.store.next_due(lane_) or 0):
            if self._busy[endpoint_] >= self.limits.per_endpoint or len(self._running) >= self.limits.max_in_flight:
                return
            self.pump(lane_, now_ms)

    def pump(self, lane_: Lane, now_ms: int) -> None:
        partition, _ = lane_
        while True:
            key = self.store.pop_one(lane_, now_ms)
            if key is None:
                return
            if key in self._running:
                continue  # indexed again by a rebuild while its attempt runs: it indexes itself after
            with table_partition(TP(self.topic_of("webhook"), partition)):
                waiting = self.store.get(key)
            if waiting is None or waiting.due_ms > now_ms:
                continue  # delivered, dead-lettered, or due later (a newer entry says when)
            wait_ms = self._take_capacity(waiting, now_ms)
            if wait_ms is not None:
                self.store.push(lane_, waiting.due_ms, key)  # first in line still
                if wait_ms:
                    self._wake_later(lane_, wait_ms)
                return
            settler = self._settlers[waiting.action_type]
            try:
                request = settler.request_for(waiting)
            except Exception as exc:  # noqa: BLE001 - the definition changed: the settler dead-letters
                self._release(waiting)
                self._spawn(partition, waiting, settler.unbuildable(waiting, exc))
                continue
            self._start(partition, waiting, request)

    def _take_capacity(self, waiting: WaitingDelivery, now_ms: int) -> int | None:
        """Reserve a slot (and a rate token): None when reserved; else, reserving nothing, how
        long until the rate allows one (0: waiting for a slot, which a finished attempt frees)."""
        if len(self._running) >= self.limits.max_in_flight:
            return 0
        if self._busy[waiting.endpoint] >= self.limits.per_endpoint:
            return 0
        bucket = self._bucket(waiting)
        if bucket is not None and not bucket.take(now_ms):
            return max(1, bucket.wait_ms(now_ms))
        self._busy[waiting.endpoint] += 1
        self._running.add(waiting.key)
        return None

    def _wake_later(self, lane_: Lane, wait_ms: int) -> None:
        """A lane held back by its origin's rate is looked at again when the next token is due,
        not only at the clock's next pass: the rate is then used in full."""
        if lane_ in self._wakes or wait_ms > WAKE_WITHIN_MS:
            return
        self._wakes.add(lane_)

        def wake() -> None:
            self._wakes.discard(lane_)
            if self.index_ready():
                self.pump(lane_, self.clock_ms())

        asyncio.get_running_loop().call_later(wait_ms / 1000, wake)

    def _bucket(self, waiting: WaitingDelivery) -> TokenBucket | None:
        origin_ = origin(waiting.endpoint)
        limit = self.origin_limit(origin_) or waiting.max_per_second
        if limit is None:
            return None
        assigned, total = self.partitions_share()
        share = worker_share(limit, assigned, total)
        bucket = self._buckets.get(origin_)
        if bucket is None:
            bucket = self._buckets[origin_] = TokenBucket(share)
        elif bucket.rate != share:
            bucket.set_rate(share)  # rebalanced, or the definition changed
        return bucket

    def _release(self, waiting: WaitingDelivery) -> None:
        self._busy[waiting.endpoint] -= 1
        if not self._busy[waiting.endpoint]:
            del self._busy[waiting.endpoint]
        self._running.discard(waiting.key)

    def _start(self, partition: int, waiting: WaitingDelivery, request: HttpRequest) -> None:
        self._spawn(partition, waiting, self._attempt(partition, waiting, request))

    def _spawn(self, partition: int, waiting: WaitingDelivery, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(_in_partition(TP(self.topic_of(waiting.action_type), partition), work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _attempt(self, partition: int, waiting: WaitingDelivery, request: HttpRequest) -> None:
        number = waiting.attempts_made + 1
        settler = self._settlers[waiting.action_type]
        try:
            if refused := await settler.refusal(waiting):  # disabled while it waited
                await settler.refuse(waiting, refused)
                return
            started = time.perf_counter()
            try:
                result = await self.http.attempt(request.url, request.body, waiting.firing_id, request.secret,
                                                 request.headers, number)
            except Exception as exc:  # noqa: BLE001 - a client bug counts as a failed attempt, retried
                log.exception("delivery attempt crashed", extra={"firingId": waiting.firing_id})
                result = AttemptResult(Attempt(number, None, f"{type(exc).__name__}: {exc}", 0.0))
            self.metrics.delivery_seconds.labels(waiting.action_type).observe(time.perf_counter() - started)
            await settler.settle(partition, waiting, result)
        except Exception:  # noqa: BLE001 - it stays in the table and is tried again after a restart
            log.exception("settling a delivery failed", extra={"firingId": waiting.firing_id})
        finally:
            self._release(waiting)
            if self.index_ready():
                try:
                    self.pump_endpoint(waiting.endpoint, self.clock_ms())
                except Exception:  # noqa: BLE001 - the clock's pass tries again
                    log.exception("starting the next parked delivery failed")


async def _in_partition(tp: TP, work: Awaitable[None]) -> None:
    """The task's table writes (the deliveries table, the performed log) land in its partition.
    Entered inside the task: the context holds its stand-in event only weakly, so it must live
    as long as the work does."""
    with table_partition(tp):
        await work


def endpoint(url: str) -> str:
    """Where a delivery goes, for its concurrency slots and in reasons: no userinfo (a
    credential) and no query (its values may be too)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def now_ms() -> int:
    return time.time_ns() // 1_000_000
