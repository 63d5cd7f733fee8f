"""The API the console adds: validation as you type, the journeys and decision flows to
choose from, recent events to try a trigger on, recent activity on the output topics with
firings per trigger in the last hour, and dead letters replayed. Every view needs the token
when one is set, like the rest of the API.

Reads of topics use a short-lived consumer without a group (app/web/recent.py), so any worker
answers for the whole deployment, not only its own partitions.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from faust.web import Request, Response, View

from app.actions.delivery.http import system_resolve
from app.domain.activity import field_errors, firing_counts, selects, shown
from app.domain.definitions import compile_definition
from app.domain.intake import parse_cdc_event, parse_event
from app.domain.models import Event, Source
from app.domain.replay import Replay, Skip, describe, replay_of
from app.domain.webhooks import refused_address_reason
from app.errors import InvalidDefinition, MalformedEvent
from app.web.api import (
    ApiError,
    ApiView,
    _read_bounded,
    actor_headers,
    actor_of,
    check_content_length,
    parse_json_body,
)
from app.web.recent import read_one, read_recent

if TYPE_CHECKING:
    from app.kafka.app import TriggerApp

log = logging.getLogger(__name__)

ACTIVITY_KINDS = ("firings", "shadow", "suppressed", "deadletters")
MAX_LIMIT = 500
MAX_REPLAY = 100
COUNT_WINDOW = timedelta(hours=1)
# Firing records read per partition for the last hour's counts: past this the count says so.
COUNT_READ_PER_PARTITION = 5000
RESOLVE_TIMEOUT_S = 2.0


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"query parameter {name!r} must be an integer, not {text[:32]!r}") from None
    if not low <= value <= high:
        raise ApiError(400, f"query parameter {name!r} must be between {low} and {high}")
    return value


def text_param(request: Request, name: str) -> str | None:
    value = request.query.get(name)
    return value.strip() or None if isinstance(value, str) else None


async def address_warnings(definition: Any, allow_private: bool,
                           resolve: Callable[[str, int], Any] = system_resolve) -> list[dict[str, str]]:
    """The check deliveries make (app/actions/delivery/http.py), made now: a URL whose host
    resolves to a refused address, or does not resolve. Warnings, not errors: the address
    may change before the first delivery."""
    action = definition.get("action") if isinstance(definition, dict) else None
    if not isinstance(action, dict):
        return []
    warnings = []
    for name in ("url", "deliveryUrl"):
        url = action.get(name)
        if not isinstance(url, str) or not url:
            continue
        parts = urlsplit(url)
        host = parts.hostname
        if not host or parts.scheme not in ("http", "https"):
            continue
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                addresses = await resolve(host, port)
        except (OSError, ValueError, TimeoutError):
            warnings.append({"field": f"action.{name}", "message": f"{host} does not resolve"})
            continue
        if allow_private:
            continue
        for address in addresses:
            reason = refused_address_reason(address)
            if reason:
                warnings.append({"field": f"action.{name}", "message": f"{host} resolves to {reason}: deliveries "
                                                                       "will be refused (TRIGGERS_ALLOW_PRIVATE_URLS)"})
                break
    return warnings


def register_console_api(app: TriggerApp, clock: Callable[[], datetime]) -> None:
    """Add the console's endpoints. Called before register_api: `POST /triggers/validate` must
    be matched before `/triggers/{trigger_id}` (which answers every method)."""
    tokens = app.settings.api_tokens
    topics = app.topic_names
    bootstrap = app.settings.bootstrap_list
    source_topics = {Source.STREAMING: topics.streaming, Source.CDC: topics.cdc,
                     Source.OUTCOME: topics.outcomes, Source.SCHEMA_TABLE: topics.schema}
    kind_topics = {"firings": [topics.firings], "shadow": [topics.shadow],
                   "suppressed": [topics.suppressed], "deadletters": topics.dead_letter_topics}

    def page(path: str, name: str, view: type[View], methods: frozenset[str]) -> None:
        # Only the methods implemented are routed: any other falls through to the API's views
        # (`GET /triggers/validate` is the trigger named "validate").
        for variant in (path, path + "/"):
            routed = type(f"{view.__name__}_{len(variant)}", (view,),
                          {"tokens": tokens, "get_methods": lambda self: set(methods)})
            app.page(variant, name=f"console-{name}{'-slash' if variant.endswith('/') else ''}")(routed)

    async def body_of(request: Request) -> Any:
        check_content_length(request.headers.get("Content-Length"))
        return parse_json_body(await _read_bounded(request))

    class Validate(ApiView):
        async def post(self, request: Request) -> Response:
            definition = await body_of(request)
            if not isinstance(definition, dict):
                return self.json({"valid": False, "errors": [
                    {"field": "definition", "message": "a definition is a JSON object"}], "warnings": []})
            key = definition.get("id") if isinstance(definition.get("id"), str) else None
            try:
                compile_definition(definition, key=key)
                errors: list[dict[str, str]] = []
            except InvalidDefinition as exc:
                errors = field_errors(exc.errors)
            warnings = await address_warnings(definition, app.settings.allow_private_urls)
            return self.json({"valid": not errors, "errors": errors, "warnings": warnings})

    class Journeys(ApiView):
        async def get(self, request: Request) -> Response:
            items = app.catalogs.journeys.items
            return self.json({"journeys": [{"id": key, "name": items[key].name} for key in sorted(items)]})

    class DecisionFlows(ApiView):
        async def get(self, request: Request) -> Response:
            items = app.catalogs.decision_flows.items
            return self.json({"decisionFlows": [{"id": key, "name": items[key].definition.name}
                                                for key in sorted(items)]})

    class RecentEvents(ApiView):
        async def get(self, request: Request) -> Response:
            source_text = text_param(request, "source") or Source.STREAMING.value
            try:
                source = Source(source_text)
            except ValueError:
                raise ApiError(400, f"query parameter 'source': {source_text[:32]!r} is not an event source "
                                    f"({', '.join(sorted(s.value for s in source_topics))})") from None
            if source not in source_topics:
                raise ApiError(400, "query parameter 'source': scheduled triggers read ticks, not events")
            event_type = text_param(request, "type")
            limit = int_param(request, "limit", 5, 1, 50)
            read = await read_recent(bootstrap, [source_topics[source]], per_partition=200)
            found = []
            for record in read.records:
                event = _parsed(record.value, source, f"{record.topic}-{record.partition}-{record.offset}",
                                record.timestamp, app.settings.cdc_customer_column)
                if event is not None and event_type in (None, "*", event.type):
                    found.append((event.timestamp, record.timestamp, event))
            # Newest first by the event's own time (records of two partitions may share a millisecond).
            found.sort(key=lambda item: (item[0], item[1]), reverse=True)
            return self.json({"source": source.value, "type": event_type,
                              "events": [event.as_json() for _, _, event in found[:limit]]})

    class Activity(ApiView):
        async def get(self, request: Request) -> Response:
            kind = text_param(request, "kind") or "firings"
            if kind not in kind_topics:
                raise ApiError(400, f"query parameter 'kind' must be one of {', '.join(ACTIVITY_KINDS)}")
            trigger_id, customer_id = text_param(request, "trigger"), text_param(request, "customer")
            limit = int_param(request, "limit", 100, 1, MAX_LIMIT)
            read = await read_recent(bootstrap, kind_topics[kind], per_partition=limit if trigger_id is None
                                     and customer_id is None else MAX_LIMIT * 4)
            entries = []
            for record in sorted(read.records, key=lambda r: (r.timestamp, r.offset), reverse=True):
                value = _json_or_text(record.value)
                if selects(value, trigger_id, customer_id):
                    entries.append({"topic": record.topic, "partition": record.partition, "offset": record.offset,
                                    "timestamp": _iso_ms(record.timestamp), "value": shown(value)})
                    if len(entries) >= limit:
                        break
            return self.json({"kind": kind, "records": entries})

    class FiringCountsView(ApiView):
        async def get(self, request: Request) -> Response:
            read = await read_recent(bootstrap, [topics.firings], per_partition=COUNT_READ_PER_PARTITION)
            oldest: dict[tuple[str, int], int] = {}
            for record in read.records:
                where = (record.topic, record.partition)
                oldest[where] = min(oldest.get(where, record.timestamp), record.timestamp)
            starts = [_from_ms(oldest[where]) if where in oldest else None for where in read.bounded]
            values = (value for r in read.records if isinstance(value := _json_or_text(r.value), dict))
            return self.json(firing_counts(values, clock(), COUNT_WINDOW, starts).as_json())

    class ReplayDeadLetters(ApiView):
        async def post(self, request: Request) -> Response:
            wanted = _replay_request(await body_of(request), set(topics.dead_letter_topics))
            actor = actor_of(request)
            results = []
            for topic, partition, offset in wanted:
                where = {"topic": topic, "partition": partition, "offset": offset}
                record = await read_one(bootstrap, topic, partition, offset)
                letter = _json_or_text(record.value) if record is not None else None
                if record is None or not isinstance(letter, dict):
                    results.append({**where, "status": "skipped", "reason": "no dead letter at this offset"})
                    continue
                action = replay_of(letter)
                if isinstance(action, Skip):
                    results.append({**where, "status": "skipped", "reason": action.reason})
                    continue
                await _republish(app, action, actor_headers(actor))
                log.info("API write", extra={"actor": actor, "method": "POST", "topic": action.topic,
                                             "records": 1, "replayed": describe(letter)})
                results.append({**where, "status": "replayed", "to": action.topic})
            replayed = sum(1 for r in results if r["status"] == "replayed")
            return self.json({"replayed": replayed, "skipped": len(results) - replayed, "results": results})

    get, post = frozenset({"GET", "HEAD"}), frozenset({"POST"})
    page("/triggers/validate", "validate", Validate, post)
    page("/journeys", "journeys", Journeys, get)
    page("/decisionflows", "decisionflows", DecisionFlows, get)
    page("/events/recent", "recent-events", RecentEvents, get)
    page("/activity", "activity", Activity, get)
    page("/activity/counts", "activity-counts", FiringCountsView, get)
    page("/deadletters/replay", "deadletters-replay", ReplayDeadLetters, post)


def _replay_request(body: Any, dead_letter_topics: set[str]) -> list[tuple[str, int, int]]:
    """`{"records": [{"topic", "partition", "offset"}, ...]}`: dead letters to replay (at most 100)."""
    if not isinstance(body, dict) or set(body) != {"records"} or not isinstance(body["records"], list):
        raise ApiError(400, "expected {\"records\": [{\"topic\", \"partition\", \"offset\"}, ...]}")
    records = body["records"]
    if not 1 <= len(records) <= MAX_REPLAY:
        raise ApiError(400, f"records: between 1 and {MAX_REPLAY} dead letters")
    wanted = []
    for index, item in enumerate(records):
        if not (isinstance(item, dict) and isinstance(item.get("topic"), str)
                and _natural(item.get("partition")) and _natural(item.get("offset"))):
            raise ApiError(400, f"records[{index}]: expected {{\"topic\": str, \"partition\": int, \"offset\": int}}")
        if item["topic"] not in dead_letter_topics:
            raise ApiError(400, f"records[{index}].topic: {item['topic'][:128]!r} is not a dead-letter topic "
                                f"({', '.join(sorted(dead_letter_topics))})")
        wanted.append((item["topic"], item["partition"], item["offset"]))
    return wanted


def _natural(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


async def _republish(app: TriggerApp, action: Replay, headers: list[tuple[str, bytes]]) -> None:
    """To the source partition while the topic still has it (else the key decides), acknowledged."""
    # Every topic a dead letter comes from has the engine's partition count (app/topics.py).
    partition = action.partition if action.partition is not None and action.partition < app.settings.partitions \
        else None
    try:
        sent = await app.producer.send(action.topic, action.key, action.value, partition, None, headers)
        await sent
    except Exception as exc:
        log.exception("API could not replay a dead letter", extra={"topic": action.topic})
        raise ApiError(503, f"could not publish to Kafka (retry the request): {type(exc).__name__}") from exc


def _parsed(raw: bytes | None, source: Source, fallback_id: str, timestamp_ms: int,
            cdc_customer_column: str) -> Event | None:
    """An event as the intake reads it (its flat JSON is what a dry run takes), or None if malformed."""
    arrival = _from_ms(timestamp_ms)
    try:
        if source is Source.CDC:
            return parse_cdc_event(raw, fallback_id, arrival, cdc_customer_column)
        return parse_event(raw, source, fallback_id, arrival)
    except MalformedEvent:
        return None


def _json_or_text(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _iso_ms(ms: int) -> str:
    return _from_ms(ms).isoformat()
