"""Operator commands: `faust -A app.main triggers|rows|send-event|tail ...` (see `--help`)."""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from faust.app.base import SCAN_COMMAND
from faust.cli import AppCommand, argument, option
from faust.utils import venusian

from app.cli import versions
from app.cli.backtest import BacktestRefused, backtest_command
from app.cli.config_files import KINDS, ConfigBundle, read_config
from app.cli.row_files import read_rows
from app.domain.definitions import compile_definition
from app.domain.encoding import encode
from app.domain.engine import explain
from app.domain.intake import parse_event
from app.domain.replay import parse_since
from app.domain.rows import RowLoad
from app.domain.versions import ACTOR_HEADER, UNKNOWN_ACTOR, NotRestorable, UnknownVersion
from app.errors import InvalidDefinition, MalformedEvent
from app.experiments.report import ReportUnavailable, build_report, read_records, report_text
from app.registry.catalogs import TriggerCatalog
from app.registry.reader import read_compacted
from app.settings import Settings, get_settings
from app.topics import Topics, ensure_topics

# Exit codes: 0 success (for `test`: would fire), 1 invalid input or would not fire,
# 2 usage error or unknown trigger.
EXIT_INVALID = 1
EXIT_USAGE = 2
SUBCOMMANDS = ("apply", "validate", "list", "delete", "test", "backtest", "report", "history", "rollback")


def command(*options: Any) -> Callable[[Callable[..., Awaitable[None]]], type[AppCommand]]:
    """What faust's `@app.command` does, without an app at import: the command is found when
    `faust -A app.main` scans this module, and reads the settings when it runs."""
    def register(handler: Callable[..., Awaitable[None]]) -> type[AppCommand]:
        cmd: type[AppCommand] = AppCommand.from_handler(*options)(handler)
        venusian.attach(cmd, category=SCAN_COMMAND)
        return cmd
    return register


def _settings() -> Settings:
    return get_settings()


def _topics() -> Topics:
    return Topics(get_settings().topic_prefix)


@command(
    argument("subcommand", type=str),
    argument("paths", nargs=-1, type=str),
    option("--dry-run", is_flag=True, default=False, help="Validate and report, publish nothing."),
    option("--event", "event_file", default=None, help="test: JSON file with the event."),
    option("--customer", "customer_file", default=None, help="test: JSON file with the customer row."),
    option("--from", "start", type=str, default=None, help="backtest: start of the range (ISO 8601, or -7d)."),
    option("--to", "end", type=str, default=None,
           help="backtest: end of the range (ISO 8601, now, or -1h); rollback: the version to restore."),
    option("--json", "as_json", is_flag=True, default=False, help="backtest, history: print JSON."),
    option("--max-events", type=int, default=0, help="backtest: stop after this many events (0: all)."),
    option("--since", default=None, help="report: only firings since this ISO time or duration (30m, 2h, 7d)."),
    option("--kind", default="trigger", help="history, rollback: the definition's kind (trigger, journey, "
                                             "decision_flow, policy, schema_table)."),
    option("--actor", type=str, default=None,
           help="apply, delete, rollback: who makes the change (default: the OS user)."),
)
async def triggers(self: AppCommand, subcommand: str, paths: tuple[str, ...], dry_run: bool,
                   event_file: str | None, customer_file: str | None, start: str | None, end: str | None,
                   as_json: bool, max_events: int, since: str | None, kind: str, actor: str | None) -> None:
    """Trigger definitions: apply PATH... | validate PATH... | list | delete ID | test ID --event FILE |
    backtest FILE|ID --from TIME --to TIME [--json] [--max-events N] | report ID [--since TIME] [--json] |
    history ID [--kind KIND] [--json] | rollback ID --to VERSION [--kind KIND]."""
    if subcommand not in SUBCOMMANDS:
        _die(f"unknown subcommand {subcommand!r}: use one of {', '.join(SUBCOMMANDS)}", EXIT_USAGE)
    actor = actor or _os_user()
    if subcommand in ("history", "rollback"):
        await _versions(subcommand, _single_id(paths), kind, as_json, end, actor)
        return
    if subcommand == "list":
        await _list()
        return
    if subcommand == "delete":
        await _delete(_single_id(paths), dry_run, actor)
        return
    if subcommand == "test":
        await _test(_single_id(paths), event_file, customer_file)
        return
    if subcommand == "backtest":
        await _backtest(_single_id(paths), start, end, as_json, max_events)
        return
    if subcommand == "report":
        await _report(_single_id(paths), since, as_json)
        return
    bundle = read_config([Path(p) for p in paths or ("triggers_config",)])
    if bundle.errors:
        for error in bundle.errors:
            print(f"error: {error}", file=sys.stderr)
        print(f"{len(bundle.errors)} error(s); nothing published", file=sys.stderr)
        sys.exit(EXIT_INVALID)
    print("valid: " + _summary(bundle))
    if subcommand == "validate" or dry_run:
        return
    await publish(bundle, actor)
    print("published: " + _summary(bundle))


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in the environment nor the password database
        return UNKNOWN_ACTOR


