"""Experiments through intake, evaluator and the conversion tracker over in-memory doubles:
held-out firings on `triggers.holdout` only yet counted (cooldown), live firings with their
group and variant action, conversion windows opened and converted once (also by an event no
trigger matches), never outside the window or twice on a redelivery; shadow firings open none;
a variant's webhook signed with its own secret."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from faust.types import TP

from app.actions.webhook import Webhook
from app.domain.definitions import compile_definition
from app.domain.experiments import assign
from app.domain.models import ACTION_TYPES, HOLDOUT, Experiment
from tests.adapters.engine_parts import EngineParts
from tests.adapters.fakes import record
from tests.adapters.test_performers import Actions, command, event

STREAMING, OUTCOMES = "events.streaming", "events.outcomes"
ENROLL = {"type": "enroll_journey", "journeyId": "welcome"}
CONVERSION = {"source": "outcome", "eventType": "purchase", "within": {"hours": 1}}


def customer_in(group: str, experiment: dict[str, Any], trigger_id: str = "exp") -> str:
    model = Experiment.model_validate(experiment)
    return next(f"c-{n}" for n in range(10_000) if assign(model, trigger_id, f"c-{n}") == group)


class Path:
    def __init__(self) -> None:
        self.parts = EngineParts()
        self.offset = 0

    def define(self, experiment: dict[str, Any], **extra: Any) -> None:
        self.parts.define(id="exp", source="streaming", eventType="visit", action=ENROLL, experiment=experiment,
                          **extra)

    async def send(self, topic: str, customer: str, event_type: str, event_id: str,
                   at: datetime | None = None, **fields: Any) -> None:
        value = {"type": event_type, "customerId": customer, "id": event_id,
                 "timestamp": (at or self.parts.clock()).isoformat(), **fields}
        partition = self.parts.partition_of(customer)
        await self.parts.intake.on_source_batch(TP(topic, partition), [
            record(topic, customer, value, partition, self.offset)])
        self.offset += 1

    def performed(self) -> list[dict[str, Any]]:
        return [c for action in ACTION_TYPES for c in self.parts.sent(f"actions.{action}")]


async def test_a_held_out_firing_goes_to_triggers_holdout_only_and_starts_the_cooldown() -> None:
    path = Path()
    experiment = {"holdoutPercent": 50}
    path.define(experiment, cooldownMinutes=60)
    held = customer_in(HOLDOUT, experiment)
    await path.send(STREAMING, held, "visit", "e1")
    path.parts.clock.advance(timedelta(minutes=5))
    await path.send(STREAMING, held, "visit", "e2")
    [out] = path.parts.sent("triggers.holdout")
    assert (out["group"], out["eventId"], out["customerId"]) == (HOLDOUT, "e1", held)
    assert path.parts.sent("triggers.firings") == [] and path.performed() == []
    assert path.parts.evaluator.counters["holdout_firings"] == 1
    assert path.parts.evaluator.counters["cooled_down"] == 1  # counted like a firing


async def test_a_live_firing_carries_its_group_and_performs_its_variant_action() -> None:
    path = Path()
    other = {"type": "update_attribute", "attributes": {"offer": "'b'"}}
    experiment = {"variants": [{"name": "A", "weight": 1, "action": ENROLL}, {"name": "B", "weight": 1,
                                                                             "action": other}]}
    path.define(experiment)
    in_b = customer_in("B", experiment)
    await path.send(STREAMING, in_b, "visit", "e1")
    [firing] = path.parts.sent("triggers.firings")
    assert firing["group"] == "B" and firing["action"]["type"] == "update_attribute"
    assert [c["firingId"] for c in path.parts.sent("actions.update_attribute")] == [firing["firingId"]]


async def test_a_conversion_inside_the_window_counts_once_and_a_redelivery_or_a_late_one_never() -> None:
    path = Path()
    experiment = {"holdoutPercent": 50, "conversion": {**CONVERSION, "filters": {"paid": True}}}
    path.define(experiment)
    held, live = customer_in(HOLDOUT, experiment), customer_in("default", experiment)
    start = path.parts.clock() - timedelta(hours=3)
    for customer in (held, live):
        await path.send(STREAMING, customer, "visit", f"v-{customer}", at=start)
    # No trigger matches a purchase: it reaches the tracker all the same.
    await path.send(OUTCOMES, held, "purchase", "unpaid", at=start + timedelta(minutes=5), paid=False)
    await path.send(OUTCOMES, held, "purchase", "p1", at=start + timedelta(minutes=10), paid=True)
    await path.send(OUTCOMES, held, "purchase", "p1", at=start + timedelta(minutes=10), paid=True)  # redelivered
    await path.send(OUTCOMES, held, "purchase", "p2", at=start + timedelta(minutes=20), paid=True)
    await path.send(OUTCOMES, live, "purchase", "late", at=start + timedelta(minutes=61), paid=True)
    conversions = path.parts.sent("triggers.conversions")
    [fired] = path.parts.sent("triggers.holdout")
    assert conversions == [{"firingId": fired["firingId"], "triggerId": "exp", "group": HOLDOUT,
                            "customerId": held, "eventId": "p1",
                            "convertedAt": (start + timedelta(minutes=10)).isoformat()}]
    assert path.parts.producer.keys("triggers.conversions") == [held]
    assert live not in path.parts.experiments_table  # the expired window was dropped


async def test_a_shadow_trigger_with_an_experiment_fires_to_triggers_shadow_and_opens_no_window() -> None:
    path = Path()
    experiment = {"holdoutPercent": 50, "conversion": CONVERSION}
    path.define(experiment, mode="shadow")
    for n in range(6):
        await path.send(STREAMING, f"s-{n}", "visit", f"e{n}")
    shadowed = path.parts.sent("triggers.shadow")
    assert len(shadowed) == 6 and {s["group"] for s in shadowed} <= {HOLDOUT, "default"}
    assert path.parts.sent("triggers.holdout") == [] and dict(path.parts.experiments_table) == {}


async def test_a_variant_webhook_is_signed_with_the_variant_secret() -> None:
    actions = Actions()
    variant_hook = {"type": "webhook", "url": "https://b.example/hook", "secret": "variant-secret"}
    trigger = {"source": "streaming", "eventType": "purchase",
               "action": {"type": "webhook", "url": "https://a.example/hook", "secret": "trigger-secret"},
               "experiment": {"variants": [{"name": "B", "weight": 1, "action": variant_hook}]}}
    actions.define("triggers", "t-1", trigger)
    compiled = compile_definition({"id": "t-1", **trigger})
    value = {**command(compiled.variant_actions["B"]), "group": "B"}
    await actions.sink(Webhook).on_event(event(value))
    await actions.settled()
    [call] = actions.http.calls
    assert call.secret == "variant-secret" and call.url == "https://b.example/hook"


def test_a_read_masks_each_variant_action_like_the_trigger_action() -> None:
    from app.web.api import MASK, public_trigger

    hook = {"type": "webhook", "url": "https://user:pw@b.example/hook?token=abc", "secret": "s3",
            "headers": {"Authorization": "Bearer x"}}
    shown = public_trigger(compile_definition({
        "id": "t", "source": "streaming", "eventType": "visit", "action": ENROLL,
        "experiment": {"variants": [{"name": "B", "weight": 1, "action": hook}]}}))
    text = str(shown)
    assert "pw" not in text and "abc" not in text and "s3" not in text and "Bearer" not in text
    assert shown["experiment"]["variants"][0]["action"]["headers"] == {"Authorization": MASK}


async def test_a_conversion_event_first_fires_what_is_due_then_converts_its_window() -> None:
    path = Path()
    experiment = {"conversion": CONVERSION}
    path.define(experiment, delay={"minutes": 10})
    start = path.parts.clock() - timedelta(hours=3)
    await path.send(STREAMING, "c-7", "visit", "v", at=start)
    assert path.parts.sent("triggers.firings") == []  # pending until its partition reaches its due time
    partition = path.parts.partition_of("c-7")
    topics = path.parts.topics
    path.parts.caught_up.update(TP(topic, partition) for topic in (topics.streaming, topics.cdc, topics.schema,
                                                                   topics.rerouted))
    # The purchase's own time passes the due time: the firing goes out first, and the purchase converts it.
    await path.send(OUTCOMES, "c-7", "purchase", "p", at=start + timedelta(minutes=20))
    [fired] = path.parts.sent("triggers.firings")
    assert [(c["firingId"], c["eventId"]) for c in path.parts.sent("triggers.conversions")] == [
        (fired["firingId"], "p")]
