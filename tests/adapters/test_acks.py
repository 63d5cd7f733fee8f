"""In-order acknowledgements: a partition's offset never commits past an unfinished message."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.actions.delivery.acks import InOrderAcks


@dataclass(frozen=True)
class FakeMessage:
    tp: str
    offset: int


@dataclass
class Delivery:
    """Stands in for a faust event: the sequencer only reads its message and calls ack()."""
    message: FakeMessage
    acked_log: list[tuple[str, int]] = field(default_factory=list)

    def ack(self) -> bool:
        self.acked_log.append((self.message.tp, self.message.offset))
        return True


def deliveries(log: list[tuple[str, int]], tp: str, offsets: range) -> list[Delivery]:
    return [Delivery(FakeMessage(tp, n), log) for n in offsets]


def test_a_later_delivery_finishing_first_waits_for_the_earlier_one() -> None:
    log: list[tuple[str, int]] = []
    acks = InOrderAcks()
    first, second, third = deliveries(log, "p0", range(3))
    for d in (first, second, third):
        acks.begin(d)
    acks.finish(second)
    acks.finish(third)
    assert log == []  # offset 0 is still being delivered: nothing may commit
    acks.finish(first)
    assert log == [("p0", 0), ("p0", 1), ("p0", 2)]
    assert acks.waiting() == 0


def test_partitions_do_not_wait_for_each_other() -> None:
    log: list[tuple[str, int]] = []
    acks = InOrderAcks()
    slow = deliveries(log, "p0", range(1))[0]
    fast = deliveries(log, "p1", range(1))[0]
    acks.begin(slow)
    acks.begin(fast)
    acks.finish(fast)
    assert log == [("p1", 0)]
    assert acks.waiting() == 1


def test_finishing_in_order_acks_at_once_and_never_twice() -> None:
    log: list[tuple[str, int]] = []
    acks = InOrderAcks()
    batch = deliveries(log, "p0", range(5))
    for d in batch:
        acks.begin(d)
    for d in batch:
        acks.finish(d)
        assert log[-1] == ("p0", d.message.offset)
    acks.finish(batch[0])  # a second finish (or one never begun) acks only that message
    assert log == [("p0", n) for n in range(5)] + [("p0", 0)]


def test_the_head_of_a_partition_releases_only_the_finished_run_behind_it() -> None:
    log: list[tuple[str, int]] = []
    acks = InOrderAcks()
    batch = deliveries(log, "p0", range(5))
    for d in batch:
        acks.begin(d)
    for n in (1, 2, 4):
        acks.finish(batch[n])
    acks.finish(batch[0])
    assert log == [("p0", 0), ("p0", 1), ("p0", 2)]  # 3 is still open; 4 waits for it
    acks.finish(batch[3])
    assert log[-2:] == [("p0", 3), ("p0", 4)]
