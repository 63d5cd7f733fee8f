"""`enroll_journey`: the customer enrolled (or skipped, or restarted) by the journey's deduplication mode."""

from __future__ import annotations

from typing import ClassVar

from app.actions.performer import Performer
from app.domain import journeys
from app.domain.models import ActionCommand, Deduplication
from app.errors import ActionFailed


class EnrollJourney(Performer):
    action_type: ClassVar[str] = "enroll_journey"

    async def perform(self, command: ActionCommand) -> None:
        journey_id = str(command.action["journeyId"])
        journey = self.services.catalogs.journeys.get(journey_id)
        if journey is None:
            raise ActionFailed(f"unknown journey {journey_id!r}")
        now = self.services.clock()
        mode = Deduplication(command.action.get("deduplication", Deduplication.SKIP_IF_ACTIVE))
        enrollments = self.services.enrollments
        state, decision = journeys.enroll(enrollments.get(command.customer_id), journey, mode,
                                          command.firing_id, now, enrollments.ever_enrolled(command.customer_id))
        enrollments.put(command.customer_id, state)
        if decision.status != "skipped":
            enrollments.remember(command.customer_id, journey_id)
        await self.services.publisher.send(self.services.topics.enrollments, command.customer_id, {
            "enrollmentId": decision.enrollment_id, "journeyId": journey_id, "customerId": command.customer_id,
            "status": decision.status, "firingId": command.firing_id, "at": now.isoformat()})
