"""The worker's HTTP API: thin views over the topics, with every check in plain functions.

Writes never change state directly: they publish to the same topics an outside Kafka
producer would use (events, outcomes, definitions), so the API and Kafka clients see one
behaviour. Nothing is published unless the whole request is valid.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web as aiohttp_web
from aiokafka.errors import KafkaError
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from faust.web import Request, Response, View
from faust.web.exceptions import WebError

from app.backtest.service import BacktestBusy, Backtests, BadBacktestRequest, parse_backtest_request
from app.domain.definitions import CompiledTrigger, compile_definition
from app.domain.encoding import encode
from app.domain.engine import explain
from app.domain.intake import load_unique_json, parse_event
from app.domain.models import Event, Source
from app.domain.replay import parse_since
from app.domain.secrets import ApiToken, mask_url, mask_urls_in_text
from app.domain.versions import (
    AuditEntry,
    DefinitionVersion,
    NotRestorable,
    UnknownVersion,
    history_json,
    restorable,
)
from app.errors import InvalidDefinition, MalformedEvent
from app.experiments.report import ReportUnavailable, build_report, read_records
from app.registry import audit
from app.registry.audit import restored_value
from app.web.auth import Unauthorized, authenticate

if TYPE_CHECKING:
    from app.kafka.app import TriggerApp
    from app.metrics import Metrics
    from app.policies.gate import ContactGate
from app.state.aggregates import AggregateStore
from app.state.rows import RowStore

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MASK = "**********"
DRY_RUN_EVENT_ID = "dry-run"
_TEST_REQUEST_FIELDS = frozenset({"event", "customer", "definition"})
_ROUTED_METHODS = frozenset({"HEAD", "GET", "POST", "PUT", "PATCH", "DELETE"})
_URL_FIELDS = ("url", "deliveryUrl")
# Where a view finds the request's actor (aiohttp requests hold per-request values by key).
ACTOR = "triggers.actor"


class ApiError(Exception):
    """A request that is answered with `status` and a JSON body; nothing was published."""

    def __init__(self, status: int, error: str, headers: Mapping[str, str] | None = None,
                 **details: Any) -> None:
        super().__init__(error)
        self.status = status
        self.body: dict[str, Any] = {"error": error, **details}
        self.headers = dict(headers or {})


# -- request checks (plain functions, unit-tested without a server) ------------------------


def check_bearer(authorization: str | None, tokens: tuple[ApiToken, ...]) -> str:
    """The request's actor (the matching token's name; `anonymous` when no token is
    configured), or 401 with a Bearer challenge."""
    try:
        return authenticate(authorization, tokens)
    except Unauthorized as exc:
        raise ApiError(401, str(exc), {"WWW-Authenticate": "Bearer"}) from None


def check_content_length(content_length: str | None, limit: int = MAX_BODY_BYTES) -> None:
    """Raise 413 for a declared body larger than `limit` (400 for a nonsense header)."""
    if content_length is None:
        return
    try:
        declared = int(content_length)
    except ValueError:
        raise ApiError(400, f"invalid Content-Length {content_length[:32]!r}") from None
    if declared > limit:
        raise ApiError(413, f"request body is larger than {limit} bytes", limit=limit)


def parse_json_body(raw: bytes, limit: int = MAX_BODY_BYTES) -> Any:
    """The body as strict JSON (no NaN or Infinity), or 413 / 400."""
    if len(raw) > limit:
        raise ApiError(413, f"request body is larger than {limit} bytes", limit=limit)
    if not raw.strip():
        raise ApiError(400, "request body is empty: expected JSON")
    try:
        return load_unique_json(raw)  # a repeated key is refused, not silently last-wins
    except UnicodeDecodeError:
        raise ApiError(400, "request body is not UTF-8 JSON") from None
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None


def event_errors(data: Any, source: Source) -> tuple[list[Any], list[dict[str, Any]]]:
    """The items of a body that is one event or a list of events, and every problem found,
    as `{"index", "error"}` (a single event is index 0). Uses the intake's own rules."""
    items = data if isinstance(data, list) else [data]
    errors: list[dict[str, Any]] = []
    if isinstance(data, list) and not data:
        errors.append({"index": None, "error": "the list is empty: expected at least one event"})
    for index, item in enumerate(items):
        error = _event_error(item, source)
        if error is not None:
            errors.append({"index": index, "error": error})
    return items, errors


