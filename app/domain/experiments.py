"""Experiments: which group a customer is in, the conversion windows a firing opens, which
firings an outcome event converts, and a report's counts per group.

Assignment. The group of a customer in a trigger's experiment is a function of (trigger id,
customer id) alone: SHA-256 of `"<triggerId>\\x00<customerId>"` (UTF-8), its first 8 bytes
as a big-endian integer, modulo 10,000: a bucket in 0..9999. The holdout takes buckets
0 .. holdoutPercent*100 - 1; the other buckets are split between the variants in their
declared order by cumulative weight. So the same customer lands in the same group on every
event, on every worker, after every restart, while the experiment is unchanged. Changing the
holdout share or the weights moves the boundaries: customers whose bucket lies between an old
and a new boundary change group (raising holdoutPercent from 10 to 20 holds out the customers
of buckets 1000..1999, who were in the first variant). Renaming a variant renames its group;
adding a variant at the end takes customers from the others, as weights say.

Without `variants` the trigger's own action is the single variant, named `default`.

Conversion windows. A firing or held-out firing of a trigger whose experiment has a
`conversion` opens a window [firing time, firing time + within] for its customer. The first
qualifying event of that customer inside the window converts it, once: each open firing of the
trigger is converted by the first qualifying event within its window (one event may convert
several open firings of the trigger, each once). A converted window is kept until it expires,
so a redelivered event converts nothing twice. Windows past their end are dropped whenever the
customer's windows are touched, and a customer keeps at most MAX_OPEN_WINDOWS (the oldest go
first)."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from app.domain.models import HOLDOUT, Action, Experiment

BUCKETS = 10_000
DEFAULT_VARIANT = "default"  # the group of live firings of an experiment without variants
MAX_OPEN_WINDOWS = 100  # per customer, across triggers


def bucket(trigger_id: str, customer_id: str) -> int:
    digest = hashlib.sha256(f"{trigger_id}\x00{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def assign(experiment: Experiment, trigger_id: str, customer_id: str) -> str:
    """The customer's group: `holdout`, a variant's name, or `default` without variants."""
    position = bucket(trigger_id, customer_id)
    held = experiment.holdout_percent * 100
    if position < held:
        return HOLDOUT
    if not experiment.variants:
        return DEFAULT_VARIANT
    total = sum(variant.weight for variant in experiment.variants)
    # The remaining buckets scaled onto 0..total-1, then the variant whose weight covers it.
    point = (position - held) * total // (BUCKETS - held)
    cumulative = 0
    for variant in experiment.variants:
        cumulative += variant.weight
        if point < cumulative:
            return variant.name
    return experiment.variants[-1].name  # unreachable: point < total


def variant_action(experiment: Experiment, group: str) -> Action | None:
    """The action a variant performs; None for `holdout`, `default` or an unknown name."""
    return next((variant.action for variant in experiment.variants if variant.name == group), None)


@dataclass(frozen=True, slots=True)
class Window:
    """One firing's conversion window, as the customer's record keeps it."""

    firing_id: str
    trigger_id: str
    group: str
    opened_ms: int
    until_ms: int
    converted: bool = False

    def to_json(self) -> list[Any]:
        return [self.firing_id, self.trigger_id, self.group, self.opened_ms, self.until_ms, int(self.converted)]

    @classmethod
    def from_json(cls, item: Sequence[Any]) -> Window:
        firing_id, trigger_id, group, opened_ms, until_ms, converted = item
        return cls(firing_id, trigger_id, group, opened_ms, until_ms, bool(converted))


def open_windows(windows: Sequence[Window], opened: Iterable[Window], now_ms: int) -> list[Window]:
    """The customer's windows with `opened` added: a firing already open (its event read
    again) keeps its record, expired ones go, and at most MAX_OPEN_WINDOWS remain."""
    kept = {window.firing_id: window for window in windows if window.until_ms >= now_ms}
    for window in opened:
        kept.setdefault(window.firing_id, window)
    ordered = sorted(kept.values(), key=lambda window: window.opened_ms)
    return ordered[-MAX_OPEN_WINDOWS:]


def convert(windows: Sequence[Window], trigger_ids: frozenset[str] | set[str],
            event_ms: int) -> tuple[list[Window], list[Window]]:
    """(the windows after the event, the windows it converts): every open, unconverted
    window of the given triggers whose span holds `event_ms`. Expired windows are dropped."""
    after: list[Window] = []
    converted: list[Window] = []
    for window in windows:
        if window.until_ms < event_ms:
            continue
        if (not window.converted and window.trigger_id in trigger_ids
                and window.opened_ms <= event_ms):
            window = Window(window.firing_id, window.trigger_id, window.group, window.opened_ms,
                            window.until_ms, converted=True)
            converted.append(window)
        after.append(window)
    return after, converted


def conversion_record(window: Window, customer_id: str, event_id: str, converted_at: str) -> dict[str, Any]:
    """What `triggers.conversions` carries for one converted firing."""
    return {"firingId": window.firing_id, "triggerId": window.trigger_id, "group": window.group,
            "customerId": customer_id, "eventId": event_id, "convertedAt": converted_at}


@dataclass
class GroupCounts:
    firings: int = 0
    conversions: int = 0

    @property
    def rate(self) -> float | None:
        return self.conversions / self.firings if self.firings else None


def count_groups(firings: Iterable[tuple[str, str]], conversions: Iterable[str]) -> dict[str, GroupCounts]:
    """Per group, firings and converted firings. `firings`: (firingId, group) of the live and
    held-out firings in range, each firingId counted once (a replayed firing is one firing);
    `conversions`: the firingIds converted (counted once each, and only for firings in range)."""
    group_of: dict[str, str] = {}
    for firing_id, group in firings:
        group_of.setdefault(firing_id, group)
    counts: dict[str, GroupCounts] = {}
    for group, n in Counter(group_of.values()).items():
        counts[group] = GroupCounts(firings=n)
    for firing_id in set(conversions):
        if firing_id in group_of:
            counts[group_of[firing_id]].conversions += 1
    return dict(sorted(counts.items(), key=lambda item: (item[0] != HOLDOUT, item[0])))
