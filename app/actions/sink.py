"""The wrapper around every performer: parse the command, skip a firing performed before, dead-letter failures."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from faust.types import EventT, Message

from app.actions.deadletters import ActionDeadLetters
from app.actions.delivery.dispatch import Dispatcher
from app.actions.delivery.http import DeliveryResult
from app.actions.endpoint_health import EndpointHealth
from app.actions.performer import Performer, failure_reason, parse_command
from app.domain.models import ActionCommand
from app.errors import ActionFailed
from app.kafka.records import RawRecord
from app.metrics import Metrics
from app.state.performed import PerformedLog

log = logging.getLogger(__name__)


class Sink:
    """Performs each command of one action type once, however often Kafka delivers it: a
    firing in the performed log, or being delivered right now, is skipped."""

    def __init__(self, performer: Performer, performed: PerformedLog, dead_letters: ActionDeadLetters,
                 dispatcher: Dispatcher, metrics: Metrics, counters: Counter[str],
                 endpoint_health: EndpointHealth) -> None:
        self.performer = performer
        self.action_type = performer.action_type
        self.performed = performed
        self.dead_letters = dead_letters
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.counters = counters
        self.endpoint_health = endpoint_health

    async def on_record(self, message: RawRecord) -> None:
        """For performers that finish within `perform`: the offset commits after the batch."""
        await self._handle(message, None)

    async def on_event(self, event: EventT[Any]) -> None:
        """For performers that may deliver over HTTP: the event is acknowledged when its
        work, and every earlier command's in its partition, has ended."""
        self.dispatcher.acks.begin(event)
        if not await self._handle(event.message, event):
            self.dispatcher.acks.finish(event)

    async def _handle(self, message: RawRecord | Message, event: EventT[Any] | None) -> bool:
        """True when a delivery was started: its task settles the command and acknowledges."""
        command: ActionCommand | None = None
        try:
            command = parse_command(message.value)
            if self._done_before(command):
                return False
            request = await self.performer.perform(command)
            if request is None:
                self._remember(command)
                return False
            if event is None:
                raise RuntimeError(f"{self.action_type} delivers over HTTP: consume it with on_event")
            if refused := await self.endpoint_health.refused(request.url):
                raise ActionFailed(refused)
            await self.dispatcher.dispatch(self.action_type, event, command, request,
                                           self.endpoint_health.settling(request.url, self.settle))
            return True
        except (ActionFailed, KeyError, TypeError, ValueError) as exc:
            await self.dead_letters.send(self.action_type, message, command, failure_reason(exc))
        except Exception as exc:  # noqa: BLE001 - the safety net
            await self._failed(message, command, exc)
        return False

    async def settle(self, message: Message, command: ActionCommand, result: DeliveryResult) -> None:
        """A delivery has ended."""
        if result.delivered:
            self._remember(command)
        else:
            await self.dead_letters.send(self.action_type, message, command, result.reason or "failed",
                                         result.attempts)

    def _done_before(self, command: ActionCommand) -> bool:
        if (self.performed.contains(self.action_type, command.customer_id, command.firing_id)
                or self.dispatcher.in_flight(command.firing_id)):
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
