"""Throughput over time for the bench's backlog runs, as a PNG next to the results JSON."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

WINDOW_S = 0.25  # the worker's counters are sampled every 50 ms: a rate over 0.25 s is readable
COLOURS = {"engine10": "tab:blue", "engine1000": "tab:orange", "engineAggregates": "tab:purple",
           "engineCapped": "tab:green"}
LABELS = {"engine10": "(b) 10 definitions", "engine1000": "(c) 1,000 definitions / 200 types",
          "engineAggregates": "(i) 100 definitions over 50 aggregates",
          "engineCapped": "(j) (b) with a cap on every firing"}


def rates(timeline: Sequence[Sequence[float]]) -> tuple[list[float], list[float]]:
    """(seconds, events/s) per window from cumulative (seconds, events handled) samples."""
    times: list[float] = []
    per_second: list[float] = []
    start_t, start_n = timeline[0]
    for t, n in timeline[1:]:
        if t - start_t >= WINDOW_S:
            times.append((start_t + t) / 2)
            per_second.append((n - start_n) / (t - start_t))
            start_t, start_n = t, n
    return times, per_second


def plot(results: dict[str, Any], out: Path) -> Path | None:
    """Draw every (b), (c), (i) and (j) run (those the results have), with (a) and the 0.15 x (a)
    target; None without matplotlib (an optional extra: `make bench` installs it)."""
    try:
        import matplotlib
        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    raw = results["bareConsumerEventsPerSecond"]
    figure, axes = plt.subplots(figsize=(9, 4.5), dpi=100)
    for case, colour in COLOURS.items():
        for n, run in enumerate(results.get(case, {}).get("runs", [])):
            times, per_second = rates(run["timeline"])
            axes.plot(times, per_second, color=colour, linewidth=1, alpha=0.8,
                      label=LABELS[case] if n == 0 else None)
    axes.axhline(raw, color="tab:green", linestyle="--", linewidth=1, label=f"(a) bare consumer {raw:,.0f}/s")
    axes.axhline(0.15 * raw, color="tab:red", linestyle=":", linewidth=1, label="target 0.15 x (a)")
    axes.set_xlabel("seconds since the worker reported ready")
    axes.set_ylabel("events/s (0.25 s windows)")
    axes.set_ylim(bottom=0)
    axes.set_title(f"Engine throughput on a backlog, make bench at {results['at'][:16].replace('T', ' ')} UTC")
    axes.legend(loc="center right", fontsize="small")
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)
    return out