def _event_error(item: Any, source: Source) -> str | None:
    try:
        raw = json.dumps(item, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        return f"not valid JSON: {exc}"
    try:
        parse_event(raw, source, DRY_RUN_EVENT_ID, datetime.now(UTC))
    except MalformedEvent as exc:
        return exc.reason
    return None


def prepare_events(data: Any, source: Source,
                   new_id: Callable[[], str] = lambda: uuid.uuid4().hex) -> list[dict[str, Any]]:
    """Every event ready to publish, each with an `id`; or 400 listing every problem."""
    items, errors = event_errors(data, source)
    if errors:
        bad = len({e["index"] for e in errors})
        what = "event" if bad == 1 else "events"
        raise ApiError(400, f"{bad} invalid {what}; nothing was published", errors=errors)
    return [item if item.get("id") else {**item, "id": new_id()} for item in items]


def check_record_sizes(records: list[tuple[str, Any]], limit: int) -> None:
    """413 listing every record Kafka's producer would refuse as too large, before any is sent
    (the body limit alone does not ensure it: the producer's limit is a little lower)."""
    errors = []
    for index, (key, value) in enumerate(records):
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key.encode(), encode(value), [])
        if size > limit:
            errors.append({"index": index,
                           "error": f"the Kafka record would be {size} bytes; the limit is {limit} bytes"})
    if errors:
        raise ApiError(413, "too large for a Kafka record; nothing was published", errors=errors, limit=limit)


def definition_for(body: Any, trigger_id: str) -> dict[str, Any]:
    """The definition to publish for PUT /triggers/{id}: the body with `id` defaulted to the
    path's id, after a full compile; 422 listing every problem otherwise."""
    if not isinstance(body, dict):
        raise _unprocessable(trigger_id, [f"a definition is a JSON object, not {_json_type(body)}"])
    definition: dict[str, Any] = dict(body)
    if definition.get("id") is None:
        definition["id"] = trigger_id
    elif definition["id"] != trigger_id:
        raise _unprocessable(trigger_id, [
            f"id {definition['id']!r} in the body does not match {trigger_id!r} in the path"])
    compile_trigger(definition, trigger_id)
    return definition


def compile_trigger(body: dict[str, Any], trigger_id: str) -> CompiledTrigger:
    try:
        return compile_definition(body, key=trigger_id)
    except InvalidDefinition as exc:
        raise _unprocessable(trigger_id, exc.errors) from None


def _unprocessable(trigger_id: str, errors: list[str]) -> ApiError:
    return ApiError(422, "invalid definition; nothing was published: " + "; ".join(errors),
                    triggerId=trigger_id, errors=errors)


@dataclass(frozen=True)
class DryRun:
    """A checked POST /triggers/{id}/test body."""

    event: dict[str, Any]
    customer: dict[str, Any] | None
    customer_given: bool
    definition: Any  # None: use the stored definition


def parse_test_request(body: Any) -> DryRun:
    """`{"event": {...}, "customer": {...} | null (optional), "definition": {...} (optional)}`."""
    if not isinstance(body, dict):
        raise ApiError(400, f"expected a JSON object with an 'event', not {_json_type(body)}")
    unknown = sorted(set(body) - _TEST_REQUEST_FIELDS)
    if unknown:
        raise ApiError(400, f"unknown fields {unknown}: expected 'event', 'customer', 'definition'")
    event = body.get("event")
    if not isinstance(event, dict):
        raise ApiError(400, "field 'event' must be a JSON object (the event to test)")
    customer = body.get("customer")
    if customer is not None and not isinstance(customer, dict):
        raise ApiError(400, "field 'customer' must be a JSON object or null")
    return DryRun(event, customer, "customer" in body, body.get("definition"))


def dry_run_event(event: dict[str, Any], source: Source, now: datetime) -> Event:
    """The test event as the intake would read it from `source`'s topic; 400 when malformed."""
    try:
        raw = json.dumps(event, allow_nan=False).encode()
        return parse_event(raw, source, DRY_RUN_EVENT_ID, now)
    except (TypeError, ValueError) as exc:
        raise ApiError(400, f"event: not valid JSON: {exc}") from None
    except MalformedEvent as exc:
        raise ApiError(400, f"event: {exc.reason}", errors=[{"index": 0, "error": exc.reason}]) from None


def public_trigger(trigger: CompiledTrigger) -> dict[str, Any]:
    """A definition as the read endpoints show it: the webhook secret and header values
    (often credentials) masked, header names kept, secrets inside URLs masked."""
    data = trigger.definition.public_dict()
    data["action"] = _masked(data.get("action"))
    for variant in (data.get("experiment") or {}).get("variants", []):  # a variant's action, masked alike
        variant["action"] = _masked(variant.get("action"))
    return data


