"""The maxPerSecond of each origin, as the trigger definitions now say (the smallest wins)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from app.domain.delivery import origin_limits
from app.domain.models import FireRecommendAction, WebhookAction
from app.registry.catalogs import TriggerCatalog

# Definitions change rarely; the limits are worked out again at most this often.
REFRESH_S = 1.0


class OriginLimits:
    def __init__(self, triggers: TriggerCatalog) -> None:
        self.triggers = triggers
        self._limits: dict[str, int] = {}
        self._at = float("-inf")

    def limit(self, origin: str) -> int | None:
        if time.monotonic() - self._at > REFRESH_S:
            self._limits = origin_limits(self._pairs())
            self._at = time.monotonic()
        return self._limits.get(origin)

    def _pairs(self) -> Iterator[tuple[str, int | None]]:
        for trigger in list(self.triggers.items.values()):
            action = trigger.definition.action
            if isinstance(action, WebhookAction):
                yield str(action.url), action.max_per_second
            elif isinstance(action, FireRecommendAction) and action.delivery_url is not None:
                yield str(action.delivery_url), action.max_per_second
