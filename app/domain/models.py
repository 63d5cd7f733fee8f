"""Typed models for everything that crosses a boundary: definitions, events, commands."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from croniter import croniter
from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    SecretStr,
    UrlConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from app.domain import limits
from app.domain.durations import Duration

MAX_COOLDOWN_MINUTES = 10 * 366 * 24 * 60
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
_SHORTHAND_CRON = {"daily": "0 0 * * *", "weekly": "0 0 * * 1"}


class Source(StrEnum):
    STREAMING = "streaming"
    CDC = "cdc"
    SCHEMA_TABLE = "schema_table"
    OUTCOME = "outcome"
    SCHEDULED = "scheduled"


class Mode(StrEnum):
    """A trigger's `mode`: `shadow` is evaluated like `live`, in state of its own, and
    performs nothing (its firings go to `triggers.shadow`)."""

    LIVE = "live"
    SHADOW = "shadow"


class Contract(BaseModel):
    """Base for contract models: camelCase on the wire, unknown fields refused."""

    # Only the camelCase names are accepted: `event_type` is a typo, not a synonym.
    model_config = ConfigDict(extra="forbid", frozen=True)


_SOURCE_TEXT = {source: source.value for source in Source}  # `.value` is a slow property


class Deduplication(StrEnum):
    SKIP_IF_ACTIVE = "skip_if_active"
    RESTART = "restart"
    ALLOW_MULTIPLE = "allow_multiple"
    SKIP_IF_EVER_ENROLLED = "skip_if_ever_enrolled"


def refuse(reason: str) -> PydanticCustomError:
    """A validation error whose message is `reason` as written (no "Value error, " prefix)."""
    return PydanticCustomError("definition_rule", "{reason}", {"reason": reason})


# A header name is an RFC 7230 token; a value is visible ASCII with inner spaces or tabs. httpx
# cannot encode other text, and h11 refuses CR, LF and outer whitespace: such a header would
# pass validation and then fail every delivery.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE = re.compile(r"(?:[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?)?")


def _header_name(name: str) -> str:
    if len(name) > limits.MAX_HEADER_NAME_LENGTH:
        raise refuse(f"header name is longer than {limits.MAX_HEADER_NAME_LENGTH} characters")
    if not _HEADER_NAME.fullmatch(name):
        raise refuse("header name must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~)")
    if name.lower() in limits.RESERVED_HEADERS:
        raise refuse(f"header {name!r} is set by the engine or breaks delivery; it cannot be configured")
    return name


def _header_value(value: str) -> str:
    if len(value) > limits.MAX_HEADER_VALUE_LENGTH:
        raise refuse(f"header value is longer than {limits.MAX_HEADER_VALUE_LENGTH} characters")
    if not _HEADER_VALUE.fullmatch(value):
        raise refuse("header value must be printable ASCII without control characters (CR, LF, NUL...) "
                     "or leading or trailing whitespace")
    return value


HttpUrl = Annotated[AnyHttpUrl, UrlConstraints(max_length=limits.MAX_URL_LENGTH)]
HeaderName = Annotated[str, AfterValidator(_header_name)]
HeaderValue = Annotated[str, AfterValidator(_header_value)]
FieldName = Annotated[str, Field(max_length=limits.MAX_FIELD_NAME_LENGTH)]


MAX_PER_SECOND = 100_000  # the largest maxPerSecond of a webhook or a recommendation's delivery


class EnrollJourneyAction(Contract):
    type: Literal["enroll_journey"]
    journey_id: str = Field(alias="journeyId", min_length=1, max_length=limits.MAX_REFERENCE_LENGTH)
    deduplication: Deduplication = Deduplication.SKIP_IF_ACTIVE


class FireRecommendAction(Contract):
    type: Literal["fire_recommend"]
    decision_flow_id: str = Field(alias="decisionFlowId", min_length=1, max_length=limits.MAX_REFERENCE_LENGTH)
    channel: str | None = Field(default=None, max_length=limits.MAX_CHANNEL_LENGTH)
    delivery_url: HttpUrl | None = Field(default=None, alias="deliveryUrl")
    # Requests per second to the deliveryUrl's origin, across all workers.
    max_per_second: int | None = Field(default=None, ge=1, le=MAX_PER_SECOND, strict=True,
                                       alias="maxPerSecond")

    @model_validator(mode="after")
    def _rate_needs_a_url(self) -> FireRecommendAction:
        if self.max_per_second is not None and self.delivery_url is None:
            raise ValueError("maxPerSecond: only allowed together with deliveryUrl")
        return self


class WebhookAction(Contract):
    type: Literal["webhook"]
    url: HttpUrl
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict, max_length=limits.MAX_HEADERS)
    # Never copied into action commands or logs: sinks read it from the definition.
    secret: SecretStr | None = Field(default=None, min_length=1, max_length=limits.MAX_SECRET_LENGTH)
    payload: Any = None
    # Requests per second to the url's origin, across all workers.
    max_per_second: int | None = Field(default=None, ge=1, le=MAX_PER_SECOND, strict=True,
                                       alias="maxPerSecond")

    @field_validator("headers")
    @classmethod
    def _distinct_header_names(cls, headers: dict[str, str]) -> dict[str, str]:
        seen: dict[str, str] = {}
        for name in headers:
            other = seen.setdefault(name.lower(), name)
            if other != name:  # both would be sent: the receiver sees one header twice
                raise refuse(f"{other!r} and {name!r} are the same header (names are case-insensitive)")
        return headers


class UpdateAttributeAction(Contract):
    type: Literal["update_attribute"]
    table: str = Field(default="customers", min_length=1, max_length=limits.MAX_REFERENCE_LENGTH)
    attributes: dict[FieldName, str] = Field(min_length=1, max_length=limits.MAX_ATTRIBUTES)


Action = Annotated[
    EnrollJourneyAction | FireRecommendAction | WebhookAction | UpdateAttributeAction,
    Field(discriminator="type"),
]

# Every action type, read off the union above: a new type is a model added there (and its
# performer in app/actions/), and the topics and messages follow.
ACTION_TYPES: tuple[str, ...] = tuple(
    get_args(model.model_fields["type"].annotation)[0] for model in get_args(get_args(Action)[0]))

FilterScalar = str | int | float | bool | None


def _filter_value(value: Any) -> FilterScalar | list[FilterScalar]:
    # One plain check instead of pydantic's union of five types: one clear error per filter.
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and len(value) > limits.MAX_FILTER_VALUES:
        raise refuse(f"a list of more than {limits.MAX_FILTER_VALUES} values")
    for item in items:
        if isinstance(item, str) and len(item) > limits.MAX_FILTER_TEXT_LENGTH:
            raise refuse(f"text longer than {limits.MAX_FILTER_TEXT_LENGTH} characters")
        if item is not None and not isinstance(item, str | int | float | bool):
            raise refuse("must be a string, number, boolean, null, or a list of these")
    return value  # type: ignore[no-any-return]


FilterValue = Annotated[FilterScalar | list[FilterScalar], PlainValidator(_filter_value)]


class Schedule(Contract):
    cron: str = Field(max_length=limits.MAX_CRON_LENGTH)
    timezone: str = Field(default="UTC", max_length=limits.MAX_TIMEZONE_LENGTH)

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


class TriggerLimit(Contract):
    """A trigger's own `limit`: at most `max` performed firings per customer in the sliding
    `window`, or ever without one."""

    max: int = Field(ge=1, le=1_000_000, strict=True)
    window: Duration | None = None


class CancelOn(Contract):
    """Events that cancel a pending (delayed) firing of the same customer."""

    source: Source
    event_type: str = Field(alias="eventType", min_length=1, max_length=limits.MAX_EVENT_TYPE_LENGTH)
    filters: dict[FieldName, FilterValue] = Field(default_factory=dict, max_length=limits.MAX_FILTERS)
    # Fields that must be present and equal in the pending firing's event and the cancelling one.
    same_fields: list[FieldName] = Field(default_factory=list, alias="sameFields", max_length=limits.MAX_FILTERS)

    @field_validator("source")
    @classmethod
    def _an_event_source(cls, value: Source) -> Source:
        if value is Source.SCHEDULED:
            raise refuse("a tick never cancels: use streaming, cdc, schema_table or outcome")
        return value


class AggregateFn(StrEnum):
    COUNT = "count"
    SUM = "sum"
    MIN = "min"
    MAX = "max"
    AVG = "avg"
    DISTINCT = "distinct"


AGGREGATE_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
AggregateName = Annotated[str, Field(pattern=AGGREGATE_NAME_PATTERN)]


class AggregateDefinition(Contract):
    """A sliding-window aggregate over the customer's events of one source and type.
    `source` and `eventType` default to the trigger's own."""

    fn: AggregateFn
    of: str | None = Field(default=None, min_length=1, max_length=limits.MAX_AGGREGATE_OF_LENGTH)
    window: Duration
    source: Source | None = None
    event_type: str | None = Field(default=None, alias="eventType", min_length=1,
                                   max_length=limits.MAX_EVENT_TYPE_LENGTH)
    filters: dict[FieldName, FilterValue] = Field(default_factory=dict, max_length=limits.MAX_FILTERS)

    @model_validator(mode="after")
    def _of_unless_count(self) -> AggregateDefinition:
        if self.fn is not AggregateFn.COUNT and self.of is None:
            raise ValueError(f"fn {self.fn.value!r} needs `of` (an expression over event, e.g. \"event.amount\")")
        if self.source is Source.SCHEDULED:
            raise ValueError("an aggregate counts events; 'scheduled' ticks are not events of a customer")
        return self


