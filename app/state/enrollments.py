"""Each customer's journey enrollments, as the `enrollments` table stores them."""

from __future__ import annotations

from app.domain.journeys import Enrollment
from app.state.tables import Table, stored


class EnrollmentStore:
    def __init__(self, enrollments: Table) -> None:
        self.enrollments = enrollments

    def get(self, customer_id: str) -> list[Enrollment]:
        return [Enrollment.from_json(e) for e in stored(self.enrollments, customer_id) or []]

    def put(self, customer_id: str, enrollments: list[Enrollment]) -> None:
        self.enrollments[customer_id] = [e.to_json() for e in enrollments]
