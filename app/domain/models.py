"""Typed models for everything that crosses a boundary: definitions, events, commands."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from croniter import croniter
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

MAX_COOLDOWN_MINUTES = 10 * 366 * 24 * 60
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
_SHORTHAND_CRON = {"daily": "0 0 * * *", "weekly": "0 0 * * 1"}


class Source(StrEnum):
    STREAMING = "streaming"
    CDC = "cdc"
    SCHEMA_TABLE = "schema_table"
    OUTCOME = "outcome"
    SCHEDULED = "scheduled"


class Contract(BaseModel):
    """Base for contract models: camelCase on the wire, unknown fields refused."""

    # Only the camelCase names are accepted: `event_type` is a typo, not a synonym.
    model_config = ConfigDict(extra="forbid", frozen=True)


_SOURCE_TEXT = {source: source.value for source in Source}  # `.value` is a slow property


class Deduplication(StrEnum):
    SKIP_IF_ACTIVE = "skip_if_active"
    RESTART = "restart"
    ALLOW_MULTIPLE = "allow_multiple"


class EnrollJourneyAction(Contract):
    type: Literal["enroll_journey"]
    journey_id: str = Field(alias="journeyId", min_length=1)
    deduplication: Deduplication = Deduplication.SKIP_IF_ACTIVE


class FireRecommendAction(Contract):
    type: Literal["fire_recommend"]
    decision_flow_id: str = Field(alias="decisionFlowId", min_length=1)
    channel: str | None = None
    delivery_url: AnyHttpUrl | None = Field(default=None, alias="deliveryUrl")


class WebhookAction(Contract):
    type: Literal["webhook"]
    url: AnyHttpUrl
    headers: dict[str, str] = Field(default_factory=dict)
    # Never copied into action commands or logs: sinks read it from the definition.
    secret: SecretStr | None = Field(default=None, min_length=1)
    payload: Any = None


class UpdateAttributeAction(Contract):
    type: Literal["update_attribute"]
    table: str = Field(default="customers", min_length=1)
    attributes: dict[str, str] = Field(min_length=1)


Action = Annotated[
    EnrollJourneyAction | FireRecommendAction | WebhookAction | UpdateAttributeAction,
    Field(discriminator="type"),
]

FilterValue = str | int | float | bool | None


class Schedule(Contract):
    cron: str
    timezone: str = "UTC"

    @field_validator("cron", mode="before")
    @classmethod
    def _expand_shorthand(cls, value: Any) -> Any:
        return _SHORTHAND_CRON.get(value, value) if isinstance(value, str) else value

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(f"not a 5-field cron expression: {value!r}")
        try:  # "0 0 31 2 *" is valid syntax but never fires
            croniter(value).get_next(float)
        except Exception:  # noqa: BLE001 - croniter signals "no such date" several ways
            raise ValueError(f"cron expression {value!r} never fires") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"unknown IANA time zone: {value!r}") from None
        return value


class TriggerDefinition(Contract):
    """A trigger rule exactly as the contract's `triggers.definitions` topic carries it."""

    id: str = Field(pattern=ID_PATTERN)
    name: str = ""
    enabled: bool = Field(default=True, strict=True)
    source: Source
    event_type: str = Field(alias="eventType", min_length=1)
    filters: dict[str, FilterValue | list[FilterValue]] = Field(default_factory=dict)
    conditions: list[str] = Field(default_factory=list)
    action: Action
    # At most ten years: beyond that datetime arithmetic overflows.
    cooldown_minutes: float = Field(default=0, alias="cooldownMinutes", ge=0, le=MAX_COOLDOWN_MINUTES,
                                    allow_inf_nan=False, strict=True)
    priority: int = Field(default=50, ge=1, le=100, strict=True)
    schedule: Schedule | None = None

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule_shorthand(cls, value: Any) -> Any:
        return {"cron": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _schedule_only_when_scheduled(self) -> TriggerDefinition:
        if self.source is Source.SCHEDULED and self.schedule is None:
            raise ValueError("a scheduled trigger needs a schedule")
        if self.source is not Source.SCHEDULED and self.schedule is not None:
            raise ValueError("schedule is only allowed when source is 'scheduled'")
        return self

    def public_dict(self) -> dict[str, Any]:
        """The definition as JSON, with the webhook secret masked."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def priority_band(priority: int) -> str:
    """The contract's name for a priority value."""
    if priority >= 90:
        return "critical"
    if priority >= 70:
        return "high"
    if priority >= 40:
        return "medium"
    return "low"


def iso_text(moment: datetime) -> str:
    """`moment.isoformat()`, at a fifth of the cost for UTC (the time of most events): orjson
    writes the same text then. It would drop the seconds of an offset like +05:30:15."""
    if moment.tzinfo is UTC:
        return orjson.dumps(moment)[1:-1].decode()
    return moment.isoformat()


@dataclass(slots=True)
class Event:
    """One normalised event, whatever topic it came from. Never changed once built.

    A plain dataclass, not frozen: one is built for every event read, and pydantic's
    constructor (or a frozen dataclass's) costs more than the rest of the parsing. Where an
    event crosses a topic it goes as an `EventEnvelope`, which pydantic checks."""

    id: str
    type: str
    customer_id: str
    source: Source
    timestamp: datetime
    fields: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        """The flat JSON object the contract shows, `event.<field>` in expressions."""
        return {
            **self.fields,
            "id": self.id,
            "type": self.type,
            "customerId": self.customer_id,
            "source": _SOURCE_TEXT[self.source],
            "timestamp": iso_text(self.timestamp),
        }

    def to_envelope(self) -> dict[str, Any]:
        return EventEnvelope(id=self.id, type=self.type, customer_id=self.customer_id, source=self.source,
                             timestamp=self.timestamp, fields=self.fields).model_dump(mode="json")


class EventEnvelope(BaseModel):
    """An event as forwarded on an internal topic (re-routed to its customer's partition)."""

    model_config = ConfigDict(frozen=True)

    id: str
    type: str
    customer_id: str
    source: Source
    timestamp: datetime
    fields: dict[str, Any]

    def event(self) -> Event:
        return Event(id=self.id, type=self.type, customer_id=self.customer_id, source=self.source,
                     timestamp=self.timestamp, fields=self.fields)


class ActionCommand(BaseModel):
    """What the engine emits per firing, on `actions.<type>` and `triggers.firings`."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    firing_id: str = Field(alias="firingId")
    trigger_id: str = Field(alias="triggerId")
    priority: int
    customer_id: str = Field(alias="customerId")
    event_id: str = Field(alias="eventId")
    fired_at: datetime = Field(alias="firedAt")
    action: dict[str, Any]
    event: dict[str, Any]

    @property
    def action_type(self) -> str:
        return str(self.action["type"])

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def is_valid_id(value: str) -> bool:
    return re.fullmatch(ID_PATTERN, value) is not None