HOLDOUT = "holdout"  # the group of held-out customers; no variant may take the name
MAX_VARIANTS = 8
VariantName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class Variant(Contract):
    name: VariantName
    weight: int = Field(ge=1, le=10_000, strict=True)
    action: Action


class Conversion(Contract):
    """The outcome an experiment measures: an event of the customer within `within` after a firing."""

    source: Source
    event_type: str = Field(alias="eventType", min_length=1, max_length=limits.MAX_EVENT_TYPE_LENGTH)
    filters: dict[FieldName, FilterValue] = Field(default_factory=dict, max_length=limits.MAX_FILTERS)
    within: Duration  # required: a conversion without a window is refused

    @field_validator("source")
    @classmethod
    def _an_event_source(cls, value: Source) -> Source:
        if value is Source.SCHEDULED:
            raise refuse("a tick is not a customer's event: use streaming, cdc, schema_table or outcome")
        return value


class Experiment(Contract):
    """A trigger's `experiment`: a holdout share and weighted variants (app/domain/experiments.py)."""

    holdout_percent: int = Field(default=0, alias="holdoutPercent", ge=0, le=90, strict=True)
    variants: list[Variant] = Field(default_factory=list, max_length=MAX_VARIANTS)
    conversion: Conversion | None = None

    @field_validator("variants")
    @classmethod
    def _distinct_names(cls, value: list[Variant]) -> list[Variant]:
        names = [variant.name for variant in value]
        if HOLDOUT in names:
            raise refuse(f"{HOLDOUT!r} is the held-out group's name; a variant cannot take it")
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise refuse(f"variant names must be unique: {', '.join(map(repr, repeated))} repeated")
        return value


