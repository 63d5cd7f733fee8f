"""`faust -A app.main deadletters replay`: dead letters re-published to where they came from."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition
from faust.cli import AppCommand, argument, option

from app.cli.commands import EXIT_USAGE, command
from app.domain.replay import Replay, Selection, Skip, describe, parse_since, replay_of
from app.kafka.end_offsets import confirmed_end_offsets
from app.registry.reader import rewind
from app.settings import Settings, get_settings
from app.topics import Topics, ensure_topics


@command(
    argument("subcommand", type=str),
    option("--topic", default=None, help="Only dead letters whose source topic is this (prefix optional)."),
    option("--trigger", "trigger_id", default=None, help="Only dead letters of this trigger's firings."),
    option("--since", default=None, help="Only dead letters since this ISO time or duration (30m, 2h, 7d)."),
    option("--dry-run", is_flag=True, default=False, help="List what would be replayed, publish nothing."),
)
async def deadletters(self: AppCommand, subcommand: str, topic: str | None, trigger_id: str | None,
                      since: str | None, dry_run: bool) -> None:
    """Dead letters: `replay [--topic T] [--trigger ID] [--since TIME] [--dry-run]` re-publishes each
    selected one's original key and value to its source topic. Safe to repeat for action
    commands: a sink skips a firing it already performed (firingId)."""
    if subcommand != "replay":
        print("usage: deadletters replay [--topic T] [--trigger ID] [--since TIME] [--dry-run]", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    settings, topics = get_settings(), Topics(get_settings().topic_prefix)
    try:
        selection = Selection(
            topics=frozenset({topic, topics.prefix + topic}) if topic else None, trigger_id=trigger_id,
            since=parse_since(since, datetime.now(UTC)) if since else None)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    await ensure_topics(settings, topics)
    summary = await replay(settings, topics, selection, dry_run)
    print(summary_line(summary, dry_run))


async def replay(settings: Settings, topics: Topics, selection: Selection, dry_run: bool) -> Counter[str]:
    """Replay every selected dead letter written before the command started; the counts by outcome."""
    counts: Counter[str] = Counter()
    producer = None if dry_run else AIOKafkaProducer(bootstrap_servers=settings.bootstrap_list, acks="all")
    if producer is not None:
        await producer.start()
    try:
        async for record in _dead_letters(settings, topics):
            letter = _decoded(record.value)
            if letter is None or not selection.selects(letter):
                counts["not selected"] += 1
                continue
            action = replay_of(letter)
            where = f"{record.topic}/{record.partition}@{record.offset}"
            if isinstance(action, Skip):
                counts[f"skipped: {action.reason}"] += 1
                print(f"skip {where}: {action.reason} [{describe(letter)}]")
                continue
            if producer is not None:
                await producer.send_and_wait(action.topic, key=action.key, value=action.value,
                                             partition=await _partition(producer, action))
            counts["replayed"] += 1
            print(f"{'would replay' if dry_run else 'replayed'} {where} -> {action.topic} [{describe(letter)}]")
    finally:
        if producer is not None:
            await producer.stop()
    return counts


def summary_line(counts: Counter[str], dry_run: bool) -> str:
    skipped = {reason: n for reason, n in counts.items() if reason.startswith("skipped: ")}
    reasons = "; ".join(f"{n} {reason.removeprefix('skipped: ')}" for reason, n in sorted(skipped.items()))
    verb = "would replay" if dry_run else "replayed"
    return (f"{verb} {counts['replayed']}, skipped {sum(skipped.values())}"
            + (f" ({reasons})" if reasons else "") + f", not selected {counts['not selected']}"
            + (" (--dry-run: nothing published)" if dry_run else ""))


async def _dead_letters(settings: Settings, topics: Topics) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Every record of the dead-letter topics up to their end when this starts: replays that
    fail again are dead-lettered after that end, so a replay never replays its own output."""
    def new_consumer() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_list, group_id=None,
                                enable_auto_commit=False)

    consumer = new_consumer()
    consumer._fetch_max_wait_ms = 50
    await consumer.start()
    try:
        # The broker's end offsets can be short (Tansu): confirmed by a fetch.
        ends = await confirmed_end_offsets(new_consumer, await rewind(consumer, topics.dead_letter_topics))
        remaining = {tp: end for tp, end in ends.items() if end > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    if record.offset < remaining.get(tp, 0):
                        yield record
            for tp in list(remaining):
                if await consumer.position(TopicPartition(tp.topic, tp.partition)) >= remaining[tp]:
                    del remaining[tp]
    finally:
        await consumer.stop()


def _decoded(raw: bytes | None) -> dict[str, Any] | None:
    try:
        value = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


async def _partition(producer: AIOKafkaProducer, action: Replay) -> int | None:
    """The source partition, while the topic still has it; else the key decides."""
    partitions = await producer.partitions_for(action.topic)
    return action.partition if action.partition in partitions else None
