"""EndpointHealth in the webhook sink, over in-memory doubles: disabling, refusing, publishing on change only."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from app.actions.endpoint_health import EndpointHealth
from app.actions.webhook import Webhook
from app.domain.endpoint_health import EndpointStatus
from app.settings import Settings
from tests.adapters.test_performers import TOPICS, URL, Actions, event, webhook_command, webhook_trigger

ORIGIN = "https://hooks.example:443"


def with_health(hours: float = 1.0, schedule: tuple[float, ...] = (0.0,)) -> Actions:
    """One attempt per delivery unless a schedule is given: each delivery is one observation."""
    actions = Actions(schedule=schedule)
    settings = Settings(TRIGGERS_WEBHOOK_DISABLE_AFTER_HOURS=hours)  # type: ignore[call-arg]
    actions.endpoint_health = EndpointHealth(settings, actions.publisher, actions.metrics, actions.clock)
    actions.endpoint_health.loaded.set()
    return actions


async def deliver(actions: Actions, firing_id: str, offset: int) -> None:
    command = webhook_command(actions, webhook_trigger(), firing_id)
    await actions.sink(Webhook).on_event(event(command, offset))  # type: ignore[arg-type]
    await actions.settled()


def published(actions: Actions) -> list[dict[str, object]]:
    return actions.producer.values(TOPICS.endpoints_health)


async def test_an_endpoint_failing_for_the_period_is_disabled_then_refused() -> None:
    actions = with_health(hours=1.0)
    actions.http.statuses = [503] * 9
    await deliver(actions, "f-1", 0)
    actions.clock.advance(timedelta(minutes=30))
    await deliver(actions, "f-2", 1)
    assert [s["state"] for s in published(actions)] == ["failing"]  # once per change, not per attempt

    actions.clock.advance(timedelta(minutes=30))
    await deliver(actions, "f-3", 2)
    assert [s["state"] for s in published(actions)] == ["failing", "disabled"]
    assert actions.producer.keys(TOPICS.endpoints_health) == [ORIGIN, ORIGIN]
    assert actions.endpoint_health.disabled_count() == 1
    assert b"triggers_endpoints_disabled 1.0" in actions.metrics.render()

    await deliver(actions, "f-4", 3)
    assert len(actions.http.calls) == 3  # the fourth was not attempted
    letter = next(letter for letter in actions.dead_letters_sent() if letter["firingId"] == "f-4")
    assert letter["reason"].startswith(f"endpoint {ORIGIN} is disabled: only failures since 2026-01-01T09:00:00")
    assert "endpoints enable" in letter["reason"]


async def test_a_success_resets_and_bad_requests_do_not_count() -> None:
    actions = with_health(hours=1.0)
    actions.http.statuses = [503, 404, 200]
    await deliver(actions, "f-1", 0)
    actions.clock.advance(timedelta(hours=2))
    await deliver(actions, "f-2", 1)  # a 404: the request's fault, not the endpoint's
    await deliver(actions, "f-3", 2)
    assert [s["state"] for s in published(actions)] == ["failing", "healthy"]
    assert await actions.endpoint_health.refused(URL) is None


async def test_a_state_read_from_the_topic_is_what_every_worker_acts_on() -> None:
    actions = with_health()
    disabled = b'{"state": "disabled", "since": "2026-01-01T08:00:00+00:00", "lastFailure": "HTTP 500"}'
    actions.endpoint_health.apply(ORIGIN, disabled)
    assert actions.endpoint_health.states[ORIGIN].state is EndpointStatus.DISABLED
    assert "disabled" in (await actions.endpoint_health.refused("https://hooks.example/other/path?x=1") or "")
    assert await actions.endpoint_health.refused("https://elsewhere.example/in") is None

    actions.endpoint_health.apply(ORIGIN, b'{"state": "healthy", "since": "2026-01-01T09:00:00+00:00"}')
    assert await actions.endpoint_health.refused(URL) is None
    actions.endpoint_health.apply(ORIGIN, b"garbage")  # ignored, logged
    assert actions.endpoint_health.states[ORIGIN].state is EndpointStatus.HEALTHY
    actions.endpoint_health.apply(ORIGIN, None)
    assert ORIGIN not in actions.endpoint_health.states


async def test_a_state_that_cannot_be_published_still_settles_the_delivery_once() -> None:
    actions = with_health(schedule=(0.0, 5.0))

    async def refuse(*args: object) -> None:
        raise RuntimeError("producer gone")

    actions.producer.send = refuse  # type: ignore[method-assign]
    actions.http.statuses = [503]

    await deliver(actions, "f-1", 0)

    # The attempt was settled once: its retry is scheduled, nothing dead-lettered or repeated.
    assert len(actions.http.calls) == 1 and actions.counters["webhook.retries_scheduled"] == 1
    assert actions.endpoint_health.states[ORIGIN].state is EndpointStatus.FAILING  # acted on locally


async def test_a_waiting_delivery_to_an_endpoint_disabled_meanwhile_is_dead_lettered_unattempted() -> None:
    actions = with_health(schedule=(0.0, 5.0))
    actions.http.statuses = [503]
    await deliver(actions, "f-1", 0)
    actions.endpoint_health.apply(ORIGIN, b'{"state": "disabled", "since": "2026-01-01T08:00:00+00:00"}')

    actions.clock.advance(timedelta(seconds=5))
    actions.dispatcher.pump_all()
    await actions.settled()
    for _ in range(5):
        await asyncio.sleep(0)

    assert len(actions.http.calls) == 1
    [letter] = actions.dead_letters_sent()
    assert "is disabled" in letter["reason"] and letter["attempts"][0]["status"] == 503


async def test_a_starting_worker_asks_only_once_it_has_read_the_topic() -> None:
    actions = Actions()
    health = EndpointHealth(Settings(), actions.publisher, actions.metrics, actions.clock)
    asking = asyncio.ensure_future(health.refused(URL))
    await asyncio.sleep(0.01)
    assert not asking.done()
    health.apply(ORIGIN, b'{"state": "disabled", "since": "2026-01-01T08:00:00+00:00"}')
    health.loaded.set()
    assert "is disabled" in (await asking or "")