def _masked(action: Any) -> Any:
    if not isinstance(action, dict):
        return action
    shown = public_action(action)
    if isinstance(action.get("headers"), dict):
        shown["headers"] = {name: MASK for name in action["headers"]}
    return shown


def public_action(action: dict[str, Any]) -> dict[str, Any]:
    """A copy of an action with the userinfo, query values and fragment of its URLs masked."""
    shown = dict(action)
    for field in _URL_FIELDS:
        if isinstance(shown.get(field), str):
            shown[field] = mask_url(shown[field])
    return shown


def versioned(data: dict[str, Any], version: DefinitionVersion | None) -> dict[str, Any]:
    """A definition as read, with its current version, when it changed and who changed it."""
    return data | (version.to_json() if version is not None else {"version": None, "changedAt": None, "actor": None})


def rollback_version(body: Any) -> int:
    """The `to` of a rollback request, or 400."""
    if not isinstance(body, dict) or set(body) != {"to"}:
        raise ApiError(400, 'expected {"to": VERSION}')
    to = body["to"]
    if not isinstance(to, int) or isinstance(to, bool) or to < 0:
        raise ApiError(400, f"field 'to' must be a version number (a non-negative integer), not {_json_type(to)}")
    return to


def public_errors(errors: list[str]) -> list[str]:
    """Rejection reasons as shown to readers: they may quote a URL from the definition."""
    return [mask_urls_in_text(error) for error in errors]


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
             float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


# -- views ---------------------------------------------------------------------------------


class ApiView(View):
    """Errors as JSON: ApiError with its status, a method the view lacks as a 405 with
    `Allow`, anything unexpected as a 500."""

    def get_methods(self) -> set[str]:
        # Route every method here, so the ones not implemented get a JSON 405 too.
        return set(_ROUTED_METHODS)

    def allowed_methods(self) -> set[str]:
        methods = set(super().get_methods())
        if "GET" not in methods:
            methods.discard("HEAD")  # faust answers HEAD with get()
        return methods

    # The configured tokens, set on each routed subclass by register_api; a public view
    # (`/metrics`) needs none.
    tokens: tuple[ApiToken, ...] = ()
    public = False

    async def dispatch(self, request: Any) -> Any:
        try:
            if not self.public:
                request[ACTOR] = check_bearer(request.headers.get("Authorization"), self.tokens)
            return await super().dispatch(request)
        except ApiError as exc:
            return self.json(exc.body, status=exc.status, headers=exc.headers or None)
        except Exception:
            log.exception("API request failed", extra={"method": request.method, "path": request.path})
            return self.json({"error": "internal error"}, status=500)

    async def on_request_error(self, request: Request, exc: WebError) -> Response:
        allow = {"Allow": ", ".join(sorted(self.allowed_methods()))} if exc.code == 405 else None
        return self.error(exc.code, exc.detail, headers=allow, **exc.extra_context)


@dataclass
class Api:
    """What the views need, bound once in register_api."""

    app: TriggerApp
    row_store: RowStore
    clock: Callable[[], datetime]
    metrics: Metrics
    tokens: tuple[ApiToken, ...]
    gate: ContactGate | None = None

    def policies_now(self, trigger: CompiledTrigger, customer_id: str, customer: dict[str, Any] | None,
                     now: datetime) -> dict[str, Any] | None:
        """For a dry run: the contact policies and limit that would apply, and the customer's standing."""
        return self.gate.explain(trigger, customer_id, customer, now) if self.gate is not None else None

    async def write_body(self, request: Request) -> Any:
        """A write's body (bounded) as JSON; the caller was authorised by ApiView.dispatch."""
        check_content_length(request.headers.get("Content-Length"))
        return parse_json_body(await _read_bounded(request))

    async def publish(self, request: Request, topic: str, records: list[tuple[str, Any]], **details: Any) -> None:
        """Publish every record (all or none are too large) with the request's actor as the
        `actor` header, then wait until the broker has acknowledged each one."""
        check_record_sizes(records, self.app.conf.producer_max_request_size)
        actor = actor_of(request)
        headers = actor_headers(actor)
        published = 0
        try:
            deliveries = []
            for key, value in records:
                deliveries.append(await self.app.producer.send(
                    topic, key.encode(), encode(value), None, None, headers))
                published += 1
            await self.app.producer.flush()
            for delivery in deliveries:
                await delivery
        except Exception as exc:
            log.exception("API could not publish", extra={"actor": actor, "topic": topic, "published": published,
                                                          "records": len(records)})
            raise ApiError(503, f"could not publish to Kafka ({published} of {len(records)} records sent; "
                                f"retry the request): {type(exc).__name__}", published=published, **details) from exc
        log.info("API write", extra={"actor": actor, "method": request.method, "topic": topic,
                                     "records": len(records), **_logged(details)})

    async def versions(self, trigger_id: str) -> list[AuditEntry]:
        """The trigger's versions from the audit trail (its newest records), or 404."""
        try:
            return await audit.versions(self.app.settings, self.app.topic_names, "trigger", trigger_id)
        except UnknownVersion as exc:
            raise ApiError(404, str(exc), triggerId=trigger_id) from None

    async def delete_definition(self, request: Request, trigger_id: str) -> None:
        """Publish the tombstone (a null value) and wait for the broker's acknowledgement."""
        actor = actor_of(request)
        topic = self.app.topic_names.definitions
        try:
            sent = await self.app.producer.send(topic, trigger_id.encode(), None, None, None, actor_headers(actor))
            await sent
        except Exception as exc:
            log.exception("API could not publish a tombstone", extra={"actor": actor, "triggerId": trigger_id})
            raise ApiError(503, f"could not publish to Kafka (retry the request): {type(exc).__name__}",
                           triggerId=trigger_id) from exc
        log.info("API write", extra={"actor": actor, "method": request.method, "topic": topic,
                                     "records": 1, "triggerId": trigger_id})


