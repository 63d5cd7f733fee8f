"""Contact policies (`policies.definitions`) and per-trigger limits: which firings a customer
may receive, decided per customer on event time, in priority order within one event.

A customer's contact record (table `contacts`): {"p": {policy id: [[at ms, firing id], ...]},
"t": {trigger id: [[at ms, firing id], ...]}} — the performed firings each policy and each
trigger limit counted, oldest first. A firing already counted (a replay) is admitted again
and not counted twice.

Shadow triggers (mode shadow) count apart, under "s": {trigger id: {"p": ..., "t": ...}}, the
same shape, holding only that shadow trigger's firings. A shadow firing is checked against
the customer's live counts plus its own trigger's shadow counts — "what would have happened
had it been live" — and counted in its shadow counts only: live firings never see them, so a
shadow trigger never uses up a customer's allowance."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from app.domain import limits
from app.domain.durations import Duration
from app.domain.expressions import Expression, Scope, parse_expression
from app.domain.models import ACTION_TYPES, ID_PATTERN, Contract, TriggerLimit, refuse
from app.errors import ExpressionFailed, InvalidExpression

MAX_LIMITS = 10
# A policy's zone is the customer's: its expression reads the row only (no event: a held
# firing, decided again later, must find the same zone).
ZONE_NAMES = frozenset({"customer"})
_CLOCK_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")

ActionType = Literal["enroll_journey", "fire_recommend", "webhook", "update_attribute"]
assert set(ActionType.__args__) == set(ACTION_TYPES), "ActionType must list every action type"  # type: ignore[attr-defined]


class Limit(Contract):
    max: int = Field(ge=1, le=1_000_000, strict=True)
    window: Duration


class AppliesTo(Contract):
    action_types: list[ActionType] = Field(default_factory=lambda: list(ACTION_TYPES),  # type: ignore[arg-type]
                                           alias="actionTypes",
                                           min_length=1)
    # Critical triggers (90-100) are compliance: never capped or held unless a policy says so.
    max_priority: int = Field(default=89, ge=1, le=100, strict=True, alias="maxPriority")
    trigger_ids: list[str] | None = Field(default=None, alias="triggerIds", max_length=1000)


class During(StrEnum):
    DEFER = "defer"
    DROP = "drop"


class QuietHours(Contract):
    start: str = Field(alias="from")
    end: str = Field(alias="to")
    timezone: str = Field(default="customer.timezone", max_length=limits.MAX_TIMEZONE_LENGTH * 4)
    default_timezone: str = Field(default="UTC", alias="defaultTimezone", max_length=limits.MAX_TIMEZONE_LENGTH)
    during: During = During.DEFER

    @field_validator("start", "end")
    @classmethod
    def _clock_time(cls, value: str) -> str:
        if not _CLOCK_TIME.match(value):
            raise ValueError(f"a time of day as HH:MM (00:00 to 23:59), not {value!r}")
        return value

    @field_validator("default_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if _zone(value) is None:
            raise ValueError(f"unknown IANA time zone: {value!r}")
        return value

    @model_validator(mode="after")
    def _a_window(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("'from' and 'to' are the same time: quiet hours would be empty (or all day)")
        return self


class PolicyDefinition(Contract):
    id: str = Field(pattern=ID_PATTERN)
    name: str = Field(default="", max_length=limits.MAX_NAME_LENGTH)
    enabled: bool = Field(default=True, strict=True)
    applies_to: AppliesTo = Field(default_factory=AppliesTo, alias="appliesTo")
    limits: list[Limit] = Field(default_factory=list, max_length=MAX_LIMITS)
    quiet_hours: QuietHours | None = Field(default=None, alias="quietHours")

    @field_validator("limits")
    @classmethod
    def _limits_that_can_bind(cls, value: list[Limit]) -> list[Limit]:
        by_window = sorted(value, key=lambda limit: limit.window.total_seconds)
        for shorter, longer in zip(by_window, by_window[1:], strict=False):
            if shorter.window.total_seconds == longer.window.total_seconds:
                raise refuse(f"two limits over the same window {shorter.window.to_json()}")
            if shorter.max >= longer.max:
                raise refuse(f"{shorter.max} per {shorter.window.to_json()} can never be reached "
                             f"under {longer.max} per {longer.window.to_json()}")
        return value

    @model_validator(mode="after")
    def _something_to_apply(self) -> PolicyDefinition:
        if not self.limits and self.quiet_hours is None:
            raise ValueError("a policy needs limits, quietHours or both")
        return self


@dataclass(frozen=True)
class CompiledPolicy:
    definition: PolicyDefinition
    timezone: Expression | None  # None: the default zone for every customer
    longest_window_ms: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "longest_window_ms",
                           max((limit.window.millis for limit in self.definition.limits), default=0))

    @property
    def id(self) -> str:
        return self.definition.id

    def applies(self, action_type: str, priority: int, trigger_id: str) -> bool:
        scope = self.definition.applies_to
        return (self.definition.enabled and action_type in scope.action_types and priority <= scope.max_priority
                and (scope.trigger_ids is None or trigger_id in scope.trigger_ids))

    def zone(self, customer: Any) -> ZoneInfo:
        """The customer's time zone by the policy's expression, else the default zone."""
        quiet = self.definition.quiet_hours
        assert quiet is not None
        if self.timezone is not None:
            try:
                found = _zone(self.timezone.evaluate(Scope(event={}, customer=customer, now=_EPOCH)))
            except ExpressionFailed:
                found = None
            if found is not None:
                return found
        return _zone(quiet.default_timezone) or ZoneInfo("UTC")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def compile_policy(definition: PolicyDefinition) -> CompiledPolicy:
    """The policy with its time zone expression parsed; InvalidExpression names it."""
    quiet = definition.quiet_hours
    if quiet is None:
        return CompiledPolicy(definition, None)
    zone_text = quiet.timezone.strip()
    if _zone(zone_text) is not None:  # a zone name, not an expression
        return CompiledPolicy(definition, parse_expression(repr(zone_text), ZONE_NAMES))
    try:
        return CompiledPolicy(definition, parse_expression(zone_text, ZONE_NAMES))
    except InvalidExpression as exc:
        raise InvalidTimezone(f"quietHours.timezone: {exc}") from None


class InvalidTimezone(ValueError):
    """A policy's time zone is neither a zone name nor a valid expression; the text says so."""


