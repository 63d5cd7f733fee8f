"""faust's aiokafka driver with our consumer, and a monitor without per-message bookkeeping."""

from __future__ import annotations

from typing import Any

from faust.sensors import Monitor
from faust.transport.drivers import aiokafka as faust_aiokafka

from app.kafka.consumer import Consumer


class QuietMonitor(Monitor):
    """faust's monitor without its per-message bookkeeping (timestamps, counters by topic
    and stream), which nothing here reads: /metrics has its own counters. Commits, sends
    and table figures are still kept."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any,
                            state: Any = None) -> None:
        pass

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        pass


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
