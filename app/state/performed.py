"""The performed-firings log: which firings each customer's commands of one action type were performed for."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from app.domain import dedup
from app.state.tables import Table, performed_key, stored


class PerformedLog:
    def __init__(self, performed: Table, retention: timedelta, max_per_customer: int,
                 clock: Callable[[], datetime]) -> None:
        self.performed = performed
        self.retention = retention
        self.max_per_customer = max_per_customer
        self.clock = clock

    def contains(self, action_type: str, customer_id: str, firing_id: str) -> bool:
        return dedup.already_performed(stored(self.performed, performed_key(action_type, customer_id)), firing_id)

    def add(self, action_type: str, customer_id: str, firing_id: str) -> None:
        key = performed_key(action_type, customer_id)
        self.performed[key] = dedup.remember(stored(self.performed, key), firing_id, self.clock(),
                                             self.retention, self.max_per_customer)