def actor_headers(actor: str) -> list[tuple[str, bytes]]:
    """The `actor` header of a definition record: who made the change (read by the audit)."""
    return [(ACTOR_HEADER, actor.encode())]


def _die(message: str, code: int) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


async def _versions(subcommand: str, item_id: str, kind: str, as_json: bool, to: str | None, actor: str) -> None:
    try:
        if subcommand == "history":
            await versions.history(_settings(), _topics(), kind, item_id, as_json)
        else:
            await versions.rollback(_settings(), _topics(), kind, item_id, to, actor)
    except UnknownVersion as exc:
        _die(str(exc), EXIT_USAGE)
    except NotRestorable as exc:
        _die(str(exc), EXIT_INVALID)


def _single_id(ids: tuple[str, ...]) -> str:
    if len(ids) != 1:
        _die("give exactly one trigger id", EXIT_USAGE)
    return ids[0]


async def _stored_triggers() -> dict[str, bytes | None]:
    await ensure_topics(_settings(), _topics())
    return await read_compacted(_settings(), _topics().definitions)


async def _list() -> None:
    stored = await _stored_triggers()
    catalog = TriggerCatalog()
    for key, value in stored.items():
        catalog.apply(key, value)
    print(f"{'ID':<32} {'SOURCE':<13} {'EVENT TYPE':<24} {'PRI':>3} {'ON':<3} ACTION")
    for trigger in sorted(catalog.items.values(), key=lambda t: t.sort_key):
        d = trigger.definition
        print(f"{d.id:<32} {d.source.value:<13} {d.event_type:<24} {d.priority:>3} "
              f"{'yes' if d.enabled else 'no':<3} {d.action.type}")
    for key, errors in sorted(catalog.rejected.items()):
        print(f"{key:<32} REJECTED: {'; '.join(errors)}")
    print(f"{len(catalog.items)} trigger(s), {len(catalog.rejected)} rejected")


