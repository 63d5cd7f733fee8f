"""HTTP deliveries in tasks of their own: per-endpoint slots and backlog, an in-flight bound, in-order acks."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from faust.types import EventT, Message

from app.actions.delivery.acks import InOrderAcks
from app.actions.delivery.http import DeliveryResult
from app.domain.models import ActionCommand
from app.errors import ActionFailed
from app.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpRequest:
    """A POST that completes a command (a webhook, a recommendation's delivery)."""

    url: str
    body: bytes
    secret: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


class Delivery(Protocol):
    """HttpDelivery (app/actions/delivery/http.py), or a fake in tests."""

    async def deliver(self, url: str, body: bytes, firing_id: str, secret: str | None,
                      headers: dict[str, str]) -> DeliveryResult: ...


# Called when a delivery has ended, however it ended: remembers the firing or dead-letters it.
Settle = Callable[[Message, ActionCommand, DeliveryResult], Awaitable[None]]


class EndpointBacklogFull(ActionFailed):
    """The endpoint already holds its backlog of deliveries; the reason names it."""


class Dispatcher:
    """A slow endpoint must hold only its own slots, so each delivery runs in a task of its
    own; the agent waits only when the worker's in-flight bound is reached (bounded memory).
    An event is acknowledged (its offset may commit) when its delivery and every earlier one
    in its partition have ended (see InOrderAcks)."""

    def __init__(self, http: Delivery, metrics: Metrics, max_in_flight: int, per_endpoint_concurrency: int,
                 per_endpoint_backlog: int) -> None:
        self.http = http
        self.metrics = metrics
        self.max_in_flight = max_in_flight
        self.per_endpoint_concurrency = per_endpoint_concurrency
        self.per_endpoint_backlog = per_endpoint_backlog
        self.acks = InOrderAcks()
        self._pending_per_endpoint: Counter[str] = Counter()
        # Per endpoint (scheme, host, port, path): one slow endpoint holds only its own slots.
        self._endpoint_slots: dict[str, asyncio.Semaphore] = {}
        self._in_flight_ids: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight: asyncio.Semaphore | None = None  # made in the running loop

    def backlog(self) -> dict[str, int]:
        """What deliveries hold in memory right now (for /health)."""
        return {"inFlight": sum(self._pending_per_endpoint.values()),
                "endpoints": sum(1 for n in self._pending_per_endpoint.values() if n),
                "unacknowledged": self.acks.waiting()}

    def in_flight(self, firing_id: str) -> bool:
        """A firing whose delivery is running: a replay of its command must not start another."""
        return firing_id in self._in_flight_ids

    async def dispatch(self, action_type: str, event: EventT[Any], command: ActionCommand,
                       request: HttpRequest, settle: Settle) -> None:
        """Start the delivery; `settle` and the event's acknowledgement follow when it ends.
        Raises EndpointBacklogFull, having started nothing."""
        endpoint_ = endpoint(request.url)
        if self._pending_per_endpoint[endpoint_] >= self.per_endpoint_backlog:
            raise EndpointBacklogFull(f"backlog for {endpoint_} is full ({self.per_endpoint_backlog})")
        if self._in_flight is None:
            self._in_flight = asyncio.Semaphore(self.max_in_flight)
        await self._in_flight.acquire()  # bounded memory: the consumer waits here when full
        self._pending_per_endpoint[endpoint_] += 1
        self._in_flight_ids.add(command.firing_id)
        # Created while this event is the stream's current event, so the task's table writes
        # land in this event's partition.
        task = asyncio.ensure_future(self._deliver(action_type, event, command, endpoint_, request, settle))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, action_type: str, event: EventT[Any], command: ActionCommand, endpoint_: str,
                       request: HttpRequest, settle: Settle) -> None:
        try:
            slots = self._endpoint_slots.setdefault(endpoint_, asyncio.Semaphore(self.per_endpoint_concurrency))
            async with slots:
                started = time.perf_counter()
                result = await self.http.deliver(request.url, request.body, command.firing_id, request.secret,
                                                 request.headers)
                self.metrics.delivery_seconds.labels(action_type).observe(time.perf_counter() - started)
            await settle(event.message, command, result)
        except Exception as exc:  # noqa: BLE001 - a delivery bug must not lose the command silently
            log.exception("delivery crashed", extra={"firingId": command.firing_id})
            await settle(event.message, command, DeliveryResult(delivered=False, reason=f"{type(exc).__name__}: {exc}"))
        finally:
            self._pending_per_endpoint[endpoint_] -= 1
            self._in_flight_ids.discard(command.firing_id)
            assert self._in_flight is not None
            self._in_flight.release()
            self.acks.finish(event)


def endpoint(url: str) -> str:
    """Where a delivery goes, for its concurrency slots and in reasons: no userinfo (a
    credential) and no query (its values may be too)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