def actor_of(request: Request) -> str:
    return cast(str, cast(aiohttp_web.Request, request)[ACTOR])


def actor_headers(actor: str) -> list[tuple[str, bytes]]:
    """Kafka record headers naming who made a write (read later by the audit trail)."""
    return [("actor", actor.encode())]


def _logged(details: dict[str, Any]) -> dict[str, Any]:
    """What of a write's details goes into its log line: the trigger id, never a payload."""
    return {key: value for key, value in details.items() if key == "triggerId"}


async def _read_bounded(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, read no further than one byte past `limit` (then 413)."""
    content = cast(aiohttp_web.Request, request).content
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await content.read(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body is larger than {limit} bytes", limit=limit)
        chunks.append(chunk)


def register_api(app: TriggerApp, row_store: RowStore, aggregates: AggregateStore, gate: ContactGate,
                 clock: Callable[[], datetime], metrics: Metrics) -> None:
    """Add the API's pages to `app` (paths work with and without a trailing slash)."""
    api = Api(app, row_store, clock, metrics, app.settings.api_tokens, gate)

    def page(path: str, name: str, view: type[View]) -> None:
        for variant in (path, path + "/"):
            routed = type(f"{view.__name__}_{len(variant)}", (view,), {"tokens": api.tokens})
            app.page(variant, name=f"api-{name}{'-slash' if variant.endswith('/') else ''}")(routed)

    class Events(ApiView):
        async def post(self, request: Request) -> Response:
            events = prepare_events(await api.write_body(request), Source.STREAMING)
            ids = [e["id"] for e in events]  # a retry with these ids is recognised downstream
            await api.publish(request, app.topic_names.streaming, [(e["customerId"], e) for e in events], ids=ids)
            return self.json({"accepted": len(events), "ids": ids}, status=202)

    class Respond(ApiView):
        async def post(self, request: Request) -> Response:
            outcomes = prepare_events(await api.write_body(request), Source.OUTCOME)
            ids = [e["id"] for e in outcomes]
            await api.publish(request, app.topic_names.outcomes, [(e["customerId"], e) for e in outcomes], ids=ids)
            return self.json({"accepted": len(outcomes), "ids": ids}, status=202)

    class TriggerList(ApiView):
        async def get(self, request: Request) -> Response:
            catalog = app.catalogs.triggers
            return self.json({
                "triggers": [versioned(public_trigger(catalog.items[key]), catalog.versions.get(key))
                             for key in sorted(catalog.items)],
                "rejected": {key: public_errors(catalog.rejected[key]) for key in sorted(catalog.rejected)},
            })

    class Trigger(ApiView):
        async def get(self, request: Request, trigger_id: str) -> Response:
            catalog = app.catalogs.triggers
            trigger = catalog.items.get(trigger_id)
            if trigger is not None:
                return self.json(versioned(public_trigger(trigger), catalog.versions.get(trigger_id)))
            if trigger_id in catalog.rejected:
                raise ApiError(404, f"trigger {trigger_id!r} was rejected", triggerId=trigger_id,
                               errors=public_errors(catalog.rejected[trigger_id]))
            raise ApiError(404, f"no trigger {trigger_id!r}", triggerId=trigger_id)

        async def put(self, request: Request, trigger_id: str) -> Response:
            definition = definition_for(await api.write_body(request), trigger_id)
            await api.publish(request, app.topic_names.definitions, [(trigger_id, definition)], triggerId=trigger_id)
            return self.json({"triggerId": trigger_id, "status": "accepted"}, status=202)

        async def delete(self, request: Request, trigger_id: str) -> Response:
            await api.delete_definition(request, trigger_id)
            return self.json({"triggerId": trigger_id, "status": "deleted"}, status=202)

    class TriggerTest(ApiView):
        async def post(self, request: Request, trigger_id: str) -> Response:
            dry_run = parse_test_request(await api.write_body(request))
            if dry_run.definition is not None:
                trigger = compile_trigger(definition_for(dry_run.definition, trigger_id), trigger_id)
            else:
                found = app.catalogs.triggers.items.get(trigger_id)
                if found is None:
                    raise ApiError(404, f"no trigger {trigger_id!r}: save it first or send a 'definition'",
                                   triggerId=trigger_id)
                trigger = found
            now = api.clock()
            event = dry_run_event(dry_run.event, trigger.definition.source, now)
            customer = dry_run.customer if dry_run.customer_given else api.row_store.customer(event.customer_id)
            history = aggregates.state(event.customer_id) if trigger.aggregates else None
            result = explain(trigger, event, customer, now, history)
            result["policies"] = api.policies_now(trigger, event.customer_id, customer, now)
            return self.json({**result, "action": public_action(result["action"]), "event": event.as_json(),
                              "customerFrom": "request" if dry_run.customer_given else "table"})

    class TriggerHistory(ApiView):
        async def get(self, request: Request, trigger_id: str) -> Response:
            entries = await api.versions(trigger_id)
            return self.json(history_json("trigger", trigger_id, entries))

    class TriggerRollback(ApiView):
        async def post(self, request: Request, trigger_id: str) -> Response:
            version = rollback_version(await api.write_body(request))
            entries = await api.versions(trigger_id)
            try:
                entry = restorable(entries, "trigger", trigger_id, version)
                restored_value(app.topic_names, "trigger", trigger_id, entry)
            except UnknownVersion as exc:
                raise ApiError(404, str(exc), triggerId=trigger_id) from None
            except NotRestorable as exc:
                raise ApiError(409, str(exc), triggerId=trigger_id) from None
            await api.publish(request, app.topic_names.definitions, [(trigger_id, entry.after)], triggerId=trigger_id)
            return self.json({"triggerId": trigger_id, "rolledBackTo": version, "status": "accepted"}, status=202)

    backtests = Backtests(app.settings, app.topic_names)

    class TriggerBacktest(ApiView):
        async def post(self, request: Request) -> Response:
            body = await api.write_body(request)
            try:
                job = parse_backtest_request(body, app.catalogs.triggers.items.get, api.clock())
                return self.json(await backtests.run(job))
            except BadBacktestRequest as exc:
                raise ApiError(exc.status, exc.error, errors=exc.errors) from None
            except BacktestBusy as exc:
                raise ApiError(429, str(exc), {"Retry-After": "5"}) from None

    class TriggerReport(ApiView):
        async def get(self, request: Request, trigger_id: str) -> Response:
            since_text = request.query.get("since")
            try:
                since = parse_since(since_text, api.clock()) if since_text else None
            except ValueError as exc:
                raise ApiError(400, str(exc).replace("--since", "since")) from None
            try:
                records = await read_records(app.settings, app.topic_names, trigger_id)
            except (ReportUnavailable, KafkaError) as exc:
                raise ApiError(503, f"could not read the experiment topics: {exc}") from None
            if trigger_id not in app.catalogs.triggers.items and not records.firings:
                raise ApiError(404, f"no trigger {trigger_id!r}, and no firings of it", triggerId=trigger_id)
            return self.json(build_report(trigger_id, since, records))

    class PrometheusMetrics(ApiView):
        public = True  # scraped by Prometheus, which holds no token; counts only, no definitions

        async def get(self, request: Request) -> Response:
            return self.bytes(metrics.render(), headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})

    page("/events", "events", Events)
    page("/respond", "respond", Respond)
    page("/triggers", "triggers", TriggerList)
    page("/triggers/backtest", "trigger-backtest", TriggerBacktest)  # before /triggers/{trigger_id}
    page("/triggers/{trigger_id}", "trigger", Trigger)
    page("/triggers/{trigger_id}/test", "trigger-test", TriggerTest)
    page("/triggers/{trigger_id}/history", "trigger-history", TriggerHistory)
    page("/triggers/{trigger_id}/rollback", "trigger-rollback", TriggerRollback)
    page("/triggers/{trigger_id}/report", "trigger-report", TriggerReport)
    page("/metrics", "metrics", PrometheusMetrics)
