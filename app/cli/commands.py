"""`faust -A app.main triggers apply|validate PATH...`: load definitions and rows onto their topics."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from faust.cli import AppCommand, argument, option

from app.cli.config_files import ConfigBundle, read_config
from app.main import app
from app.topics import ensure_topics

EXIT_INVALID = 1


@app.command(
    argument("subcommand", type=str),
    argument("paths", nargs=-1, type=str),
    option("--dry-run", is_flag=True, default=False, help="Validate and report, publish nothing."),
)
async def triggers(self: AppCommand, subcommand: str, paths: tuple[str, ...], dry_run: bool) -> None:
    """Manage trigger definitions: `apply PATH...` or `validate PATH...`."""
    if subcommand not in {"apply", "validate"}:
        self.die(f"unknown subcommand {subcommand!r}: use apply or validate")
    bundle = read_config([Path(p) for p in paths or ("triggers_config",)])
    if bundle.errors:
        for error in bundle.errors:
            print(f"error: {error}", file=sys.stderr)
        print(f"{len(bundle.errors)} error(s); nothing published", file=sys.stderr)
        sys.exit(EXIT_INVALID)
    print(f"valid: {len(bundle.triggers)} trigger(s), {len(bundle.rows)} row(s)")
    if subcommand == "validate" or dry_run:
        return
    await publish(bundle)
    print(f"published {len(bundle.triggers)} trigger(s) to {app.names.definitions}, "
          f"{len(bundle.rows)} row(s) to {app.names.rows}")


async def publish(bundle: ConfigBundle) -> None:
    await ensure_topics(app.settings, app.names)
    producer = AIOKafkaProducer(bootstrap_servers=app.settings.bootstrap_list, acks="all")
    await producer.start()
    try:
        for _where, item in bundle.triggers:
            await producer.send(app.names.definitions, key=item["id"].encode(), value=_json(item))
        for row in bundle.rows:
            value = {"table": row.table, "customerId": row.customer_id}
            value |= {"attributes": row.attributes} if row.attributes is not None else {"delete": True}
            await producer.send(app.names.rows, key=row.customer_id.encode(), value=_json(value))
        await producer.flush()
    finally:
        await producer.stop()


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
