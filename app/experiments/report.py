"""A trigger's experiment report: its firings (`triggers.firings`), held-out firings
(`triggers.holdout`) and conversions (`triggers.conversions`) read from the topics by a
short-lived consumer without a group, counted per group, with the lift of each group against
the holdout and its 95% confidence interval.

The interval is statsmodels' `confint_proportions_2indep` (a well-kept, widely reviewed
implementation): for the difference of rates, method "newcomb" (Newcomb's hybrid score
interval built from two Wilson intervals): it keeps its coverage with few conversions and
rates near 0 or 1, where the Wald interval is too narrow and collapses to zero width at 0
conversions; for the relative lift (ratio of rates − 1), method "log-adjusted" (the log
ratio with 0.5 added to zero counts, so a holdout without conversions still gives an interval,
unbounded above when it must be)."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import version
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from statsmodels.stats.proportion import confint_proportions_2indep

from app.domain.experiments import GroupCounts, count_groups
from app.domain.models import HOLDOUT
from app.domain.replay import parse_time
from app.errors import TriggerEngineError
from app.kafka.end_offsets import confirmed_end_offsets
from app.registry.reader import rewind
from app.settings import Settings
from app.topics import Topics

READ_TIMEOUT_S = 60.0  # the whole read: a report never hangs on a broker that stops answering
METHOD_DIFFERENCE = "newcomb"
METHOD_RATIO = "log-adjusted"


class ReportUnavailable(TriggerEngineError):
    """The topics could not be read to their end in time."""


@dataclass
class ExperimentRecords:
    """What the topics hold for one trigger: (firingId, group, firedAt) and converted firingIds."""

    firings: list[tuple[str, str, datetime]] = field(default_factory=list)
    conversions: list[str] = field(default_factory=list)


def lift(group: GroupCounts, holdout: GroupCounts) -> dict[str, Any] | None:
    """The group's rate against the holdout's: difference and relative, each with its 95%
    interval; None without a holdout to compare with (or a group without firings)."""
    if group.rate is None or holdout.rate is None:
        return None
    low, high = confint_proportions_2indep(group.conversions, group.firings, holdout.conversions, holdout.firings,
                                           method=METHOD_DIFFERENCE, compare="diff", alpha=0.05)
    result: dict[str, Any] = {"difference": group.rate - holdout.rate,
                              "differenceCi95": [_number(low), _number(high)]}
    if holdout.rate > 0:
        result["relative"] = group.rate / holdout.rate - 1
    else:
        result["relative"] = None  # no rate to divide by: the relative lift is undefined
    ratio_low, ratio_high = confint_proportions_2indep(group.conversions, group.firings, holdout.conversions,
                                                       holdout.firings, method=METHOD_RATIO, compare="ratio",
                                                       alpha=0.05)
    result["relativeCi95"] = [_number(ratio_low - 1), _number(ratio_high - 1)]
    return result


def _number(value: float) -> float | None:
    """A JSON number, or None for an unbounded end."""
    as_float = float(value)
    return as_float if math.isfinite(as_float) else None


def build_report(trigger_id: str, since: datetime | None, records: ExperimentRecords) -> dict[str, Any]:
    in_range = [(firing_id, group) for firing_id, group, fired_at in records.firings
                if since is None or fired_at >= since]
    counts = count_groups(in_range, records.conversions)
    holdout = counts.get(HOLDOUT)
    groups = []
    for name, group in counts.items():
        entry: dict[str, Any] = {"group": name, "firings": group.firings, "conversions": group.conversions,
                                 "conversionRate": group.rate}
        if name != HOLDOUT:
            entry["lift"] = lift(group, holdout) if holdout is not None else None
        groups.append(entry)
    report: dict[str, Any] = {
        "triggerId": trigger_id, "since": since.isoformat() if since else None, "groups": groups,
        "interval": {"level": 0.95, "library": f"statsmodels {version('statsmodels')}",
                     "function": "confint_proportions_2indep", "difference": METHOD_DIFFERENCE,
                     "relative": METHOD_RATIO}}
    if not groups:
        report["message"] = (f"no firings of {trigger_id!r}" + (f" since {since.isoformat()}" if since else "")
                             + " on the firings and holdout topics")
    return report


async def read_records(settings: Settings, topics: Topics, trigger_id: str,
                       timeout_s: float = READ_TIMEOUT_S) -> ExperimentRecords:
    """Every firing, held-out firing and conversion of the trigger up to the topics' ends
    when the read starts. Raises ReportUnavailable when that takes longer than `timeout_s`."""
    records = ExperimentRecords()
    try:
        async with asyncio.timeout(timeout_s):
            async for topic, value in _read(settings, [topics.firings, topics.holdout, topics.conversions]):
                if value.get("triggerId") != trigger_id or not isinstance(value.get("firingId"), str):
                    continue
                if topic == topics.conversions:
                    records.conversions.append(value["firingId"])
                elif (fired_at := parse_time(value.get("firedAt"))) is not None:
                    records.firings.append((value["firingId"], str(value.get("group") or ""), fired_at))
    except TimeoutError:
        raise ReportUnavailable(f"the experiment topics could not be read within {timeout_s:g} s") from None
    return records


async def _read(settings: Settings, names: Iterable[str]) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    def new_consumer() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_list, group_id=None, enable_auto_commit=False)

    consumer = new_consumer()
    consumer._fetch_max_wait_ms = 50
    await consumer.start()
    try:
        # The broker's end offsets can be short (Tansu): confirmed by a fetch.
        ends = await confirmed_end_offsets(new_consumer, await rewind(consumer, names))
        remaining = {tp: end for tp, end in ends.items() if end > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, batch in batches.items():
                for record in batch:
                    if record.offset < remaining.get(tp, 0) and (value := _decoded(record.value)) is not None:
                        yield record.topic, value
            for tp in list(remaining):
                if await consumer.position(TopicPartition(tp.topic, tp.partition)) >= remaining[tp]:
                    del remaining[tp]
    finally:
        await consumer.stop()


def _decoded(raw: bytes | None) -> dict[str, Any] | None:
    try:
        value = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None




def report_text(report: dict[str, Any]) -> str:
    """The report as the CLI prints it."""
    lines = [f"experiment report: {report['triggerId']}" + (f" since {report['since']}" if report["since"] else ""),
             f"{'GROUP':<16} {'FIRINGS':>8} {'CONV':>6} {'RATE':>8}  LIFT vs holdout (95% CI)"]
    for group in report["groups"]:
        rate = group["conversionRate"]
        line = f"{group['group']:<16} {group['firings']:>8} {group['conversions']:>6} {_pct(rate):>8}"
        lift_ = group.get("lift")
        if lift_ is not None:
            low, high = lift_["differenceCi95"]
            relative = lift_["relative"]
            line += (f"  {_points(lift_['difference'])} [{_points(low)}, {_points(high)}]"
                     + (f", relative {relative * 100:+.1f}%" if relative is not None else ""))
        elif group["group"] != HOLDOUT:
            line += "  - (no holdout)"
        lines.append(line)
    interval = report["interval"]
    lines.append(f"interval: {interval['library']} {interval['function']}, "
                 f"method {interval['difference']} (difference), {interval['relative']} (relative)")
    return "\n".join(lines)


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def _points(value: float | None) -> str:
    return "unbounded" if value is None else f"{value * 100:+.1f} pts"