def _zone(value: Any) -> ZoneInfo | None:
    if not isinstance(value, str) or not value or len(value) > limits.MAX_TIMEZONE_LENGTH:
        return None
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def quiet_until(quiet: QuietHours, zone: ZoneInfo, at: datetime) -> datetime | None:
    """The end of the quiet window `at` falls in (in UTC), or None when `at` is not quiet.
    `from` is inclusive, `to` exclusive; a window may span midnight (21:00 to 08:00)."""
    local = at.astimezone(zone)
    start, end = _clock(quiet.start), _clock(quiet.end)
    now = local.time()
    if start < end:
        quiet_now = start <= now < end
        end_day = local.date()
    else:
        quiet_now = now >= start or now < end
        end_day = local.date() + timedelta(days=1) if now >= start else local.date()
    if not quiet_now:
        return None
    # In the hour a DST fall-back repeats, the end time exists twice: the first one after `at`.
    ends = [datetime.combine(end_day, end, tzinfo=zone).replace(fold=fold).astimezone(UTC) for fold in (0, 1)]
    later = [moment for moment in ends if moment > at]
    return min(later) if later else max(ends)


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


# -- admission -------------------------------------------------------------------------------

Contacts = dict[str, dict[str, list[list[Any]]]]
# As stored: Contacts, plus "s" (shadow triggers' own Contacts by trigger id) when there are any.
ContactRecord = dict[str, Any]