async def _delete(trigger_id: str, dry_run: bool, actor: str) -> None:
    if (await _stored_triggers()).get(trigger_id) is None:
        _die(f"no trigger {trigger_id!r} on {_topics().definitions}", EXIT_USAGE)
    if dry_run:
        print(f"would delete {trigger_id} (--dry-run)")
        return
    producer = AIOKafkaProducer(bootstrap_servers=_settings().bootstrap_list, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(_topics().definitions, key=trigger_id.encode(), value=None,
                                     headers=actor_headers(actor))
    finally:
        await producer.stop()
    print(f"deleted {trigger_id} (tombstone published)")


async def _test(trigger_id: str, event_file: str | None, customer_file: str | None) -> None:
    if not event_file:
        _die("test needs --event FILE", EXIT_USAGE)
    stored = (await _stored_triggers()).get(trigger_id)
    if stored is None:
        _die(f"no trigger {trigger_id!r} on {_topics().definitions}", EXIT_USAGE)
    try:
        trigger = compile_definition(stored, key=trigger_id)
        raw_event = Path(event_file).read_bytes()
        customer = json.loads(Path(customer_file).read_text()) if customer_file else None
        now = datetime.now(UTC)
        event = parse_event(raw_event, trigger.definition.source, "dry-run", now)
    except InvalidDefinition as exc:
        _die(f"the stored definition is invalid: {'; '.join(exc.errors)}", EXIT_INVALID)
    except (OSError, ValueError, MalformedEvent) as exc:
        _die(str(exc), EXIT_USAGE)
    report = explain(trigger, event, customer, now)
    print(json.dumps(report, indent=2))
    sys.exit(0 if report["wouldFire"] else EXIT_INVALID)


async def _backtest(target: str, start: str | None, end: str | None, as_json: bool, max_events: int) -> None:
    try:
        await backtest_command(target, start, end, as_json, max_events, _settings(), _topics(), _stored_triggers,
                               EXIT_INVALID, EXIT_USAGE)
    except BacktestRefused as exc:
        for error in exc.errors[:-1]:
            print(f"error: {error}", file=sys.stderr)
        _die(exc.errors[-1], exc.code)


async def _report(trigger_id: str, since_text: str | None, as_json: bool) -> None:
    """An experiment's report: exit 0 with groups, 1 for an empty range (or topics that cannot
    be read), 2 for a trigger neither defined nor ever fired."""
    try:
        since = parse_since(since_text, datetime.now(UTC)) if since_text else None
    except ValueError as exc:
        _die(str(exc), EXIT_USAGE)
    stored = await _stored_triggers()
    try:
        records = await read_records(_settings(), _topics(), trigger_id)
    except ReportUnavailable as exc:
        _die(str(exc), EXIT_INVALID)
    if stored.get(trigger_id) is None and not records.firings:
        _die(f"no trigger {trigger_id!r} on {_topics().definitions}, and no firings of it", EXIT_USAGE)
    report = build_report(trigger_id, since, records)
    print(json.dumps(report, indent=2) if as_json else report_text(report))
    if not report["groups"]:
        _die(report["message"], EXIT_INVALID)


def _summary(bundle: ConfigBundle) -> str:
    counts = [f"{len(items)} {kind}" for kind, items in bundle.definitions.items()]
    return ", ".join([*counts, f"{len(bundle.rows)} rows"])


def _topic_for(kind: str) -> str:
    return {"triggers": _topics().definitions, "journeys": _topics().journey_definitions,
            "decisionflows": _topics().decision_flow_definitions,
            "tables": _topics().table_definitions, "policies": _topics().policy_definitions}[kind]


async def publish(bundle: ConfigBundle, actor: str) -> None:
    await ensure_topics(_settings(), _topics())
    producer = AIOKafkaProducer(bootstrap_servers=_settings().bootstrap_list, acks="all")
    await producer.start()
    try:
        # Tables, journeys and flows first: triggers that use them then find them defined.
        for kind in ("tables", "journeys", "decisionflows", "policies", "triggers"):
            id_field = KINDS[kind][1]
            for _where, item in bundle.definitions[kind]:
                await producer.send(_topic_for(kind), key=item[id_field].encode(), value=encode(item),
                                    headers=actor_headers(actor))
        for row in bundle.rows:
            await producer.send(_topics().rows, key=row.customer_id.encode(), value=encode(_row_record(row)))
        await producer.flush()
    finally:
        await producer.stop()


@command(
    argument("event_json", type=str),
    option("--topic", default=None, help="Topic to send to (default: events.streaming)."),
    option("--key", default=None, help="Message key (default: the event's customerId)."),
)
async def send_event(self: AppCommand, event_json: str, topic: str | None, key: str | None) -> None:
    """Publish one JSON message, keyed by its customerId (or --key, e.g. for a CDC envelope)."""
    try:
        event = json.loads(event_json)
        key = key if key is not None else str(event["customerId"])
    except (ValueError, KeyError, TypeError):
        print('expected a JSON object with "customerId" (or give --key), e.g. '
              '\'{"type": "transaction", "customerId": "c-42", "amount": 1500}\'', file=sys.stderr)
        sys.exit(EXIT_USAGE)
    producer = AIOKafkaProducer(bootstrap_servers=_settings().bootstrap_list, acks="all")
    await producer.start()
    try:
        target = topic or _topics().streaming
        metadata = await producer.send_and_wait(target, key=key.encode(), value=encode(event))
        print(f"sent to {target} partition {metadata.partition} offset {metadata.offset}")
    finally:
        await producer.stop()


@command(
    argument("topic", type=str),
    option("--from-beginning", is_flag=True, default=False, help="Start at the oldest record."),
    option("--max-records", type=int, default=0, help="Stop after this many (0: never)."),
)
async def tail(self: AppCommand, topic: str, from_beginning: bool, max_records: int) -> None:
    """Print a topic's records as JSON lines: {"key", "value", "partition", "offset"}."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=_settings().bootstrap_list, group_id=None,
                                auto_offset_reset="earliest" if from_beginning else "latest",
                                fetch_max_wait_ms=100)
    await consumer.start()
    seen = 0
    try:
        async for record in consumer:
            value = record.value.decode("utf-8", "replace") if record.value is not None else None
            try:
                parsed = json.loads(value) if value is not None else None
            except ValueError:
                parsed = value
            print(json.dumps({"key": record.key.decode("utf-8", "replace") if record.key else None,
                              "value": parsed, "partition": record.partition,
                              "offset": record.offset}), flush=True)
            seen += 1
            if max_records and seen >= max_records:
                break
    finally:
        await consumer.stop()


@command(
    argument("subcommand", type=str),
    argument("paths", nargs=-1, type=str),
    option("--table", default="customers", help="Schema table for rows that do not name one."),
    option("--dry-run", is_flag=True, default=False, help="Check the files, publish nothing."),
)
async def rows(self: AppCommand, subcommand: str, paths: tuple[str, ...], table: str, dry_run: bool) -> None:
    """Bulk-load schema-table rows: `load FILE...` (JSON lines or CSV with a customerId column).

    Every file is checked first; nothing is published if any line is bad. Each row becomes a
    record on schema.rows, which the workers merge into the table and publish on events.schema.
    """
    if subcommand != "load" or not paths:
        print("usage: rows load FILE... [--table NAME] [--dry-run]", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    errors = [error for path in map(Path, paths) for error in _row_file_errors(path, table)]
    if errors:
        for error in errors:
            print(f"error: {error}", file=sys.stderr)
        print(f"{len(errors)} error(s); nothing published", file=sys.stderr)
        sys.exit(EXIT_INVALID)
    if dry_run:
        print("valid; nothing published (--dry-run)")
        return
    await ensure_topics(_settings(), _topics())
    producer = AIOKafkaProducer(bootstrap_servers=_settings().bootstrap_list, acks="all", linger_ms=20)
    await producer.start()
    sent = 0
    try:
        for path in map(Path, paths):
            for _number, row in read_rows(path, table):
                assert not isinstance(row, str)
                await producer.send(_topics().rows, key=row.customer_id.encode(), value=encode(_row_record(row)))
                sent += 1
                if sent % 10_000 == 0:
                    print(f"… {sent} rows sent", flush=True)
        await producer.flush()
    finally:
        await producer.stop()
    print(f"published {sent} row(s) to {_topics().rows}")


def _row_file_errors(path: Path, table: str) -> list[str]:
    if not path.is_file():
        return [f"{path}: no such file"]
    try:
        return [f"{path}:{number}: {row}" for number, row in read_rows(path, table) if isinstance(row, str)]
    except (OSError, UnicodeDecodeError) as exc:
        return [f"{path}: cannot read: {exc}"]


def _row_record(row: RowLoad) -> dict[str, Any]:
    record: dict[str, Any] = {"table": row.table, "customerId": row.customer_id}
    return record | ({"attributes": row.attributes} if row.attributes is not None else {"delete": True})
