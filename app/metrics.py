"""Prometheus metrics of one worker, served at GET /metrics."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|\d+")


def reason_code(reason: str) -> str:
    """A bounded label for a free-text reason: quoted names and numbers dropped, first words kept."""
    words = _QUOTED.sub(" ", reason.split(":")[0]).lower().split()
    return "_".join(words[:4]) or "unknown"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events_in = Counter("triggers_events_in", "Events read, by source.", ["source"],
                                 registry=self.registry)
        self.firings = Counter("triggers_firings", "Firings emitted, by trigger and action type.",
                               ["trigger", "action"], registry=self.registry)
        self.dead_letters = Counter("triggers_dead_letters", "Messages dead-lettered, by topic and reason.",
                                    ["topic", "reason"], registry=self.registry)
        self.condition_errors = Counter("triggers_condition_errors",
                                        "Conditions that raised for an event (counted as false), by trigger.",
                                        ["trigger"], registry=self.registry)
        self.evaluation_seconds = Histogram(
            "triggers_evaluation_seconds", "Time to evaluate one event against its candidate triggers.",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
            registry=self.registry)
        self.sink_outcomes = Counter("triggers_sink_outcomes", "Action commands handled, by action and outcome.",
                                     ["action", "outcome"], registry=self.registry)
        self.delivery_seconds = Histogram(
            "triggers_delivery_seconds", "HTTP delivery time including retries, by action.", ["action"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