@dataclass
class Admission:
    """What the policies and limits decided for one event's (or one due time's) firings."""

    admitted: list[Any] = field(default_factory=list)  # ActionCommand, in order
    suppressed: list[tuple[Any, str, str | None]] = field(default_factory=list)  # (command, reason, policy id)
    deferred: list[tuple[Any, int, str]] = field(default_factory=list)  # (command, due ms, policy id)
    contacts: ContactRecord | None = None  # the customer's new record, None when unchanged


def admit(commands: list[Any], policies: list[CompiledPolicy], trigger_limits: dict[str, TriggerLimit],
          contacts: ContactRecord | None, at_ms: int, customer: Any) -> Admission:
    """Decide each firing in order (the engine's: descending priority), so that higher
    priority spends the allowance first. A firing counted before (a replay) is admitted
    again without being counted twice. A shadow firing (`command.shadow`) is checked against
    the live counts plus its trigger's shadow counts, and counted in the latter only."""
    result = Admission()
    state: Contacts = {"p": dict((contacts or {}).get("p", {})), "t": dict((contacts or {}).get("t", {}))}
    shadows: dict[str, Contacts] = dict((contacts or {}).get("s", {}))
    changed = False
    for command in commands:
        applicable = [policy for policy in policies
                      if policy.applies(command.action_type, command.priority, command.trigger_id)]
        limit = trigger_limits.get(command.trigger_id)
        counts = checked = state
        if command.shadow:
            counts = shadows[command.trigger_id] = _own_copy(shadows.get(command.trigger_id))
            checked = shadow_view(state, counts, applicable)
        if _counted(counts, command.firing_id, command.trigger_id, applicable):
            result.admitted.append(command)
            continue
        verdict = _verdict(checked, command, applicable, limit, at_ms, customer)
        if verdict is None:
            _count(counts, command, applicable, limit, at_ms)
            changed = changed or bool(limit) or any(policy.definition.limits for policy in applicable)
            result.admitted.append(command)
        elif verdict[0] == "defer":
            result.deferred.append((command, verdict[1], verdict[2] or ""))
        else:
            result.suppressed.append((command, verdict[0], verdict[2]))
    if changed:
        kept = {trigger_id: own for trigger_id, own in shadows.items() if own["p"] or own["t"]}
        result.contacts = {**state, "s": kept} if kept else dict(state)
    return result


def _own_copy(own: Contacts | None) -> Contacts:
    return {"p": dict((own or {}).get("p", {})), "t": dict((own or {}).get("t", {}))}


def shadow_view(live: Contacts, own: Contacts, applicable: list[CompiledPolicy]) -> Contacts:
    """What a shadow firing is checked against: each applicable policy's live entries plus
    the shadow trigger's own, and the trigger limit's shadow entries alone (the limit of a
    trigger whose shadow state starts empty)."""
    policies = {policy.id: [*live["p"].get(policy.id, []), *own["p"].get(policy.id, [])] for policy in applicable}
    return {"p": policies, "t": own["t"]}


def _counted(state: Contacts, firing_id: str, trigger_id: str, applicable: list[CompiledPolicy]) -> bool:
    lists = [state["t"].get(trigger_id, [])] + [state["p"].get(policy.id, []) for policy in applicable]
    return any(entry[1] == firing_id for entries in lists for entry in entries)


def _verdict(state: Contacts, command: Any, applicable: list[CompiledPolicy], limit: TriggerLimit | None,
             at_ms: int, customer: Any) -> tuple[str, int, str | None] | None:
    """None to admit; ("trigger_limit" | "frequency_cap" | "quiet_hours", 0, policy id) to
    suppress; ("defer", due ms, policy id) to hold until quiet hours end."""
    if limit is not None and _in_window(state["t"].get(command.trigger_id, []), limit.window, at_ms) >= limit.max:
        return ("trigger_limit", 0, None)
    at = datetime.fromtimestamp(at_ms / 1000, tz=UTC)
    for policy in applicable:
        quiet = policy.definition.quiet_hours
        if quiet is None:
            continue
        until = quiet_until(quiet, policy.zone(customer), at)
        if until is not None:
            if quiet.during is During.DROP:
                return ("quiet_hours", 0, policy.id)
            return ("defer", int(until.timestamp() * 1000), policy.id)
    for policy in applicable:
        entries = state["p"].get(policy.id, [])
        for policy_limit in policy.definition.limits:
            if _in_window(entries, policy_limit.window, at_ms) >= policy_limit.max:
                return ("frequency_cap", 0, policy.id)
    return None