class TriggerDefinition(Contract):
    """A trigger rule exactly as the contract's `triggers.definitions` topic carries it."""

    id: str = Field(pattern=ID_PATTERN)
    name: str = Field(default="", max_length=limits.MAX_NAME_LENGTH)
    enabled: bool = Field(default=True, strict=True)
    source: Source
    event_type: str = Field(alias="eventType", min_length=1, max_length=limits.MAX_EVENT_TYPE_LENGTH)
    filters: dict[FieldName, FilterValue] = Field(default_factory=dict, max_length=limits.MAX_FILTERS)
    conditions: list[str] = Field(default_factory=list, max_length=limits.MAX_CONDITIONS)
    action: Action
    # At most ten years: beyond that datetime arithmetic overflows.
    cooldown_minutes: float = Field(default=0, alias="cooldownMinutes", ge=0, le=MAX_COOLDOWN_MINUTES,
                                    allow_inf_nan=False, strict=True)
    priority: int = Field(default=50, ge=1, le=100, strict=True)
    schedule: Schedule | None = None
    delay: Duration | None = None
    limit: TriggerLimit | None = None
    cancel_on: list[CancelOn] = Field(default_factory=list, alias="cancelOn", max_length=limits.MAX_CANCEL_ON)
    aggregates: dict[AggregateName, AggregateDefinition] = Field(default_factory=dict,
                                                                 max_length=limits.MAX_AGGREGATES)
    mode: Mode = Mode.LIVE
    experiment: Experiment | None = None

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule_shorthand(cls, value: Any) -> Any:
        return {"cron": value} if isinstance(value, str) else value

    # Rules between fields are checked on the later field, so the error names it (`cancelOn: ...`);
    # the fields they read are declared before it.
    @field_validator("delay")
    @classmethod
    def _no_delay_on_ticks(cls, value: Duration | None, info: ValidationInfo) -> Duration | None:
        if value is not None and info.data.get("source") is Source.SCHEDULED:
            raise refuse("not allowed on a scheduled trigger: delay its schedule instead")
        return value

    @field_validator("cancel_on")
    @classmethod
    def _cancel_needs_delay(cls, value: list[CancelOn], info: ValidationInfo) -> list[CancelOn]:
        # A delay that failed its own validation is absent from info.data: reported there, not here.
        if value and "delay" in info.data and info.data["delay"] is None:
            raise refuse("needs a delay: only a pending firing can be cancelled")
        return value

    @field_validator("aggregates")
    @classmethod
    def _no_aggregates_on_ticks(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if value and info.data.get("source") is Source.SCHEDULED:
            raise refuse("not available on a scheduled trigger: a tick is not a customer's event")
        return value

    @model_validator(mode="after")
    def _schedule_only_when_scheduled(self) -> TriggerDefinition:
        if self.source is Source.SCHEDULED and self.schedule is None:
            raise ValueError("a scheduled trigger needs a schedule")
        if self.source is not Source.SCHEDULED and self.schedule is not None:
            raise ValueError("schedule is only allowed when source is 'scheduled'")
        return self

    def public_dict(self) -> dict[str, Any]:
        """The definition as JSON, with the webhook secret masked; the optional lists and
        objects of Part 2 only when used, so older definitions read as they were written."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        for name in ("cancelOn", "aggregates"):
            if not data[name]:
                del data[name]
        return data


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
    # `agg.<name>` when the trigger fired, for a trigger with aggregates (absent otherwise).
    aggregates: dict[str, Any] | None = None
    # The trigger's version (its record's offset on the definitions topic) that decided the
    # firing; absent when evaluated outside the catalogs (a dry run, a backtest of a file).
    definition_version: int | None = Field(default=None, alias="definitionVersion")
    # A shadow trigger's firing: published on `triggers.shadow` only, never performed.
    shadow: bool = False
    # A trigger with an experiment: the customer's group (a variant's name, or `holdout`).
    group: str | None = None

    @property
    def action_type(self) -> str:
        return str(self.action["type"])

    def to_json(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", by_alias=True)
        for optional in ("aggregates", "definitionVersion"):
            if data[optional] is None:
                del data[optional]
        if not data["shadow"]:  # live firings read as they always have
            del data["shadow"]
        if data["group"] is None:
            del data["group"]
        return data

    @property
    def held_out(self) -> bool:
        return self.group == HOLDOUT


def is_valid_id(value: str) -> bool:
    return re.fullmatch(ID_PATTERN, value) is not None
