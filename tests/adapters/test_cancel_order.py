"""What cancels a pending firing depends on event times, not on the order events are read in:
a cancel event read before the event it cancels (from another topic, or out of order) is
remembered and cancels the firing when it is scheduled."""

from __future__ import annotations

import pytest

from tests.adapters.test_timed_path import OUTCOMES, STREAMING, A, Timed, abandoned


@pytest.fixture
def timed() -> Timed:
    return Timed()


def purchase_on_outcomes(seconds: int = 60) -> dict[str, object]:
    return abandoned(seconds=seconds, cancelOn=[{"source": "outcome", "eventType": "purchase",
                                                  "sameFields": ["cartId"]}])


async def test_a_cancel_read_before_its_cart_cancels_the_cart_when_it_is_scheduled(timed: Timed) -> None:
    timed.define(**purchase_on_outcomes())
    timed.backlog(STREAMING, OUTCOMES)
    await timed.send("purchase", 30, topic=OUTCOMES, cartId="k1")  # read first, happened second
    await timed.send("cart_add", 10, cartId="k1")
    assert timed.pending() == [("scheduled", "e2", None), ("cancelled", "e2", "purchase event e1 before the due time")]
    assert timed.stored_pending() == []
    timed.live()
    await timed.clock_pass()
    assert timed.fired() == []


async def test_a_remembered_cancel_keeps_to_its_rules_and_its_time(timed: Timed) -> None:
    timed.define(**purchase_on_outcomes())
    timed.backlog(STREAMING, OUTCOMES)
    await timed.send("purchase", 5, topic=OUTCOMES, cartId="k1")  # before the cart: cancels nothing
    await timed.send("purchase", 30, topic=OUTCOMES, cartId="k9")  # another cart
    await timed.send("purchase", 70, topic=OUTCOMES, cartId="k2")  # after k2's due time (10 + 60)
    await timed.send("cart_add", 10, cartId="k1")
    await timed.send("cart_add", 10, cartId="k2")
    assert [status for status, _, _ in timed.pending()] == ["scheduled", "scheduled"]
    timed.live()
    await timed.clock_pass()
    assert timed.fired() == ["e4", "e5"]


async def test_a_cancel_older_than_the_pending_firings_event_does_not_cancel_it(timed: Timed) -> None:
    timed.define(**abandoned())
    await timed.send("cart_add", 10, cartId="k1")
    await timed.send("purchase", 5, cartId="k1")  # read after, happened before the cart was filled
    assert [status for status, _, _ in timed.pending()] == ["scheduled"]


async def test_remembered_cancels_are_few_and_small(timed: Timed) -> None:
    timed.define(**abandoned())
    for n in range(30):
        await timed.send("purchase", n, cartId=f"k{n}", note="x" * 1000)
    remembered = timed.parts.timers_table[A]["cancels"]
    assert len(remembered) == 20
    assert all(set(event) == {"source", "type", "id", "cartId"} for _, event in remembered)