def _in_window(entries: list[list[Any]], window: Duration | None, at_ms: int) -> int:
    """Firings counted within one window's length of `at`, before or after it: every sliding
    window that would hold a firing at `at` lies in (at - window, at + window). With events in
    time order nothing is after `at`, so this is the window (at - window, at]; an event older
    than firings already counted is checked against them too, so no window ever holds more
    than `max`. All of them without a window."""
    if window is None:
        return len(entries)
    since, until = at_ms - window.millis, at_ms + window.millis
    return sum(1 for entry in entries if since < entry[0] < until)


def _count(state: Contacts, command: Any, applicable: list[CompiledPolicy], limit: TriggerLimit | None,
           at_ms: int) -> None:
    entry = [at_ms, command.firing_id]
    if limit is not None:
        kept = state["t"].get(command.trigger_id, [])
        if limit.window is not None:  # older entries can no longer count
            kept = [e for e in kept if e[0] > at_ms - limit.window.millis]
        state["t"][command.trigger_id] = sorted([*kept, entry])[-limit.max:] if limit.window is None \
            else sorted([*kept, entry])
    for policy in applicable:
        if policy.definition.limits:
            kept = [e for e in state["p"].get(policy.id, []) if e[0] > at_ms - policy.longest_window_ms]
            state["p"][policy.id] = sorted([*kept, entry])


def explain_policies(action_type: str, priority: int, trigger_id: str, policies: list[CompiledPolicy],
                     limit: TriggerLimit | None, contacts: ContactRecord | None, at_ms: int,
                     customer: Any, shadow: bool = False) -> dict[str, Any]:
    """For a dry run: which policies apply to a firing of this trigger, and whether the
    customer is capped or in quiet hours at `at_ms` — nothing counted. A shadow trigger's
    counts are the live ones plus its own shadow ones, as when it fires."""
    state: Contacts = {"p": (contacts or {}).get("p", {}), "t": (contacts or {}).get("t", {})}
    if shadow:
        state = shadow_view(state, _own_copy((contacts or {}).get("s", {}).get(trigger_id)),
                            [policy for policy in policies if policy.applies(action_type, priority, trigger_id)])
    at = datetime.fromtimestamp(at_ms / 1000, tz=UTC)
    applying = []
    for policy in policies:
        if not policy.applies(action_type, priority, trigger_id):
            continue
        entries = state["p"].get(policy.id, [])
        counts = [(limit_, _in_window(entries, limit_.window, at_ms)) for limit_ in policy.definition.limits]
        quiet = policy.definition.quiet_hours
        until = quiet_until(quiet, policy.zone(customer), at) if quiet is not None else None
        applying.append({
            "policyId": policy.id,
            "limits": [{"max": limit_.max, "window": limit_.window.to_json(), "counted": counted}
                       for limit_, counted in counts],
            "capped": any(counted >= limit_.max for limit_, counted in counts),
            "quietHoursNow": until is not None,
            "quietUntil": until.isoformat() if until is not None else None,
            "during": quiet.during.value if quiet is not None else None})
    report: dict[str, Any] = {"applying": applying}
    if limit is not None:
        counted = _in_window(state["t"].get(trigger_id, []), limit.window, at_ms)
        report["triggerLimit"] = {"max": limit.max, "window": limit.window.to_json() if limit.window else None,
                                  "counted": counted, "reached": counted >= limit.max}
    return report
