"""Each customer's journey enrollments, as the `enrollments` table stores them."""

from __future__ import annotations

from app.domain.journeys import Enrollment
from app.state.tables import Table, stored


class EnrollmentStore:
    def __init__(self, enrollments: Table, history: Table) -> None:
        self.enrollments = enrollments
        self.history = history  # customer id -> the journeys ever enrolled in (sorted ids)

    def get(self, customer_id: str) -> list[Enrollment]:
        return [Enrollment.from_json(e) for e in stored(self.enrollments, customer_id) or []]

    def put(self, customer_id: str, enrollments: list[Enrollment]) -> None:
        self.enrollments[customer_id] = [e.to_json() for e in enrollments]

    def ever_enrolled(self, customer_id: str) -> frozenset[str]:
        return frozenset(stored(self.history, customer_id) or [])

    def remember(self, customer_id: str, journey_id: str) -> None:
        ever = self.ever_enrolled(customer_id)
        if journey_id not in ever:
            self.history[customer_id] = sorted(ever | {journey_id})
