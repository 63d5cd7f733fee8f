"""Prometheus metrics of one worker, served at GET /metrics."""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|\d+")


def reason_code(reason: str) -> str:
    """A bounded label for a free-text reason: quoted names and numbers dropped, first words kept."""
    words = _QUOTED.sub(" ", reason.split(":")[0]).lower().split()
    return "_".join(words[:4]) or "unknown"


class EventCounts(Collector):
    """`triggers_events_in_total` by source. Counted once per event, so a plain dict (the
    worker's event loop is the only writer) instead of a locked prometheus child."""

    def __init__(self) -> None:
        self.by_source: dict[str, int] = {}

    def inc(self, source: str) -> None:
        self.by_source[source] = self.by_source.get(source, 0) + 1

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("triggers_events_in", "Events read, by source.", labels=["source"])
        for source, count in sorted(self.by_source.items()):
            family.add_metric([source], count)
        yield family


class EvaluationTimes(Collector):
    """`triggers_evaluation_seconds`, observed once per evaluated event: bucket counts in a
    plain list for the same reason as EventCounts."""

    BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.BUCKETS, seconds)] += 1
        self.total += seconds

    def collect(self) -> Iterator[Metric]:
        cumulative, running = [], 0
        for bound, count in zip((*map(str, self.BUCKETS), "+Inf"), self.counts, strict=True):
            running += count
            cumulative.append((bound, running))
        yield HistogramMetricFamily("triggers_evaluation_seconds",
                                    "Time to evaluate one event against its candidate triggers.",
                                    buckets=cumulative, sum_value=self.total)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events_in = EventCounts()
        self.registry.register(self.events_in)
        self.firings = Counter("triggers_firings", "Firings emitted, by trigger and action type.",
                               ["trigger", "action"], registry=self.registry)
        self.shadow_firings = Counter("triggers_shadow_firings",
                                      "Firings of shadow triggers (on triggers.shadow, nothing performed), "
                                      "by trigger and action type.", ["trigger", "action"], registry=self.registry)
        self.dead_letters = Counter("triggers_dead_letters", "Messages dead-lettered, by topic and reason.",
                                    ["topic", "reason"], registry=self.registry)
        self.condition_errors = Counter("triggers_condition_errors",
                                        "Conditions that raised for an event (counted as false), by trigger.",
                                        ["trigger"], registry=self.registry)
        self.evaluation_seconds = EvaluationTimes()
        self.registry.register(self.evaluation_seconds)
        self.sink_outcomes = Counter("triggers_sink_outcomes", "Action commands handled, by action and outcome.",
                                     ["action", "outcome"], registry=self.registry)
        self.delivery_seconds = Histogram(
            "triggers_delivery_seconds", "HTTP delivery time including retries, by action.", ["action"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry)

        self.pending_firings = Counter("triggers_pending_firings", "Delayed firings, by status on triggers.pending.",
                                       ["status"], registry=self.registry)
        self.suppressed = Counter("triggers_suppressed", "Firings a policy or trigger limit stopped, by reason.",
                                  ["reason"], registry=self.registry)
        self.timer_lateness_seconds = Histogram(
            "triggers_timer_lateness_seconds", "From a delayed firing's due time to its decision (fired or dropped).",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30, 60, 300, 3600), registry=self.registry)
        self.endpoints_disabled = Gauge("triggers_endpoints_disabled",
                                        "Webhook endpoints (origins) disabled, as this worker knows.",
                                        registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
