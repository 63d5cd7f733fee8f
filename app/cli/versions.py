"""`triggers history ID` and `triggers rollback ID --to VERSION`: a definition's versions read
from the audit trail, and an earlier one published again with the actor's name."""

from __future__ import annotations

import json

from aiokafka import AIOKafkaProducer

from app.domain.versions import ACTOR_HEADER, UnknownVersion, history_json, history_text, parse_version, restorable
from app.registry.audit import kinds, restored_value, topic_of_kind, versions
from app.settings import Settings
from app.topics import Topics, ensure_topics

# What `--kind` accepts besides the kinds themselves: the folder names of triggers_config/.
KIND_ALIASES = {"triggers": "trigger", "journeys": "journey", "decisionflows": "decision_flow",
                "policies": "policy", "tables": "schema_table", "table": "schema_table"}


def kind_named(name: str, topics: Topics) -> str:
    kind = KIND_ALIASES.get(name, name)
    if kind not in kinds(topics):
        raise UnknownVersion(f"unknown kind {name!r}: use one of {', '.join(kinds(topics))}")
    return kind


async def history(settings: Settings, topics: Topics, kind_name: str, item_id: str, as_json: bool) -> None:
    kind = kind_named(kind_name, topics)
    await ensure_topics(settings, topics)
    entries = await versions(settings, topics, kind, item_id)
    if as_json:
        print(json.dumps(history_json(kind, item_id, entries), indent=2))
    else:
        print("\n".join(history_text(kind, item_id, entries)))


async def rollback(settings: Settings, topics: Topics, kind_name: str, item_id: str, to: str | None,
                   actor: str) -> None:
    kind = kind_named(kind_name, topics)
    version = parse_version(to)
    await ensure_topics(settings, topics)
    entry = restorable(await versions(settings, topics, kind, item_id), kind, item_id, version)
    value = restored_value(topics, kind, item_id, entry)
    topic = topic_of_kind(topics, kind)
    assert topic is not None  # the kind was checked
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_list, acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, key=item_id.encode(), value=value,
                                            headers=[(ACTOR_HEADER, actor.encode())])
    finally:
        await producer.stop()
    print(f"rolled back {kind} {item_id} to version {version}: published as version {sent.offset} by {actor}")
