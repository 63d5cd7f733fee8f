"""Durations as the contract writes them: an object with exactly one of `seconds`, `minutes`,
`hours`, `days`, a positive integer."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Windows and delays: beyond 90 days a per-customer state would outlive any sensible retention,
# and a pending firing would outlive most definitions.
MAX_DURATION = timedelta(days=90)

_UNITS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}


class Duration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seconds: int | None = Field(default=None, gt=0, strict=True)
    minutes: int | None = Field(default=None, gt=0, strict=True)
    hours: int | None = Field(default=None, gt=0, strict=True)
    days: int | None = Field(default=None, gt=0, strict=True)

    @model_validator(mode="after")
    def _exactly_one_unit(self) -> Duration:
        given = [unit for unit in _UNITS if getattr(self, unit) is not None]
        if len(given) != 1:
            raise ValueError("a duration has exactly one of seconds, minutes, hours, days "
                             f"(a positive integer), e.g. {{\"minutes\": 30}}; got {len(given)}")
        if self.total_seconds > MAX_DURATION.total_seconds():
            raise ValueError(f"at most {MAX_DURATION.days} days")
        return self

    @property
    def total_seconds(self) -> int:
        return sum((getattr(self, unit) or 0) * factor for unit, factor in _UNITS.items())

    @property
    def millis(self) -> int:
        return self.total_seconds * 1000

    def as_timedelta(self) -> timedelta:
        return timedelta(seconds=self.total_seconds)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)
