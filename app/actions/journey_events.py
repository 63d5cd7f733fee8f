"""`journeys.events`: a journey service says an enrollment completed or exited; handled where the customer lives."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from app.domain import journeys
from app.domain.journey_events import JourneyEnd, journey_event_envelope, parse_journey_event, rerouted_journey_event
from app.errors import MalformedEvent
from app.intake.routing import owned_here
from app.kafka.publisher import Publisher
from app.kafka.records import RawRecord
from app.state.enrollments import EnrollmentStore

log = logging.getLogger(__name__)


class JourneyEvents:
    def __init__(self, enrollments: EnrollmentStore, publisher: Publisher, partitions: int,
                 counters: Counter[str], clock: Callable[[], datetime]) -> None:
        self.enrollments = enrollments
        self.publisher = publisher
        self.partitions = partitions
        self.counters = counters
        self.clock = clock

    async def on_record(self, message: RawRecord) -> None:
        """A record not keyed by its customer id in that id's partition goes to the rerouted
        topic once, and comes back to `on_rerouted` where the enrollments are."""
        try:
            end = parse_journey_event(message.value)
            if not owned_here(message, end.customer_id, self.partitions):
                await self.publisher.send(self.publisher.topics.rerouted, end.customer_id,
                                          journey_event_envelope(message.value))
                return
            self.end_enrollment(end)
        except MalformedEvent as exc:
            await self.publisher.dead_letter(message, exc.reason)
        except Exception as exc:  # noqa: BLE001 - the safety net
            await self.publisher.record_failed(message, exc)

    async def on_rerouted(self, data: dict[str, Any]) -> None:
        """Raises MalformedEvent for an envelope this engine did not write (the rerouted
        topic's handler dead-letters it)."""
        self.end_enrollment(rerouted_journey_event(data))

    def end_enrollment(self, end: JourneyEnd) -> None:
        state, ended = journeys.end(self.enrollments.get(end.customer_id), end.journey_id, end.enrollment_id,
                                    self.clock())
        if ended:
            self.counters["journeys.ended"] += len(ended)
            self.enrollments.put(end.customer_id, state)
            log.info("enrollment ended", extra={"customerId": end.customer_id, "journeyId": end.journey_id,
                                                "status": end.status, "count": len(ended)})
