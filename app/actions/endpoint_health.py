"""Every worker's view of webhook endpoints' health: read from `endpoints.health`, changed by
this worker's deliveries, published when an endpoint's state changes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from app.domain.endpoint_health import (
    EndpointState,
    EndpointStatus,
    InvalidEndpointRecord,
    changed,
    observe,
    origin_of,
    outcome_of,
    parse_state,
    refusal,
)
from app.kafka.publisher import Publisher
from app.metrics import Metrics
from app.registry.reader import at_end, rewind
from app.settings import Settings

log = logging.getLogger(__name__)

# Health changes rarely: ten fetches a second are plenty (like the definitions reader).
FETCH_WAIT_MS = 100
# How long a delivery waits for a starting worker to read the topic; then it goes ahead (the
# broker is away, and the delivery will say so itself).
LOAD_WAIT_S = 10.0


class EndpointHealth:
    """Per origin (scheme://host:port): healthy, failing or disabled. The topic is the shared
    truth: every worker follows it from the start, and a worker whose own observation changes
    an endpoint's state publishes the new state (not every attempt). A disabled endpoint's
    deliveries are refused until an operator enables it (`endpoints enable URL`)."""

    def __init__(self, settings: Settings, publisher: Publisher, metrics: Metrics,
                 clock: Callable[[], datetime]) -> None:
        self.settings = settings
        self.topic = publisher.topics.endpoints_health
        self.publisher = publisher
        self.metrics = metrics
        self.clock = clock
        self.disable_after = timedelta(hours=settings.webhook_disable_after_hours)
        self.states: dict[str, EndpointState] = {}
        self.loaded = asyncio.Event()  # set once read up to the end offsets seen at start

    async def refused(self, url: str) -> str | None:
        """Why a delivery to `url` must not be attempted (its endpoint is disabled), or None.
        A worker that has just started waits (a little) until it knows every endpoint's state."""
        if not self.loaded.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.loaded.wait(), LOAD_WAIT_S)
        try:
            return refusal(self.states.get(origin_of(url)))
        except ValueError:
            return None  # not an http(s) URL: the delivery itself says what is wrong

    async def observed(self, url: str, delivered: bool, status: int | None, at: datetime,
                       failure: str | None = None) -> None:
        """A delivery to `url` has ended (`status`: its last HTTP status, if any)."""
        try:
            origin = origin_of(url)
        except ValueError:
            return
        before = self.states.get(origin) or EndpointState(origin=origin)
        after = observe(before, outcome_of(delivered, status), at, self.disable_after, failure)
        self.states[origin] = after
        if changed(before, after):
            log.warning("endpoint %s", after.state.value, extra={"origin": origin, "since": str(after.since),
                                                                 "lastFailure": after.last_failure})
            self._count_disabled()
            try:
                await self.publisher.send(self.topic, origin, after.to_json())
            except Exception:  # noqa: BLE001 - the delivery's own outcome must still be settled once
                # This worker acts on the new state; the others learn it at the next change.
                log.exception("endpoint state not published", extra={"origin": origin})

    def disabled_count(self) -> int:
        return sum(1 for state in self.states.values() if state.state is EndpointStatus.DISABLED)

    def apply(self, origin: str, value: bytes | None) -> None:
        """One record of the topic: the latest state of `origin` (a tombstone forgets it)."""
        if value is None:
            self.states.pop(origin, None)
        else:
            try:
                self.states[origin] = parse_state(origin, value)
            except InvalidEndpointRecord as exc:
                log.warning("endpoint state ignored", extra={"origin": origin, "error": str(exc)[:300]})
        self._count_disabled()

    async def follow(self) -> None:
        """Tail the topic outside any consumer group for as long as the worker runs."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap_list, group_id=None,
                                    enable_auto_commit=False, fetch_max_wait_ms=FETCH_WAIT_MS)
        await consumer.start()
        try:
            ends = await rewind(consumer, [self.topic])
            while True:
                try:
                    await self._read_once(consumer, ends)
                except KafkaError as exc:  # the broker away: keep what is known, ask again
                    log.warning("endpoint health not read", extra={"error": repr(exc)})
                    await asyncio.sleep(1)
        finally:
            await consumer.stop()

    async def _read_once(self, consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> None:
        for records in (await consumer.getmany(timeout_ms=500)).values():
            for record in records:
                if record.key is not None:
                    self.apply(record.key.decode("utf-8", "replace"), record.value)
        if not self.loaded.is_set() and await at_end(consumer, ends):
            self.loaded.set()
            log.info("endpoint health loaded", extra={"disabled": self.disabled_count()})

    def _count_disabled(self) -> None:
        self.metrics.endpoints_disabled.set(self.disabled_count())
