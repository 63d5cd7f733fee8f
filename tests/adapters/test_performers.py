"""Each action's performer behind the one Sink, with in-memory tables, a recording producer, a
fake clock and a fake HTTP delivery: performed once, replays skipped, failures dead-lettered
with their reason."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

from app.actions import PERFORMERS
from app.actions.deadletters import ActionDeadLetters
from app.actions.delivery.dispatch import Dispatcher, HttpRequest, slot_limits
from app.actions.delivery.http import Attempt, AttemptResult
from app.actions.delivery.store import DeliveryStore
from app.actions.endpoint_health import EndpointHealth
from app.actions.enroll_journey import EnrollJourney
from app.actions.fire_recommend import FireRecommend
from app.actions.journey_events import JourneyEvents
from app.actions.performer import ActionServices, Performer
from app.actions.sink import Sink
from app.actions.update_attribute import UpdateAttribute
from app.actions.webhook import DEFINITION_GONE, Webhook
from app.domain.definitions import compile_definition
from app.domain.models import ActionCommand
from app.kafka.partitioner import partition_for
from app.kafka.publisher import Publisher
from app.metrics import Metrics
from app.registry.catalogs import Catalogs
from app.settings import Settings
from app.state.enrollments import EnrollmentStore
from app.state.performed import PerformedLog
from app.state.rows import RowStore
from app.topics import Topics
from tests.adapters.fakes import DictTable, FakeClock, Record, RecordingProducer, record

TOPICS = Topics("")
URL = "https://hooks.example/in"
DEAD_LETTER_FIELDS = {"actionType", "reason", "at", "attempts", "firingId", "triggerId", "customerId", "command",
                      "topic", "partition", "offset"}


@dataclass
class Message(Record):
    """A faust Message as the acknowledgements read it."""

    @property
    def tp(self) -> tuple[str, int]:
        return (self.topic, self.partition)


@dataclass
class FakeEvent:
    message: Message
    acked: bool = False

    def ack(self) -> bool:
        self.acked = True
        return True


@dataclass
class Call:
    url: str
    body: bytes
    firing_id: str
    secret: str | None
    headers: dict[str, str]
    number: int


@dataclass
class FakeHttp:
    """HttpDelivery's interface: records each attempt and answers the next of `statuses`
    (200 when none is left); `hold` keeps attempts running until it is set."""

    statuses: list[int] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    hold: asyncio.Event | None = None
    crash: Exception | None = None

    async def attempt(self, url: str, body: bytes, firing_id: str, secret: str | None,
                      headers: dict[str, str], number: int) -> AttemptResult:
        self.calls.append(Call(url, body, firing_id, secret, headers, number))
        if self.hold is not None:
            await self.hold.wait()
        if self.crash is not None:
            raise self.crash
        return AttemptResult(Attempt(number, self.statuses.pop(0) if self.statuses else 200, None, 12.0))


SCHEDULE = (0.0, 5.0, 60.0)


class Actions:
    """The actions section of app/wiring.py, over fakes."""

    def __init__(self, per_endpoint: int = 2, per_second: int | None = None,
                 schedule: tuple[float, ...] = SCHEDULE) -> None:
        self.schedule = schedule
        self.clock = FakeClock()
        self.producer = RecordingProducer()
        self.metrics = Metrics()
        self.publisher = Publisher(lambda: self.producer, TOPICS, self.metrics, self.clock)
        self.rows = DictTable()
        self.catalogs = Catalogs(TOPICS)
        self.enrollments_table = DictTable()
        self.enrollments = EnrollmentStore(self.enrollments_table, DictTable())
        self.performed_table = DictTable()
        self.deliveries_table = DictTable()
        self.counters: Counter[str] = Counter()
        self.http = FakeHttp()
        self.dispatcher = Dispatcher(self.http, DeliveryStore(self.deliveries_table), self.metrics,
                                     slot_limits(100, per_endpoint), lambda origin: per_second, lambda: (4, 8),
                                     TOPICS.action, lambda: int(self.clock().timestamp() * 1000), self.counters)
        self.services = ActionServices(Settings(), TOPICS, self.catalogs, self.publisher,
                                       RowStore(self.rows, self.publisher), self.enrollments, self.clock)
        self.performed = PerformedLog(self.performed_table, timedelta(days=7), 1000, self.clock)
        self.dead_letters = ActionDeadLetters(self.publisher, self.metrics, self.counters, self.clock)
        self.endpoint_health = EndpointHealth(Settings(), self.publisher, self.metrics, self.clock)
        self.endpoint_health.loaded.set()  # as if endpoints.health had been read

    def sink(self, performer: type[Performer] | Performer) -> Sink:
        made = performer(self.services) if isinstance(performer, type) else performer
        return Sink(made, self.performed, self.dead_letters, self.dispatcher, self.metrics, self.counters,
                    self.schedule, self.endpoint_health)

    def define(self, catalog: str, item_id: str, definition: dict[str, Any] | None) -> None:
        value = json.dumps({"id": item_id, **definition}).encode() if definition is not None else None
        getattr(self.catalogs, catalog).apply(item_id, value)

    def dead_letters_sent(self) -> list[dict[str, Any]]:
        return self.producer.values(TOPICS.actions_deadletter)

    async def settled(self) -> None:
        """Until every delivery task has ended."""
        for _ in range(100):
            if self.dispatcher.backlog()["inFlight"] == 0:
                return
            await asyncio.sleep(0)
        raise AssertionError(f"deliveries still running: {self.dispatcher.backlog()}")


def command(action: dict[str, Any], firing_id: str = "f-1", trigger_id: str = "t-1", customer_id: str = "c-1",
            event: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"firingId": firing_id, "triggerId": trigger_id, "priority": 50, "customerId": customer_id,
            "eventId": "e-1", "firedAt": "2026-01-01T09:00:00Z", "action": action,
            "event": event or {"type": "purchase", "customerId": customer_id, "amount": 1500, "source": "streaming"}}


def webhook_trigger(**action: Any) -> dict[str, Any]:
    return {"source": "streaming", "eventType": "purchase", "action": {"type": "webhook", "url": URL, **action}}


def webhook_command(actions: Actions, trigger: dict[str, Any], firing_id: str = "f-1") -> dict[str, Any]:
    """The command the evaluator emits for `trigger`, which is then defined in the catalog."""
    actions.define("triggers", "t-1", trigger)
    return command(compile_definition({"id": "t-1", **trigger}).command_action, firing_id)


def event(value: Any, offset: int = 0) -> FakeEvent:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return FakeEvent(Message("actions.webhook", 0, offset, b"c-1", raw))


# -- the registry ------------------------------------------------------------------------------


def test_every_action_type_has_one_performer() -> None:
    assert sorted(p.action_type for p in PERFORMERS) == ["enroll_journey", "fire_recommend", "update_attribute",
                                                          "webhook"]
    assert {p.action_type for p in PERFORMERS if p.delivers_over_http} == {"webhook", "fire_recommend"}


# -- enroll_journey ------------------------------------------------------------------------------


async def test_enroll_journey_enrolls_once_and_skips_a_replayed_firing() -> None:
    actions = Actions()
    actions.define("journeys", "vip", {"name": "VIP"})
    sink = actions.sink(EnrollJourney)
    message = record(TOPICS.action("enroll_journey"), "c-1", command({"type": "enroll_journey", "journeyId": "vip"}))

    await sink.on_record(message)
    await sink.on_record(message)

    [enrolled] = actions.producer.values(TOPICS.enrollments)
    assert enrolled["status"] == "enrolled" and enrolled["firingId"] == "f-1" and enrolled["customerId"] == "c-1"
    assert [e.journey_id for e in actions.enrollments.get("c-1")] == ["vip"]
    assert "f-1" in actions.performed_table["enroll_journey|c-1"]
    assert actions.counters == Counter({"enroll_journey.performed": 1, "enroll_journey.replays_skipped": 1})


async def test_unknown_journey_is_dead_lettered_with_the_reason_and_the_record_shape() -> None:
    actions = Actions()
    message = record(TOPICS.action("enroll_journey"), "c-1", command({"type": "enroll_journey", "journeyId": "nope"}),
                     partition=3, offset=7)

    await actions.sink(EnrollJourney).on_record(message)

    [letter] = actions.dead_letters_sent()
    assert set(letter) == DEAD_LETTER_FIELDS
    assert letter["reason"] == "unknown journey 'nope'"
    assert (letter["actionType"], letter["firingId"], letter["customerId"]) == ("enroll_journey", "f-1", "c-1")
    assert (letter["topic"], letter["partition"], letter["offset"]) == ("actions.enroll_journey", 3, 7)
    assert letter["attempts"] == [] and letter["command"]["action"]["journeyId"] == "nope"
    assert actions.producer.keys(TOPICS.actions_deadletter) == ["c-1"]
    assert actions.performed_table == {} and actions.counters["enroll_journey.deadlettered"] == 1


@pytest.mark.parametrize(("value", "reason"), [
    (b"{not json", "malformed action command: "),
    (command({"type": "enroll_journey", "journeyId": "vip"}, firing_id=""),
     "malformed action command: field 'firingId' must be 1 to 256 characters"),
    (command({"type": "enroll_journey"}), "malformed action: KeyError: 'journeyId'"),
    (command({"type": "enroll_journey", "journeyId": "vip", "deduplication": "sometimes"}),
     "malformed action: ValueError: 'sometimes' is not a valid Deduplication"),
])
async def test_malformed_commands_are_dead_lettered_with_the_reason(value: Any, reason: str) -> None:
    actions = Actions()
    actions.define("journeys", "vip", {})

    await actions.sink(EnrollJourney).on_record(record(TOPICS.action("enroll_journey"), "c-1", value))

    [letter] = actions.dead_letters_sent()
    assert letter["reason"].startswith(reason)
    assert actions.producer.values(TOPICS.enrollments) == []


async def test_an_unreadable_command_is_dead_lettered_with_its_raw_value() -> None:
    actions = Actions()

    await actions.sink(EnrollJourney).on_record(record(TOPICS.action("enroll_journey"), None, b"\x00garbage"))

    [letter] = actions.dead_letters_sent()
    assert letter["actionType"] == "enroll_journey" and "command" not in letter
    assert letter["value"] == "\x00garbage"
    assert actions.producer.keys(TOPICS.actions_deadletter) == [None]


# -- update_attribute ----------------------------------------------------------------------------


def update(attributes: dict[str, str], **kwargs: Any) -> dict[str, Any]:
    return command({"type": "update_attribute", "table": "customers", "attributes": attributes}, **kwargs)


async def test_update_attribute_writes_the_row_once_and_publishes_the_change() -> None:
    actions = Actions()
    sink = actions.sink(UpdateAttribute)
    message = record(TOPICS.action("update_attribute"), "c-1", update({"tier": "'gold'", "last": "event.amount"}))

    await sink.on_record(message)
    await sink.on_record(message)

    written = {"customerId": "c-1", "tier": "gold", "last": 1500}
    assert actions.rows["customers|c-1"] == written
    [change] = actions.producer.values(TOPICS.schema)
    assert change["firingId"] == "f-1" and change["depth"] == 1 and change["after"] == written
    assert actions.counters == Counter({"update_attribute.performed": 1, "update_attribute.replays_skipped": 1})


async def test_an_attribute_of_the_wrong_type_is_dead_lettered_and_nothing_written() -> None:
    actions = Actions()
    table = {"name": "customers", "columns": {"limit": "number"}}
    actions.catalogs.tables.apply("customers", json.dumps(table).encode())

    await actions.sink(UpdateAttribute).on_record(record(TOPICS.action("update_attribute"), "c-1",
                                                         update({"limit": "'lots'"})))

    [letter] = actions.dead_letters_sent()
    assert "column 'limit': expected number, got str 'lots'" in letter["reason"]
    assert actions.rows == {} and actions.producer.values(TOPICS.schema) == []


async def test_an_update_chain_stops_at_the_depth_limit() -> None:
    actions = Actions()
    caused_by = {"type": "customers.update", "customerId": "c-1", "source": "schema_table", "depth": 3}

    await actions.sink(UpdateAttribute).on_record(record(TOPICS.action("update_attribute"), "c-1",
                                                         update({"tier": "'gold'"}, event=caused_by)))

    [letter] = actions.dead_letters_sent()
    assert letter["reason"] == "update chain stopped at depth 4 (TRIGGERS_MAX_UPDATE_DEPTH=3)"


# -- webhook ---------------------------------------------------------------------------------------


async def test_a_webhook_is_delivered_once_and_a_replay_is_skipped() -> None:
    actions = Actions()
    sink = actions.sink(Webhook)
    value = webhook_command(actions, webhook_trigger())
    first, replay = event(value, offset=0), event(value, offset=1)

    await sink.on_event(first)
    await actions.settled()
    await sink.on_event(replay)

    [call] = actions.http.calls
    assert (call.url, call.firing_id, call.secret, call.headers) == (URL, "f-1", None, {})
    assert json.loads(call.body) == value  # no payload template: the firing with its event
    assert first.acked and replay.acked
    assert actions.counters == Counter({"webhook.performed": 1, "webhook.replays_skipped": 1})
    assert actions.deliveries_table == {}  # delivered: no longer waiting


async def test_a_command_is_acknowledged_once_its_delivery_is_in_the_table_and_a_replay_meanwhile_is_skipped() -> None:
    actions = Actions()
    actions.http.hold = asyncio.Event()
    sink = actions.sink(Webhook)
    value = webhook_command(actions, webhook_trigger())
    first, replay = event(value, offset=0), event(value, offset=1)

    await sink.on_event(first)
    await sink.on_event(replay)
    assert first.acked and replay.acked  # the table, not the consumer, holds the running delivery
    assert list(actions.deliveries_table) == ["c-1|f-1"]
    assert actions.dispatcher.backlog()["inFlight"] == 1

    actions.http.hold.set()
    await actions.settled()
    assert len(actions.http.calls) == 1 and actions.deliveries_table == {}
    assert actions.counters["webhook.replays_skipped"] == 1


@pytest.mark.parametrize(("status", "reason"), [(404, "HTTP 404: not retryable"),
                                                (410, "HTTP 410 Gone: the endpoint is gone; schedule ended")])
async def test_a_request_fault_or_gone_is_dead_lettered_after_one_attempt(status: int, reason: str) -> None:
    actions = Actions()
    actions.http.statuses = [status]
    delivery = event(webhook_command(actions, webhook_trigger()))

    await actions.sink(Webhook).on_event(delivery)
    await actions.settled()

    [letter] = actions.dead_letters_sent()
    assert letter["reason"] == reason
    assert letter["attempts"] == [{"attempt": 1, "status": status, "error": None, "durationMs": 12.0}]
    assert delivery.acked and actions.performed_table == {} and actions.deliveries_table == {}


async def test_a_failing_endpoint_is_retried_on_the_schedule_and_dead_lettered_when_it_runs_out() -> None:
    actions = Actions()
    actions.http.statuses = [503, 503, 503]
    await actions.sink(Webhook).on_event(event(webhook_command(actions, webhook_trigger())))
    await actions.settled()
    assert [c.number for c in actions.http.calls] == [1]
    assert actions.deliveries_table["c-1|f-1"]["reason"] == "attempt 1 failed: HTTP 503"

    actions.dispatcher.pump_all()  # not due yet: nothing
    actions.clock.advance(timedelta(seconds=5))
    actions.dispatcher.pump_all()
    await actions.settled()
    actions.clock.advance(timedelta(seconds=59))
    actions.dispatcher.pump_all()
    await actions.settled()
    assert [c.number for c in actions.http.calls] == [1, 2]  # the third is due after 60 s
    actions.clock.advance(timedelta(seconds=1))
    actions.dispatcher.pump_all()
    await actions.settled()

    assert [c.number for c in actions.http.calls] == [1, 2, 3]
    [letter] = actions.dead_letters_sent()
    assert letter["reason"] == "gave up after 3 attempts (schedule exhausted): HTTP 503"
    assert [a["status"] for a in letter["attempts"]] == [503, 503, 503]
    assert actions.counters["webhook.retries_scheduled"] == 2 and actions.deliveries_table == {}


async def test_a_crashed_attempt_is_retried_not_lost() -> None:
    actions = Actions()
    actions.http.crash = RuntimeError("bug")
    delivery = event(webhook_command(actions, webhook_trigger()))

    await actions.sink(Webhook).on_event(delivery)
    await actions.settled()

    assert delivery.acked and actions.dead_letters_sent() == []
    assert actions.deliveries_table["c-1|f-1"]["reason"] == "attempt 1 failed: RuntimeError: bug"
    actions.http.crash = None
    actions.clock.advance(timedelta(seconds=5))
    actions.dispatcher.pump_all()
    await actions.settled()
    assert actions.counters["webhook.performed"] == 1


async def test_a_busy_endpoint_parks_deliveries_in_the_table_and_never_dead_letters_them() -> None:
    actions = Actions(per_endpoint=2)
    actions.http.hold = asyncio.Event()
    sink = actions.sink(Webhook)
    trigger = webhook_trigger()
    events = [event(webhook_command(actions, trigger, f"f-{n}"), n) for n in range(5)]

    for delivery in events:
        await sink.on_event(delivery)

    await asyncio.sleep(0)
    assert all(delivery.acked for delivery in events) and actions.dead_letters_sent() == []
    assert len(actions.http.calls) == 2
    assert actions.dispatcher.backlog()["parked"] == 3 and actions.counters["webhook.deferred"] == 3
    actions.http.hold.set()
    for _ in range(20):
        await asyncio.sleep(0)  # each finished attempt starts the next parked one
    await actions.settled()
    assert sorted(c.firing_id for c in actions.http.calls) == [f"f-{n}" for n in range(5)]
    assert actions.deliveries_table == {} and actions.counters["webhook.performed"] == 5


async def test_an_origins_rate_share_spaces_its_requests_and_the_rest_wait() -> None:
    actions = Actions(per_endpoint=8, per_second=4)  # this worker holds 4 of 8 partitions: 2/s
    sink = actions.sink(Webhook)
    trigger = webhook_trigger()
    for n in range(5):
        await sink.on_event(event(webhook_command(actions, trigger, f"f-{n}"), n))
    await actions.settled()
    assert len(actions.http.calls) == 1 and actions.counters["webhook.deferred"] == 4

    actions.clock.advance(timedelta(milliseconds=400))
    actions.dispatcher.pump_all()
    await actions.settled()
    assert len(actions.http.calls) == 1  # the next token is due 500 ms after the first
    actions.clock.advance(timedelta(milliseconds=100))
    actions.dispatcher.pump_all()
    await actions.settled()
    assert len(actions.http.calls) == 2
    for _ in range(3):
        actions.clock.advance(timedelta(milliseconds=500))
        actions.dispatcher.pump_all()
        await actions.settled()
    assert len(actions.http.calls) == 5 and actions.dead_letters_sent() == []


async def test_a_waiting_delivery_whose_header_is_gone_is_dead_lettered_at_its_next_attempt() -> None:
    actions = Actions()
    actions.http.statuses = [503]
    trigger = webhook_trigger(headers={"X-Key": "v"})
    await actions.sink(Webhook).on_event(event(webhook_command(actions, trigger)))
    await actions.settled()

    actions.define("triggers", "t-1", webhook_trigger())  # the header removed meanwhile
    actions.clock.advance(timedelta(seconds=5))
    actions.dispatcher.pump_all()
    await actions.settled()
    for _ in range(5):
        await asyncio.sleep(0)

    [letter] = actions.dead_letters_sent()
    assert "'X-Key'" in letter["reason"] and len(actions.http.calls) == 1
    assert actions.deliveries_table == {}


async def test_a_payload_template_is_rendered_with_the_customer_row() -> None:
    actions = Actions()
    actions.rows["customers|c-1"] = {"tier": "gold"}
    value = webhook_command(actions, webhook_trigger(payload={"text": "{{ event.amount }} by {{ customer.tier }}",
                                                              "trigger": "{{ trigger.id }}"}))

    await actions.sink(Webhook).on_event(event(value))
    await actions.settled()

    assert json.loads(actions.http.calls[0].body) == {"text": "1500 by gold", "trigger": "t-1"}


# The 13.2 defect "Webhook secret lookup", fixed: what the command names, from the definition as it is now.


async def test_a_signed_command_is_signed_with_the_current_secret_and_gets_its_named_headers() -> None:
    actions = Actions()
    value = webhook_command(actions, webhook_trigger(secret="old", headers={"X-Team": "growth"}))
    actions.define("triggers", "t-1", webhook_trigger(secret="new", headers={"x-team": "sales", "X-Other": "1"}))

    await actions.sink(Webhook).on_event(event(value))
    await actions.settled()

    [call] = actions.http.calls
    assert call.secret == "new"
    assert call.headers == {"x-team": "sales"}  # named then; X-Other was added since


async def test_an_unsigned_command_is_not_signed_though_its_definition_has_since_gained_a_secret() -> None:
    actions = Actions()
    value = webhook_command(actions, webhook_trigger(headers={"X-Team": "growth"}))
    assert value["action"]["signed"] is False and value["action"]["headerNames"] == ["X-Team"]
    actions.define("triggers", "t-1", webhook_trigger(secret="gained", headers={"X-Team": "growth"}))

    await actions.sink(Webhook).on_event(event(value))
    await actions.settled()

    [call] = actions.http.calls
    assert call.secret is None and call.headers == {"X-Team": "growth"}


@pytest.mark.parametrize(("then", "now", "reason"), [
    (webhook_trigger(headers={"X-Team": "growth", "X-Env": "prod"}), webhook_trigger(headers={"X-Env": "prod"}),
     "the trigger's header(s) 'X-Team' are no longer available (removed from its definition)"),
    (webhook_trigger(secret="s"), webhook_trigger(),
     "the trigger's secret is no longer available (removed from its definition)"),
    (webhook_trigger(secret="s"), None, DEFINITION_GONE),
    (webhook_trigger(headers={"X-Team": "growth"}),
     {"source": "streaming", "eventType": "purchase", "action": {"type": "enroll_journey", "journeyId": "j"}},
     DEFINITION_GONE),
])
async def test_a_command_whose_secret_or_named_header_is_gone_is_dead_lettered(
        then: dict[str, Any], now: dict[str, Any] | None, reason: str) -> None:
    actions = Actions()
    value = webhook_command(actions, then)
    actions.define("triggers", "t-1", now)
    delivery = event(value)

    await actions.sink(Webhook).on_event(delivery)

    assert [letter["reason"] for letter in actions.dead_letters_sent()] == [reason]
    assert actions.http.calls == [] and delivery.acked


async def test_an_unsigned_command_without_header_names_needs_no_definition() -> None:
    actions = Actions()
    value = webhook_command(actions, webhook_trigger())
    actions.define("triggers", "t-1", None)

    await actions.sink(Webhook).on_event(event(value))
    await actions.settled()

    assert len(actions.http.calls) == 1 and actions.dead_letters_sent() == []


# -- fire_recommend --------------------------------------------------------------------------------


FLOW = {"name": "NBO", "maxOffers": 2, "offers": [{"id": "a", "score": "2"}, {"id": "b", "score": "1"},
                                                   {"id": "c", "score": "0.5"}]}


async def test_a_recommendation_without_delivery_url_is_published_performed_and_acknowledged() -> None:
    actions = Actions()
    actions.define("decision_flows", "nbo", FLOW)
    sink = actions.sink(FireRecommend)
    value = command({"type": "fire_recommend", "decisionFlowId": "nbo", "channel": "email"})
    first, replay = event(value), event(value, 1)

    await sink.on_event(first)
    await sink.on_event(replay)

    [recommendation] = actions.producer.values(TOPICS.recommendations)
    assert [o["id"] for o in recommendation["offers"]] == ["a", "b"]
    assert recommendation["channel"] == "email" and recommendation["firingId"] == "f-1"
    assert first.acked and replay.acked and actions.http.calls == []
    assert actions.counters == Counter({"fire_recommend.performed": 1, "fire_recommend.replays_skipped": 1})


async def test_a_recommendation_with_delivery_url_is_posted_then_performed() -> None:
    actions = Actions()
    actions.define("decision_flows", "nbo", FLOW)
    value = command({"type": "fire_recommend", "decisionFlowId": "nbo", "deliveryUrl": URL})

    await actions.sink(FireRecommend).on_event(event(value))
    await actions.settled()

    [call] = actions.http.calls
    assert json.loads(call.body) == actions.producer.values(TOPICS.recommendations)[0]
    assert (call.secret, call.headers) == (None, {})
    assert actions.counters["fire_recommend.performed"] == 1


async def test_an_unknown_decision_flow_is_dead_lettered() -> None:
    actions = Actions()
    delivery = event(command({"type": "fire_recommend", "decisionFlowId": "gone"}))

    await actions.sink(FireRecommend).on_event(delivery)

    assert [letter["reason"] for letter in actions.dead_letters_sent()] == ["unknown decision flow 'gone'"]
    assert delivery.acked and actions.producer.values(TOPICS.recommendations) == []


# -- the Sink's safety net ---------------------------------------------------------------------------


class Exploding(Performer):
    action_type = "enroll_journey"

    def __init__(self, services: ActionServices, error: Exception) -> None:
        super().__init__(services)
        self.error = error

    async def perform(self, command: ActionCommand) -> HttpRequest | None:
        raise self.error


async def test_an_unexpected_error_is_dead_lettered_by_the_safety_net() -> None:
    actions = Actions()
    message = record(TOPICS.action("enroll_journey"), "c-1", command({"type": "enroll_journey", "journeyId": "j"}))

    await actions.sink(Exploding(actions.services, RuntimeError("boom"))).on_record(message)

    [letter] = actions.dead_letters_sent()
    assert letter["reason"] == "RuntimeError: boom" and letter["firingId"] == "f-1"
    assert actions.counters["enroll_journey.failures"] == 1 and actions.performed_table == {}


async def test_a_broker_error_is_not_the_commands_fault_and_propagates() -> None:
    actions = Actions()
    message = record(TOPICS.action("enroll_journey"), "c-1", command({"type": "enroll_journey", "journeyId": "j"}))

    with pytest.raises(KafkaConnectionError):
        await actions.sink(Exploding(actions.services, KafkaConnectionError())).on_record(message)
    assert actions.dead_letters_sent() == []


async def test_a_request_from_a_performer_consumed_without_acks_is_a_wiring_bug_dead_lettered() -> None:
    actions = Actions()
    actions.define("triggers", "t-1", webhook_trigger())

    await actions.sink(Webhook).on_record(record(TOPICS.action("webhook"), "c-1",
                                                 command({"type": "webhook", "url": URL})))

    [letter] = actions.dead_letters_sent()
    assert letter["reason"].startswith("RuntimeError: webhook delivers over HTTP")
    assert actions.http.calls == []


# -- journey events ---------------------------------------------------------------------------------


def journey_events(actions: Actions) -> JourneyEvents:
    return JourneyEvents(actions.enrollments, actions.publisher, 8, actions.counters, actions.clock)


async def enrolled(actions: Actions, customer_id: str = "c-1") -> None:
    actions.define("journeys", "vip", {})
    await actions.sink(EnrollJourney).on_record(record(
        TOPICS.action("enroll_journey"), customer_id,
        command({"type": "enroll_journey", "journeyId": "vip"}, customer_id=customer_id)))


async def test_a_journey_event_in_its_customers_partition_ends_the_enrollment() -> None:
    actions = Actions()
    await enrolled(actions)
    ended = {"customerId": "c-1", "journeyId": "vip", "status": "completed"}

    await journey_events(actions).on_record(record(TOPICS.journey_events, "c-1", ended,
                                                   partition=partition_for("c-1", 8)))

    assert actions.counters["journeys.ended"] == 1
    assert actions.enrollments.get("c-1") == []


async def test_a_journey_event_elsewhere_is_rerouted_and_ended_where_the_customer_lives() -> None:
    actions = Actions()
    await enrolled(actions)
    ended = {"customerId": "c-1", "journeyId": "vip", "status": "exited"}
    handler = journey_events(actions)

    await handler.on_record(record(TOPICS.journey_events, "someone-else", ended))

    [envelope] = actions.producer.values(TOPICS.rerouted)
    assert envelope["kind"] == "journey_event" and json.loads(envelope["value"]) == ended
    assert actions.producer.keys(TOPICS.rerouted) == ["c-1"] and actions.counters["journeys.ended"] == 0
    await handler.on_rerouted(envelope)
    assert actions.counters["journeys.ended"] == 1


async def test_a_malformed_journey_event_goes_to_the_events_dead_letter_topic() -> None:
    actions = Actions()

    await journey_events(actions).on_record(record(TOPICS.journey_events, "c-1",
                                                   {"customerId": "c-1", "journeyId": "vip", "status": "paused"}))

    [letter] = actions.producer.values(TOPICS.deadletter)
    assert letter["reason"] == "field 'status' must be one of completed, exited"
