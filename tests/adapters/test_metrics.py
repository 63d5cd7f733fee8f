"""The hand-counted metrics render like prometheus_client's own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from app.domain.models import Source
from app.metrics import EvaluationTimes, Metrics


def test_event_counts_render_by_source() -> None:
    metrics = Metrics()
    for source in (Source.STREAMING, Source.STREAMING, Source.CDC):
        metrics.events_in.inc(source)
    text = metrics.render().decode()
    assert 'triggers_events_in_total{source="streaming"} 2.0' in text
    assert 'triggers_events_in_total{source="cdc"} 1.0' in text


def test_evaluation_times_render_as_prometheus_client_would() -> None:
    reference = CollectorRegistry()
    theirs = Histogram("triggers_evaluation_seconds", "Time to evaluate one event against its candidate triggers.",
                       buckets=EvaluationTimes.BUCKETS, registry=reference)
    metrics = Metrics()
    for seconds in (0.00005, 0.0001, 0.0003, 0.002, 0.2, 0.7, 0.7):
        theirs.observe(seconds)
        metrics.evaluation_seconds.observe(seconds)

    def lines(text: bytes) -> set[str]:
        return {line for line in text.decode().splitlines()
                if line.startswith("triggers_evaluation_seconds") and "_created" not in line}

    assert lines(metrics.render()) == lines(generate_latest(reference))
