"""Endpoint health and dead-letter replay with two real workers, a real broker, real HTTP receivers
and the operators' commands run as a person would (`faust -A app.main ...`)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Deployment, start_deployment
from tests.support.receiver import Receiver
from tests.support.worker import REPO

pytestmark = pytest.mark.integration

DISABLE_AFTER_S = 1.8
ENV = {
    "TRIGGERS_ALLOW_PRIVATE_URLS": "1",  # the receivers listen on 127.0.0.1
    "TRIGGERS_WEBHOOK_RETRY_SCHEDULE": "0",  # one attempt: each delivery is one observation
    "TRIGGERS_WEBHOOK_TIMEOUT_S": "2",
    "TRIGGERS_WEBHOOK_DISABLE_AFTER_HOURS": str(DISABLE_AFTER_S / 3600),
}
PARTITIONS = 4
GAVE_UP = "gave up after 1 attempts (schedule exhausted): HTTP 503"


@pytest.fixture(scope="module")
async def engine(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    deployment = await start_deployment(kafka_bootstrap, tmp_path_factory.mktemp("endpoints"), workers=2,
                                        partitions=PARTITIONS, env=ENV)
    yield deployment
    deployment.stop()
    await deployment.kafka.stop()


@pytest.fixture
async def receivers() -> AsyncIterator[tuple[Receiver, Receiver]]:
    """Two servers, so two origins: one failing, one healthy."""
    failing, healthy = await Receiver().start(), await Receiver().start()
    yield failing, healthy
    await failing.stop()
    await healthy.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def cli(engine: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": engine.kafka.bootstrap,
           "TRIGGERS_TOPIC_PREFIX": engine.topics.prefix, "TRIGGERS_PARTITIONS": str(PARTITIONS)}
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "faust", "-A", "app.main", *args],
                                   cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


async def webhook_trigger(engine: Deployment, url: str) -> tuple[str, str]:
    trigger_id, event_type = unique("t"), unique("purchase")
    await engine.put_definition({"id": trigger_id, "source": "streaming", "eventType": event_type,
                                 "action": {"type": "webhook", "url": url}})
    return trigger_id, event_type


async def fire(engine: Deployment, event_type: str) -> None:
    await engine.send_event({"type": event_type, "customerId": unique("c")})


async def dead_letters(engine: Deployment, trigger_id: str, count: int) -> list[dict[str, Any]]:
    def mine(values: list[Any]) -> list[dict[str, Any]]:
        return [v for v in values if isinstance(v, dict) and v.get("triggerId") == trigger_id]

    records = await engine.kafka.read(engine.topics.actions_deadletter,
                                      until=lambda rs: len(mine([r.value for r in rs])) >= count)
    found = sorted(mine([r.value for r in records]), key=lambda letter: letter["at"])  # partitions interleave
    assert len(found) >= count, f"{len(found)} dead letters of {trigger_id}, expected {count}"
    return found


async def every_worker(engine: Deployment, disabled: int) -> None:
    for worker in engine.workers:
        await worker.wait_for(lambda r: r["endpointsDisabled"] == disabled, timeout=15,
                              what=f"showing {disabled} disabled endpoint(s)")


async def test_a_failing_endpoint_is_disabled_refused_listed_and_enabled_again(
        engine: Deployment, receivers: tuple[Receiver, Receiver]) -> None:
    failing, healthy = receivers
    failing.script("hook", 503, 503)
    origin = f"http://127.0.0.1:{failing.port}"
    bad_trigger, bad_type = await webhook_trigger(engine, failing.url("hook"))
    _, good_type = await webhook_trigger(engine, healthy.url("hook"))

    # Two failures further apart than the period (likely on different workers: customers differ).
    await fire(engine, bad_type)
    await dead_letters(engine, bad_trigger, 1)
    await asyncio.sleep(DISABLE_AFTER_S + 0.3)
    await fire(engine, bad_type)
    await dead_letters(engine, bad_trigger, 2)
    await every_worker(engine, disabled=1)
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{engine.workers[0].url}/metrics")).text
    assert "triggers_endpoints_disabled 1.0" in metrics

    # Later deliveries to it are refused with a reason naming it; the other endpoint is unaffected.
    await fire(engine, bad_type)
    await fire(engine, good_type)
    letters = await dead_letters(engine, bad_trigger, 3)
    assert [letter["reason"].startswith(GAVE_UP) for letter in letters] == [True, True, False]
    assert letters[2]["reason"].startswith(f"endpoint {origin} is disabled: only failures since ")
    await healthy.wait_for_deliveries("hook", 1)
    assert len(failing.to("hook")) == 2  # the refused firing was never attempted

    listed = await cli(engine, "endpoints", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [state] = [s for s in json.loads(listed.stdout) if s["origin"] == origin]
    assert state["state"] == "disabled" and state["lastFailure"].startswith(GAVE_UP)
    table = await cli(engine, "endpoints", "list")
    assert origin in table.stdout and "disabled" in table.stdout

    enabled = await cli(engine, "endpoints", "enable", failing.url("hook"))
    assert enabled.returncode == 0, enabled.stderr
    assert f"enabled {origin} (was disabled)" in enabled.stdout
    await every_worker(engine, disabled=0)
    await fire(engine, bad_type)
    await failing.wait_for_deliveries("hook", 1)
    assert len(await dead_letters(engine, bad_trigger, 3)) == 3  # nothing new dead-lettered


async def test_replay_dry_run_lists_and_replay_delivers_each_firing_once(
        engine: Deployment, receivers: tuple[Receiver, Receiver]) -> None:
    receiver, _ = receivers
    receiver.script("hook", 404, 404, 404)  # bad requests: dead-lettered, not an endpoint failure
    trigger_id, event_type = await webhook_trigger(engine, receiver.url("hook") + "?token=hush")
    for _ in range(3):
        await fire(engine, event_type)
    letters = await dead_letters(engine, trigger_id, 3)
    firings = {letter["firingId"] for letter in letters}
    commands_before = await engine.kafka.read(engine.topics.action("webhook"), timeout=1)

    dry = await cli(engine, "deadletters", "replay", "--trigger", trigger_id, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("would replay") == 4  # three records and the summary
    assert all(firing in dry.stdout for firing in firings)
    assert "would replay 3, skipped 0" in dry.stdout and "nothing published" in dry.stdout
    assert "hush" not in dry.stdout
    assert len(await engine.kafka.read(engine.topics.action("webhook"), timeout=1)) == len(commands_before)

    replayed = await cli(engine, "deadletters", "replay", "--trigger", trigger_id, "--since", "10m",
                         "--topic", "actions.webhook")
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 3, skipped 0" in replayed.stdout
    await receiver.wait_for_deliveries("hook", 3)
    assert receiver.delivered("hook") == firings

    again = await cli(engine, "deadletters", "replay", "--trigger", trigger_id)
    assert "replayed 3, skipped 0" in again.stdout  # re-published, and the sinks skip them
    await skipped_by_workers(engine, 3)
    assert Counter(r.headers["Idempotency-Key"] for r in receiver.to("hook", 200)) == dict.fromkeys(firings, 1)


async def test_an_event_dead_letter_is_replayed_byte_for_byte_and_not_twice_by_one_run(engine: Deployment) -> None:
    key = unique("c")
    raw = b"not json \xff " + key.encode()
    await engine.kafka.send(engine.topics.streaming, key, raw)

    def keyed(records: list[Any]) -> list[Any]:
        return [r for r in records if r.key == key]

    await engine.kafka.read(engine.topics.deadletter, until=lambda rs: len(keyed(rs)) >= 1)
    result = await cli(engine, "deadletters", "replay", "--topic", "events.streaming", "--since", "5m")
    assert result.returncode == 0, result.stderr
    assert "replayed 1, skipped 0" in result.stdout, result.stdout
    assert key not in result.stdout  # a dead letter is named by where it is, never by its key
    events = keyed(await engine.kafka.read(engine.topics.streaming, until=lambda rs: len(keyed(rs)) >= 2,
                                           settle=1.0))
    assert [r.raw for r in events] == [raw, raw] and events[0].partition == events[1].partition
    # The replayed record is dead-lettered again, after the end the run read up to.
    letters = keyed(await engine.kafka.read(engine.topics.deadletter, until=lambda rs: len(keyed(rs)) >= 2,
                                            settle=1.0))
    assert len(letters) == 2 and len(events) == 2


async def test_bad_command_lines_exit_2_naming_what_is_wrong(engine: Deployment) -> None:
    since = await cli(engine, "deadletters", "replay", "--since", "yesterday")
    assert since.returncode == 2 and "--since: 'yesterday' is neither" in since.stderr
    url = await cli(engine, "endpoints", "enable", "ftp://files.example.com/x")
    assert url.returncode == 2 and "url: the scheme must be http or https" in url.stderr
    usage = await cli(engine, "deadletters", "purge")
    assert usage.returncode == 2 and "usage: deadletters replay" in usage.stderr


async def skipped_by_workers(engine: Deployment, count: int, timeout: float = 30.0) -> None:
    for _ in range(int(timeout * 4)):
        reports = [await worker.health() or {} for worker in engine.workers]
        if sum(r.get("counters", {}).get("webhook.replays_skipped", 0) for r in reports) >= count:
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"the workers did not skip {count} replayed firings")
