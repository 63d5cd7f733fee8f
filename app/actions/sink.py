"""The wrapper around every performer: parse the command, skip a firing performed (or waiting)
before, hand HTTP deliveries to the dispatcher, settle each attempt, dead-letter failures."""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from faust.types import EventT, Message

from app.actions.deadletters import ActionDeadLetters
from app.actions.delivery.dispatch import Dispatcher, HttpRequest, endpoint
from app.actions.delivery.http import Attempt, AttemptResult
from app.actions.endpoint_health import EndpointHealth
from app.actions.performer import Performer, failure_reason, parse_command
from app.domain.delivery import Source, WaitingDelivery, after_attempt, delivery_key
from app.domain.models import ActionCommand
from app.errors import ActionFailed
from app.kafka.records import RawRecord
from app.metrics import Metrics
from app.state.performed import PerformedLog

log = logging.getLogger(__name__)


@dataclass
class SourceRecord:
    """A waiting delivery's command as it was read, for its dead letter."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    timestamp: float = 0.0
    key: bytes | None = None


class Sink:
    """Performs each command of one action type once, however often Kafka delivers it: a
    firing in the performed log, waiting in the deliveries table, or being delivered right
    now, is skipped."""

    def __init__(self, performer: Performer, performed: PerformedLog, dead_letters: ActionDeadLetters,
                 dispatcher: Dispatcher, metrics: Metrics, counters: Counter[str],
                 schedule: tuple[float, ...], endpoint_health: EndpointHealth) -> None:
        self.performer = performer
        self.action_type = performer.action_type
        self.performed = performed
        self.dead_letters = dead_letters
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.counters = counters
        self.schedule = schedule
        self.endpoint_health = endpoint_health
        if performer.delivers_over_http:
            dispatcher.register(self.action_type, self)

    async def on_record(self, message: RawRecord) -> None:
        """For performers that finish within `perform`: the offset commits after the batch."""
        await self._handle(message, acking=False)

    async def on_event(self, event: EventT[Any]) -> None:
        """For performers that may deliver over HTTP: a delivery is in the deliveries table
        before the event is acknowledged, so the table, not the consumer, waits for it."""
        self.dispatcher.acks.begin(event)
        try:
            await self._handle(event.message, acking=True)
        finally:
            self.dispatcher.acks.finish(event)

    async def _handle(self, message: RawRecord | Message, acking: bool) -> None:
        command: ActionCommand | None = None
        try:
            command = parse_command(message.value)
            if self._done_before(command):
                return
            request = await self.performer.perform(command)
            if request is None:
                self._remember(command)
                return
            if not acking:
                raise RuntimeError(f"{self.action_type} delivers over HTTP: consume it with on_event")
            if refused := await self.endpoint_health.refused(request.url):
                raise ActionFailed(refused)
            waiting = WaitingDelivery(self.action_type, command.to_json(), request.body.decode(),
                                      endpoint(request.url), self.dispatcher.clock_ms(),
                                      Source(message.topic, message.partition, message.offset),
                                      max_per_second=request.max_per_second)
            self.dispatcher.submit(message.partition, waiting, request)
        except (ActionFailed, KeyError, TypeError, ValueError) as exc:
            await self.dead_letters.send(self.action_type, message, command, failure_reason(exc))
        except Exception as exc:  # noqa: BLE001 - the safety net
            await self._failed(message, command, exc)

    # -- the dispatcher's side ------------------------------------------------------------------

    def request_for(self, waiting: WaitingDelivery) -> HttpRequest:
        return self.performer.request_for(ActionCommand.model_validate(waiting.command), waiting.body.encode())

    async def refusal(self, waiting: WaitingDelivery) -> str | None:
        """Why a waiting delivery must not be attempted now (its endpoint was disabled meanwhile)."""
        return await self.endpoint_health.refused(waiting.endpoint)

    async def refuse(self, waiting: WaitingDelivery, reason: str) -> None:
        await self._dead_letter(waiting, ActionCommand.model_validate(waiting.command), reason, None)

    async def settle(self, partition: int, waiting: WaitingDelivery, result: AttemptResult) -> None:
        """The one place where an attempt's result is known: the endpoint's health observes
        every attempt, then the delivery is done, rescheduled or dead-lettered."""
        attempt = result.attempt
        outcome = after_attempt(self.schedule, waiting.attempts_made + 1, attempt.status, attempt.error,
                                result.refused, result.retry_after_s, self.dispatcher.clock_ms())
        await self.endpoint_health.observed(waiting.endpoint, result.delivered, attempt.status,
                                            self.endpoint_health.clock(), outcome.reason or result.reason)
        command = ActionCommand.model_validate(waiting.command)
        if outcome.kind == "delivered":
            self.dispatcher.store.remove(waiting.key)
            self._remember(command)
        elif outcome.kind == "retry" and outcome.due_ms is not None:
            later = waiting.after_failure(attempt.to_json(), outcome.due_ms, outcome.reason or "failed")
            self.dispatcher.store.write(later)
            self.dispatcher.store.index(partition, later)
            self.counters[f"{self.action_type}.retries_scheduled"] += 1
        else:
            await self._dead_letter(waiting, command, outcome.reason or "failed", attempt)

    async def unbuildable(self, waiting: WaitingDelivery, exc: Exception) -> None:
        """A waiting delivery whose request cannot be made again (its definition's secret or
        a header it names is gone)."""
        await self._dead_letter(waiting, ActionCommand.model_validate(waiting.command), failure_reason(exc), None)

    async def _dead_letter(self, waiting: WaitingDelivery, command: ActionCommand, reason: str,
                           attempt: Attempt | None) -> None:
        attempts = list(waiting.with_attempts(attempt.to_json()) if attempt is not None else waiting.attempts)
        source = SourceRecord(waiting.source.topic, waiting.source.partition, waiting.source.offset,
                              json.dumps(waiting.command, separators=(",", ":")).encode())
        await self.dead_letters.send(self.action_type, source, command, reason, attempts=attempts)
        self.dispatcher.store.remove(waiting.key)

    # -- replays ----------------------------------------------------------------------------------

    def _done_before(self, command: ActionCommand) -> bool:
        if (self.performed.contains(self.action_type, command.customer_id, command.firing_id)
                or (self.performer.delivers_over_http
                    and (self.dispatcher.running(delivery_key(command.customer_id, command.firing_id))
                         or self.dispatcher.store.contains(command.customer_id, command.firing_id)))):
            self.counters[f"{self.action_type}.replays_skipped"] += 1
            self.metrics.sink_outcomes.labels(self.action_type, "replay_skipped").inc()
            return True
        return False

    def _remember(self, command: ActionCommand) -> None:
        self.performed.add(self.action_type, command.customer_id, command.firing_id)
        self.counters[f"{self.action_type}.performed"] += 1
        self.metrics.sink_outcomes.labels(self.action_type, "performed").inc()

    async def _failed(self, message: RawRecord | Message, command: ActionCommand | None, exc: Exception) -> None:
        """The safety net (see Publisher.record_failed): dead-letter the command, go on.
        Errors of the broker connection are not the command's fault: they propagate."""
        if isinstance(exc, KafkaError) and not isinstance(exc, MessageSizeTooLargeError):
            raise exc
        self.counters[f"{self.action_type}.failures"] += 1
        log.error("action failed unexpectedly; dead-lettered", exc_info=exc,
                  extra={"action": self.action_type, "topic": message.topic, "offset": message.offset})
        await self.dead_letters.send(self.action_type, message, command, f"{type(exc).__name__}: {exc}")
