"""A partition's time, for timers: its events' time while a backlog is read, the worker's
clock once it is caught up — so a backlog read at any speed fires what live traffic fires.

The partition's time is the least, over its source topic-partitions that still have records
to read, of the newest event time read from each (a topic not read yet holds it back, like an
input without a watermark in Flink); when none has records left, it is the clock."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from faust.types import TP

NEVER = -1  # a partition whose events say nothing yet


class EventTime:
    def __init__(self, source_topics: Sequence[str], caught_up: Callable[[TP], bool]) -> None:
        self.source_topics = tuple(source_topics)
        self.caught_up = caught_up
        self.newest: dict[TP, int] = {}  # the newest event time read per source topic-partition

    def observe(self, tp: TP, event_ms: int) -> int:
        """Note an event of `tp` about to be handled; return the newest event time of `tp`."""
        newest = self.newest.get(tp, NEVER)
        if event_ms > newest:
            self.newest[tp] = newest = event_ms
        return newest

    def time(self, partition: int, now_ms: int, reading: TP | None = None) -> int:
        """The partition's time. `reading`: the topic-partition whose batch is being handled
        (it has records left by definition, whatever the fetch position says)."""
        backlog = [self.newest.get(tp, NEVER) for tp in self._sources(partition)
                   if tp == reading or not self.caught_up(tp)]
        # An event time is never ahead of the clock: a future timestamp must not fire early.
        return min(min(backlog), now_ms) if backlog else now_ms

    def forget(self, partitions: set[int]) -> None:
        """Drop what is known of partitions no longer owned."""
        self.newest = {tp: ms for tp, ms in self.newest.items() if tp.partition not in partitions}

    def _sources(self, partition: int) -> list[TP]:
        return [TP(topic, partition) for topic in self.source_topics]
