"""The four action sinks: each performs a command once, however often Kafka delivers it."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from faust.types import EventT, Message
from pydantic import ValidationError

from app.agents.acks import InOrderAcks
from app.agents.pipeline import Pipeline
from app.domain import dedup, journeys
from app.domain.deadletters import RecordTooLarge, Unstorable, action_dead_letter
from app.domain.decisions import decide, decision_id
from app.domain.expressions import Budget, Expression, Scope, parse_expression
from app.domain.intake import MAX_ID_LENGTH, load_json
from app.domain.models import ActionCommand, Deduplication, Source, WebhookAction
from app.domain.schema import ColumnTypeError, check_row_values
from app.domain.webhooks import Template, compile_template
from app.errors import ExpressionFailed, InvalidExpression, MalformedEvent
from app.kafka.publisher import Publisher
from app.kafka.records import RawRecord
from app.metrics import reason_code
from app.registry.catalogs import Catalogs
from app.settings import Settings
from app.state.rows import RowStore
from app.state.tables import Table, stored

if TYPE_CHECKING:
    from app.kafka.app import TriggerApp
from app.sinks.http import DeliveryResult, HttpDelivery
from app.topics import Topics

log = logging.getLogger(__name__)

JOURNEY_END_STATUSES = ("completed", "exited")


class ActionFailed(Exception):
    """A command that cannot be performed; it goes to `actions.deadletter` with this reason."""


@lru_cache(maxsize=4096)
def _expression(text: str) -> Expression:
    return parse_expression(text)


@lru_cache(maxsize=1024)
def _template(source_json: str) -> Template:
    return compile_template(json.loads(source_json))


class Sinks:
    def __init__(self, app: TriggerApp, settings: Settings, topics: Topics, catalogs: Catalogs,
                 pipeline: Pipeline, publisher: Publisher, row_store: RowStore, performed: Table,
                 enrollments: Table, http: HttpDelivery, clock: Callable[[], datetime]) -> None:
        self.settings = settings
        self.publisher = publisher
        self.row_store = row_store
        self.names = topics
        self.catalogs = catalogs
        self.pipeline = pipeline
        self.metrics = pipeline.metrics
        self.performed = performed
        self.enrollments = enrollments
        self.http = http
        self.clock = clock
        self.counters: Counter[str] = Counter()

        topic = app.raw_topic
        self.topics = {kind: topic(topics.action(kind)) for kind in
                       ("webhook", "fire_recommend", "enroll_journey", "update_attribute")}
        self.journey_events_topic = topic(topics.journey_events)
        self._pending_per_endpoint: Counter[str] = Counter()
        # Per endpoint (scheme, host, port, path): one slow endpoint holds only its own slots.
        self._endpoint_slots: dict[str, asyncio.Semaphore] = {}
        self._in_flight_ids: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight: asyncio.Semaphore | None = None
        self._acks = InOrderAcks()
        pipeline.rerouted_handlers["journey_event"] = self.on_rerouted_journey_event

    def backlog(self) -> dict[str, int]:
        """What the webhook and recommendation sinks hold in memory right now (for /health)."""
        return {"inFlight": sum(self._pending_per_endpoint.values()),
                "endpoints": sum(1 for n in self._pending_per_endpoint.values() if n),
                "unacknowledged": self._acks.waiting()}

    # -- shared -----------------------------------------------------------------------------

    @staticmethod
    def _reason(exc: Exception) -> str:
        return str(exc) if isinstance(exc, ActionFailed) else f"malformed action: {type(exc).__name__}: {exc}"

    def _command(self, message: RawRecord | Message) -> ActionCommand:
        try:
            command = ActionCommand.model_validate(load_json(message.value or b"null"))
        except (ValueError, RecursionError, ValidationError) as exc:
            raise ActionFailed(f"malformed action command: {exc}") from None
        # These ids are stored (performed, enrollments) and become keys: bounded like an event's.
        for name, value in (("firingId", command.firing_id), ("triggerId", command.trigger_id),
                            ("customerId", command.customer_id), ("eventId", command.event_id)):
            if not value or len(value) > MAX_ID_LENGTH:
                raise ActionFailed(f"malformed action command: field {name!r} must be 1 to "
                                   f"{MAX_ID_LENGTH} characters")
        return command

    async def _failed(self, sink: str, message: RawRecord | Message, command: ActionCommand | None,
                      exc: Exception) -> None:
        """The safety net (see Pipeline.record_failed): dead-letter the command, go on."""
        if isinstance(exc, KafkaError) and not isinstance(exc, MessageSizeTooLargeError):
            raise exc
        self.counters[f"{sink}.failures"] += 1
        log.error("action failed unexpectedly; dead-lettered", exc_info=exc,
                  extra={"action": sink, "topic": message.topic, "offset": message.offset})
        await self._dead_letter(sink, message, command, f"{type(exc).__name__}: {exc}")

    def _done_before(self, sink: str, command: ActionCommand) -> bool:
        log_ = stored(self.performed, f"{sink}|{command.customer_id}")
        if dedup.already_performed(log_, command.firing_id) or command.firing_id in self._in_flight_ids:
            self.counters[f"{sink}.replays_skipped"] += 1
            self.metrics.sink_outcomes.labels(sink, "replay_skipped").inc()
            return True
        return False

    def _remember(self, sink: str, command: ActionCommand) -> None:
        key = f"{sink}|{command.customer_id}"
        self.performed[key] = dedup.remember(
            stored(self.performed, key), command.firing_id, self.clock(),
            timedelta(days=self.settings.dedup_retention_days), self.settings.dedup_max_per_customer)
        self.counters[f"{sink}.performed"] += 1
        self.metrics.sink_outcomes.labels(sink, "performed").inc()

    async def _dead_letter(self, sink: str, message: RawRecord | Message, command: ActionCommand | None,
                           reason: str, result: DeliveryResult | None = None) -> None:
        self.counters[f"{sink}.deadlettered"] += 1
        self.metrics.sink_outcomes.labels(sink, "deadlettered").inc()
        self.metrics.dead_letters.labels(self.names.actions_deadletter, reason_code(reason)).inc()
        log.warning("action dead-lettered", extra={"action": sink, "reason": reason[:200],
                                                   "firingId": command.firing_id if command else None})
        record = action_dead_letter(
            sink, reason, self.clock().isoformat(),
            [a.to_json() for a in result.attempts] if result else [],
            command.to_json() if command is not None else None,
            {"topic": message.topic, "partition": message.partition, "offset": message.offset},
            message.value)
        key = command.customer_id if command else None
        try:
            await self.publisher.send(self.names.actions_deadletter, key, record)
        except (RecordTooLarge, MessageSizeTooLargeError, TypeError, ValueError) as exc:
            # Bounded by construction, so this is a bug: say so loudly, and go on.
            self.counters["deadletter_failures"] += 1
            log.error("action dead letter could not be written", exc_info=exc, extra={"action": sink})

    def _scope(self, command: ActionCommand, **extra: dict[str, Any]) -> Scope:
        return Scope(event=command.event, customer=self.row_store.customer(command.customer_id),
                     now=self.clock(), extra=extra)

    # -- webhook ----------------------------------------------------------------------------

    async def on_webhook(self, event: EventT[Any]) -> None:
        """Deliveries run in their own tasks so a slow endpoint holds only its own slots; the
        message is acknowledged (its offset may commit) when its delivery and every earlier
        one in its partition have ended."""
        self._acks.begin(event)
        command: ActionCommand | None = None
        try:
            command = self._command(event.message)
            if self._done_before("webhook", command):
                self._acks.finish(event)
                return
            url, body, secret, headers = self._webhook_request(command)
            await self._dispatch("webhook", event, command, url, body, secret, headers)
        except (ActionFailed, KeyError, TypeError, ValueError) as exc:
            await self._dead_letter("webhook", event.message, command, self._reason(exc))
            self._acks.finish(event)
        except Exception as exc:  # noqa: BLE001 - the safety net
            await self._failed("webhook", event.message, command, exc)
            self._acks.finish(event)

    def _webhook_request(self, command: ActionCommand) -> tuple[str, bytes, str | None, dict[str, str]]:
        action = command.action
        secret, headers = None, {}
        if action.get("signed") or action.get("headerNames"):
            trigger = self.catalogs.triggers.get(command.trigger_id)
            configured = trigger.definition.action if trigger else None
            if not isinstance(configured, WebhookAction) or (action.get("signed") and configured.secret is None):
                raise ActionFailed("the trigger's secret or headers are no longer available "
                                   "(trigger deleted or changed)")
            secret = configured.secret.get_secret_value() if configured.secret else None
            headers = dict(configured.headers)
        payload: Any = command.to_json()
        if action.get("payload") is not None:
            trigger_info = {"id": command.trigger_id, "priority": command.priority}
            firing = {k: v for k, v in command.to_json().items() if k != "event"}
            try:
                template = _template(json.dumps(action["payload"], sort_keys=True))
                payload = template.render(self._scope(command, trigger=trigger_info, firing=firing))
            except (InvalidExpression, ExpressionFailed) as exc:
                raise ActionFailed(f"payload template failed: {exc}") from None
        try:
            body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise ActionFailed(f"payload is not JSON: {exc}") from None
        return str(action["url"]), body, secret, headers

    async def _dispatch(self, sink: str, event: EventT[Any], command: ActionCommand, url: str,
                        body: bytes, secret: str | None, headers: dict[str, str]) -> None:
        endpoint = _endpoint(url)
        if self._pending_per_endpoint[endpoint] >= self.settings.webhook_per_endpoint_backlog:
            await self._dead_letter(sink, event.message, command,
                                    f"backlog for {endpoint} is full ({self.settings.webhook_per_endpoint_backlog})")
            self._acks.finish(event)
            return
        if self._in_flight is None:
            self._in_flight = asyncio.Semaphore(self.settings.webhook_max_in_flight)
        await self._in_flight.acquire()  # bounded memory: the consumer waits here when full
        self._pending_per_endpoint[endpoint] += 1
        self._in_flight_ids.add(command.firing_id)
        # Created while this event is the stream's current event, so the task's table writes
        # land in this event's partition.
        task = asyncio.ensure_future(self._deliver(sink, event, command, endpoint, url, body, secret, headers))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, sink: str, event: EventT[Any], command: ActionCommand, endpoint: str,
                       url: str, body: bytes, secret: str | None, headers: dict[str, str]) -> None:
        try:
            slots = self._endpoint_slots.setdefault(
                endpoint, asyncio.Semaphore(self.settings.webhook_per_endpoint_concurrency))
            async with slots:
                started = time.perf_counter()
                result = await self.http.deliver(url, body, command.firing_id, secret, headers)
                self.metrics.delivery_seconds.labels(sink).observe(time.perf_counter() - started)
            if result.delivered:
                self._remember(sink, command)
            else:
                await self._dead_letter(sink, event.message, command, result.reason or "failed", result)
        except Exception as exc:  # noqa: BLE001 - a delivery bug must not lose the command silently
            log.exception("delivery crashed", extra={"firingId": command.firing_id})
            await self._dead_letter(sink, event.message, command, f"{type(exc).__name__}: {exc}")
        finally:
            self._pending_per_endpoint[endpoint] -= 1
            self._in_flight_ids.discard(command.firing_id)
            assert self._in_flight is not None
            self._in_flight.release()
            self._acks.finish(event)

    # -- fire_recommend ---------------------------------------------------------------------

    async def on_fire_recommend(self, event: EventT[Any]) -> None:
        self._acks.begin(event)
        command: ActionCommand | None = None
        try:
            command = self._command(event.message)
            if self._done_before("fire_recommend", command):
                self._acks.finish(event)
                return
            recommendation = self._recommend(command)
            await self.publisher.send(self.names.recommendations, command.customer_id, recommendation)
            url = command.action.get("deliveryUrl")
            if not url:
                self._remember("fire_recommend", command)
                self._acks.finish(event)
                return
            body = json.dumps(recommendation, separators=(",", ":")).encode()
            await self._dispatch("fire_recommend", event, command, str(url), body, None, {})
        except (ActionFailed, KeyError, TypeError, ValueError) as exc:
            await self._dead_letter("fire_recommend", event.message, command, self._reason(exc))
            self._acks.finish(event)
        except Exception as exc:  # noqa: BLE001 - the safety net
            await self._failed("fire_recommend", event.message, command, exc)
            self._acks.finish(event)

    def _recommend(self, command: ActionCommand) -> dict[str, Any]:
        flow_id = str(command.action["decisionFlowId"])
        flow = self.catalogs.decision_flows.get(flow_id)
        if flow is None:
            raise ActionFailed(f"unknown decision flow {flow_id!r}")
        offers, errors = decide(flow, self._scope(command))
        for error in errors:
            log.debug("offer skipped", extra={"decisionFlowId": flow_id, "error": error})
        return {"decisionId": decision_id(command.firing_id), "decisionFlowId": flow_id,
                "customerId": command.customer_id, "offers": offers, "firingId": command.firing_id,
                "at": self.clock().isoformat(), "channel": command.action.get("channel")}

    # -- enroll_journey ---------------------------------------------------------------------

    async def on_enroll_journey(self, message: RawRecord) -> None:
        command: ActionCommand | None = None
        try:
            command = self._command(message)
            if self._done_before("enroll_journey", command):
                return
            record = self._enroll(command)
            await self.publisher.send(self.names.enrollments, command.customer_id, record)
            self._remember("enroll_journey", command)
        except (ActionFailed, KeyError, TypeError, ValueError) as exc:
            await self._dead_letter("enroll_journey", message, command, self._reason(exc))
        except Exception as exc:  # noqa: BLE001 - the safety net
            await self._failed("enroll_journey", message, command, exc)

    def _enroll(self, command: ActionCommand) -> dict[str, Any]:
        journey_id = str(command.action["journeyId"])
        journey = self.catalogs.journeys.get(journey_id)
        if journey is None:
            raise ActionFailed(f"unknown journey {journey_id!r}")
        now = self.clock()
        mode = Deduplication(command.action.get("deduplication", Deduplication.SKIP_IF_ACTIVE))
        state, decision = journeys.enroll(self._enrollments(command.customer_id), journey, mode,
                                          command.firing_id, now)
        self.enrollments[command.customer_id] = [e.to_json() for e in state]
        return {"enrollmentId": decision.enrollment_id, "journeyId": journey_id,
                "customerId": command.customer_id, "status": decision.status,
                "firingId": command.firing_id, "at": now.isoformat()}

    def _enrollments(self, customer_id: str) -> list[journeys.Enrollment]:
        return [journeys.Enrollment.from_json(e) for e in stored(self.enrollments, customer_id) or []]

    async def on_journey_event(self, message: RawRecord) -> None:
        """`journeys.events`: a journey service says an enrollment completed or exited."""
        try:
            customer_id, journey_id, enrollment_id, status = _journey_event(message.value)
            if not self.pipeline.owned_here(message, customer_id):
                await self.publisher.send(self.names.rerouted, customer_id, json.dumps({
                    "kind": "journey_event", "value": (message.value or b"").decode()},
                    separators=(",", ":")).encode())
                return
            self.end_enrollment(customer_id, journey_id, enrollment_id, status)
        except MalformedEvent as exc:
            await self.publisher.dead_letter(message, exc.reason)
        except Exception as exc:  # noqa: BLE001 - the safety net
            await self.publisher.record_failed(message, exc)

    async def on_rerouted_journey_event(self, data: dict[str, Any]) -> None:
        """Raises MalformedEvent for an envelope this engine did not write (the rerouted
        topic's handler dead-letters it)."""
        value = data.get("value")
        if not isinstance(value, str):
            raise MalformedEvent("a rerouted journey event has a text 'value'")
        customer_id, journey_id, enrollment_id, status = _journey_event(value.encode())
        self.end_enrollment(customer_id, journey_id, enrollment_id, status)

    def end_enrollment(self, customer_id: str, journey_id: str, enrollment_id: str | None, status: str) -> None:
        state, ended = journeys.end(self._enrollments(customer_id), journey_id, enrollment_id, self.clock())
        if ended:
            self.counters["journeys.ended"] += len(ended)
            self.enrollments[customer_id] = [e.to_json() for e in state]
            log.info("enrollment ended", extra={"customerId": customer_id, "journeyId": journey_id,
                                                "status": status, "count": len(ended)})

    # -- update_attribute -------------------------------------------------------------------

    async def on_update_attribute(self, message: RawRecord) -> None:
        command: ActionCommand | None = None
        try:
            command = self._command(message)
            if self._done_before("update_attribute", command):
                return
            table, values, depth = self._attribute_values(command)
            try:
                await self.row_store.write(table, command.customer_id, values, depth=depth,
                                              firing_id=command.firing_id)
            except (Unstorable, RecordTooLarge) as exc:  # nothing was written
                raise ActionFailed(str(exc)) from None
            self._remember("update_attribute", command)
        except (ActionFailed, KeyError, TypeError, ValueError) as exc:
            await self._dead_letter("update_attribute", message, command, self._reason(exc))
        except Exception as exc:  # noqa: BLE001 - the safety net
            await self._failed("update_attribute", message, command, exc)

    def _attribute_values(self, command: ActionCommand) -> tuple[str, dict[str, Any], int]:
        table_name = str(command.action.get("table", "customers"))
        table = self.catalogs.tables.table(table_name)
        if table is None:
            raise ActionFailed(f"unknown schema table {table_name!r}")
        # A change this sink makes is itself a schema_table event; count the chain so a
        # trigger that updates what it listens to stops instead of looping forever.
        caused_by_change = command.event.get("source") == Source.SCHEMA_TABLE.value
        previous = command.event.get("depth")
        depth = (max(previous, 0) if isinstance(previous, int) and not isinstance(previous, bool)
                 and caused_by_change else 0) + 1
        if depth > self.settings.max_update_depth:
            raise ActionFailed(f"update chain stopped at depth {depth} "
                               f"(TRIGGERS_MAX_UPDATE_DEPTH={self.settings.max_update_depth})")
        scope = self._scope(command)
        try:
            budget = Budget()  # one for all of a command's attributes, as for an event's conditions
            values = {name: _expression(text).evaluate(scope, budget)
                      for name, text in dict(command.action["attributes"]).items()}
            return table_name, check_row_values(table, values), depth
        except (InvalidExpression, ExpressionFailed, ColumnTypeError) as exc:
            raise ActionFailed(str(exc)) from None


def _endpoint(url: str) -> str:
    """Where a delivery goes, for its concurrency slots and in reasons: no userinfo (a
    credential) and no query (its values may be too)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def _journey_event(raw: bytes | None) -> tuple[str, str, str | None, str]:
    try:
        data = load_json(raw or b"null")
    except ValueError as exc:
        raise MalformedEvent(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedEvent("a journey event is a JSON object")
    customer_id, journey_id = data.get("customerId"), data.get("journeyId")
    enrollment_id, status = data.get("enrollmentId"), data.get("status")
    if not isinstance(customer_id, str) or not customer_id:
        raise MalformedEvent("field 'customerId' must be a non-empty string")
    if not isinstance(journey_id, str) or not journey_id:
        raise MalformedEvent("field 'journeyId' must be a non-empty string")
    if enrollment_id is not None and not isinstance(enrollment_id, str):
        raise MalformedEvent("field 'enrollmentId' must be a string")
    if status not in JOURNEY_END_STATUSES:
        raise MalformedEvent(f"field 'status' must be one of {', '.join(JOURNEY_END_STATUSES)}")
    return customer_id, journey_id, enrollment_id, status
