"""Acknowledge a partition's messages in offset order, however their work finishes."""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from typing import Any, Protocol


class Ackable(Protocol):
    @property
    def message(self) -> Any: ...

    def ack(self) -> bool: ...


class InOrderAcks:
    """Deliveries run concurrently and end in any order, but an acknowledgement lets the
    consumer commit the offset *after* the message, so acknowledging a later message while an
    earlier one is still being delivered would let a crash skip the earlier one (faust even
    commits over a single unacknowledged offset). Each partition's acknowledgements are
    therefore held back until every earlier message of that partition has finished."""

    def __init__(self) -> None:
        self._open: defaultdict[Any, OrderedDict[int, tuple[Ackable, bool]]] = defaultdict(OrderedDict)

    def begin(self, event: Ackable) -> None:
        """Called in the order the stream hands messages over."""
        self._open[event.message.tp][event.message.offset] = (event, False)

    def finish(self, event: Ackable) -> None:
        tp, offset = event.message.tp, event.message.offset
        waiting = self._open.get(tp)
        if waiting is None or offset not in waiting:
            event.ack()  # never begun (or already released): nothing to wait for
            return
        waiting[offset] = (event, True)
        while waiting:
            first = next(iter(waiting))
            head, done = waiting[first]
            if not done:
                break
            del waiting[first]
            head.ack()
        if not waiting:
            del self._open[tp]

    def waiting(self) -> int:
        return sum(len(w) for w in self._open.values())
