"""`faust -A app.main endpoints list | enable URL`: webhook endpoints' health, as `endpoints.health` says."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from faust.cli import AppCommand, argument, option

from app.cli.commands import EXIT_USAGE, command
from app.domain.encoding import encode
from app.domain.endpoint_health import (
    EndpointState,
    EndpointStatus,
    InvalidEndpointRecord,
    enabled,
    origin_of,
    parse_state,
)
from app.registry.reader import read_compacted
from app.settings import get_settings
from app.topics import Topics, ensure_topics


@command(
    argument("subcommand", type=str),
    argument("urls", nargs=-1, type=str),
    option("--json", "as_json", is_flag=True, default=False, help="list: one JSON array."),
)
async def endpoints(self: AppCommand, subcommand: str, urls: tuple[str, ...], as_json: bool) -> None:
    """Webhook endpoints (origins): `list [--json]` their health; `enable URL` makes the URL's
    origin healthy again, so its deliveries resume."""
    if subcommand == "list" and not urls:
        await _list(as_json)
    elif subcommand == "enable" and len(urls) == 1:
        await _enable(urls[0])
    else:
        print("usage: endpoints list [--json] | endpoints enable URL", file=sys.stderr)
        sys.exit(EXIT_USAGE)


async def stored_states() -> list[EndpointState]:
    settings, topics = get_settings(), Topics(get_settings().topic_prefix)
    await ensure_topics(settings, topics)
    states = []
    for origin, value in (await read_compacted(settings, topics.endpoints_health)).items():
        if value is None:
            continue
        try:
            states.append(parse_state(origin, value))
        except InvalidEndpointRecord as exc:
            print(f"warning: {exc}", file=sys.stderr)
    return sorted(states, key=lambda state: state.origin)


async def _list(as_json: bool) -> None:
    states = await stored_states()
    if as_json:
        print(json.dumps([state.to_json() for state in states], indent=2))
        return
    print(f"{'ORIGIN':<40} {'STATE':<9} {'SINCE':<32} LAST FAILURE")
    for state in states:
        print(f"{state.origin:<40} {state.state.value:<9} {state.since.isoformat() if state.since else '-':<32} "
              f"{state.last_failure or '-'}")
    disabled = sum(1 for state in states if state.state is EndpointStatus.DISABLED)
    print(f"{len(states)} endpoint(s), {disabled} disabled")


async def _enable(url: str) -> None:
    try:
        origin = origin_of(url)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    known = {state.origin: state for state in await stored_states()}.get(origin)
    settings, topics = get_settings(), Topics(get_settings().topic_prefix)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_list, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topics.endpoints_health, key=origin.encode(),
                                     value=encode(enabled(origin, datetime.now(UTC)).to_json()))
    finally:
        await producer.stop()
    was = known.state.value if known else "unknown"
    print(f"enabled {origin} (was {was}); its deliveries resume as workers read it")
