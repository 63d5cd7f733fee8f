"""`actions.deadletter`: the one way an action command that was not performed is reported."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiokafka.errors import MessageSizeTooLargeError
from faust.types import Message

from app.domain.deadletters import RecordTooLarge, action_dead_letter
from app.domain.models import ActionCommand
from app.kafka.publisher import Publisher
from app.kafka.records import RawRecord
from app.metrics import Metrics, reason_code

log = logging.getLogger(__name__)


class ActionDeadLetters:
    def __init__(self, publisher: Publisher, metrics: Metrics, counters: Counter[str],
                 clock: Callable[[], datetime]) -> None:
        self.publisher = publisher
        self.topic = publisher.topics.actions_deadletter
        self.metrics = metrics
        self.counters = counters
        self.clock = clock

    async def send(self, action_type: str, message: RawRecord | Message, command: ActionCommand | None,
                   reason: str, attempts: list[dict[str, Any]] | None = None) -> None:
        """Counted, logged and written; never raises for the record's size."""
        self.counters[f"{action_type}.deadlettered"] += 1
        self.metrics.sink_outcomes.labels(action_type, "deadlettered").inc()
        self.metrics.dead_letters.labels(self.topic, reason_code(reason)).inc()
        log.warning("action dead-lettered", extra={"action": action_type, "reason": reason[:200],
                                                   "firingId": command.firing_id if command else None})
        record = action_dead_letter(
            action_type, reason, self.clock().isoformat(), list(attempts or []),
            command.to_json() if command is not None else None,
            {"topic": message.topic, "partition": message.partition, "offset": message.offset},
            message.value)
        try:
            await self.publisher.send(self.topic, command.customer_id if command else None, record)
        except (RecordTooLarge, MessageSizeTooLargeError, TypeError, ValueError) as exc:
            # Bounded by construction, so this is a bug: say so loudly, and go on.
            self.counters["deadletter_failures"] += 1
            log.error("action dead letter could not be written", exc_info=exc, extra={"action": action_type})
