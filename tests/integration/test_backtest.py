"""Backtests on a real broker: 10,000 past events decided by a worker, then backtested by the CLI,
over HTTP and in process — the same firings, and nothing produced anywhere."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.backtest.runner import run_backtest
from app.domain.definitions import compile_definition
from app.domain.models import ActionCommand
from app.settings import Settings
from app.topics import Topics, ensure_topics
from tests.integration.conftest import Deployment
from tests.support.kafka import KafkaClient
from tests.support.worker import REPO, WorkerProcess

pytestmark = pytest.mark.integration

PARTITIONS = 4
EVENTS = 10_000
CUSTOMERS = 40
DAYS = 5
TRIGGER_ID = "refund-aware-spender"
# A purchase over 500 fires 30 minutes later unless refunded before (same order); once per 2 h
# per customer (cooldown, checked at the due time), at most 6 a day per customer (limit).
TRIGGER = {"id": TRIGGER_ID, "source": "streaming", "eventType": "purchase", "priority": 75,
           "conditions": ["event.amount > 500"], "cooldownMinutes": 120,
           "delay": {"minutes": 30},
           "cancelOn": [{"source": "streaming", "eventType": "refund", "sameFields": ["orderId"]}],
           "limit": {"max": 6, "window": {"days": 1}},
           "action": {"type": "enroll_journey", "journeyId": "backtest-journey"}}


def history(start: datetime) -> list[tuple[int, str, dict[str, Any]]]:
    """(timestamp ms, customer id, event): EVENTS events over DAYS days, in time order; a
    refund follows some purchases, for the customer's latest order."""
    rng = random.Random(15)  # noqa: S311 - test data
    step = DAYS * 86_400_000 // EVENTS
    last_order: dict[str, str] = {}
    events = []
    for n in range(EVENTS):
        at = int(start.timestamp() * 1000) + n * step + rng.randrange(step)
        customer = f"bt-{rng.randrange(CUSTOMERS)}"
        roll = rng.random()
        event: dict[str, Any] = {"customerId": customer, "id": f"bt-e{n}",
                                 "timestamp": datetime.fromtimestamp(at / 1000, tz=UTC).isoformat()}
        if roll < 0.4:
            last_order[customer] = f"o{n}"
            event |= {"type": "purchase", "orderId": f"o{n}", "amount": rng.choice([100, 600, 900, 1500])}
        elif roll < 0.55 and customer in last_order:
            event |= {"type": "refund", "orderId": last_order[customer]}
        else:
            event |= {"type": "page_view", "page": f"/p/{rng.randrange(50)}"}
        events.append((at, customer, event))
    return events


async def produce(bootstrap: str, topic: str, events: list[tuple[int, str, dict[str, Any]]]) -> None:
    """Each event with its record timestamp set to the event's own time, as a producer
    forwarding history would: offsets-for-times then finds the range."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=10)
    await producer.start()
    try:
        for at, customer, event in events:
            await producer.send(topic, key=customer.encode(), value=json.dumps(event).encode(), timestamp_ms=at)
        await producer.flush()
    finally:
        await producer.stop()


async def end_offsets(bootstrap: str) -> dict[TopicPartition, int]:
    """The end offset of every partition of every topic on the broker."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        names = await consumer.topics()
        partitions = [TopicPartition(name, p) for name in names for p in consumer.partitions_for_topic(name) or ()]
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def quiet(bootstrap: str, timeout: float = 120.0) -> None:
    """Until no topic's end offset moves for 3 seconds."""
    deadline = time.monotonic() + timeout
    last = await end_offsets(bootstrap)
    while time.monotonic() < deadline:
        await asyncio.sleep(3)
        now = await end_offsets(bootstrap)
        if now == last:
            return
        last = now
    raise AssertionError("the worker kept producing")


def cli(bootstrap: str, topics: Topics, app_id: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TRIGGERS_TOPIC_PREFIX": topics.prefix,
           "TRIGGERS_PARTITIONS": str(PARTITIONS), "TRIGGERS_APP_ID": app_id}
    return subprocess.run([sys.executable, "-m", "faust", "-A", "app.main", "triggers", "backtest", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
async def decided(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The history on the topics, decided by a worker (read as a backlog, so in event time,
    then the clock fires what is left); its firings and suppressions as the live run's."""
    workdir = tmp_path_factory.mktemp("backtest")
    tag = uuid.uuid4().hex[:8]
    topics, app_id = Topics(f"t{tag}."), f"trigger-engine-test-{tag}"
    settings = Settings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, TRIGGERS_PARTITIONS=PARTITIONS,
                        TRIGGERS_TOPIC_PREFIX=topics.prefix, TRIGGERS_APP_ID=app_id)
    await ensure_topics(settings, topics)
    deployment = Deployment(await KafkaClient(kafka_bootstrap).start(), topics)
    start = (datetime.now(UTC) - timedelta(days=DAYS + 2)).replace(hour=0, minute=0, second=0, microsecond=0)
    await deployment.kafka.send(topics.journey_definitions, "backtest-journey",
                                {"id": "backtest-journey", "maxDurationDays": 30})
    await deployment.kafka.send(topics.definitions, TRIGGER_ID, TRIGGER)
    await produce(kafka_bootstrap, topics.streaming, history(start))
    worker = WorkerProcess(kafka_bootstrap, app_id, topics.prefix, workdir, "live", PARTITIONS)
    deployment.workers.append(worker.start())
    try:
        await worker.wait_healthy()

        def settled(report: dict[str, Any]) -> bool:
            counters = report["counters"]
            decided = sum(counters.get(f"pending_{status}", 0) for status in ("fired", "cancelled", "dropped"))
            return counters.get("events.streaming", 0) >= EVENTS and counters.get("pending_scheduled", 0) == decided
        await worker.wait_for(settled, timeout=180, what="every event handled, every delayed firing decided")
        records = await deployment.kafka.read(topics.firings, settle=2, timeout=10)
        suppressed = await deployment.kafka.read(topics.suppressed, settle=0.5, timeout=5)
        await quiet(kafka_bootstrap)  # the actions performed too: nothing the worker writes any more
        live = {"firingIds": {r.value["firingId"] for r in records if r.value["triggerId"] == TRIGGER_ID},
                "suppressed": len({r.value["firingId"] for r in suppressed if r.value["reason"] == "trigger_limit"})}
        yield {"settings": settings, "topics": topics, "app_id": app_id, "worker": worker, "start": start,
               "end": start + timedelta(days=DAYS + 1), "live": live, "workdir": workdir}
    finally:
        deployment.stop()
        await deployment.kafka.stop()


async def test_a_backtest_reports_exactly_the_firings_the_live_run_made(decided: dict[str, Any],
                                                                       kafka_bootstrap: str) -> None:
    live = decided["live"]
    assert len(live["firingIds"]) > 100 and live["suppressed"] > 0, live  # the story exercises each rule
    before = await end_offsets(kafka_bootstrap)

    fired: list[ActionCommand] = []
    outcome = await run_backtest(decided["settings"], decided["topics"], compile_definition(TRIGGER),
                                 decided["start"], decided["end"], on_firing=fired.append)
    assert {command.firing_id for command in fired} == live["firingIds"], {**outcome.report, "samples": None}
    assert len(fired) == len(live["firingIds"])  # none twice
    report = outcome.report
    assert report["eventsRead"] == EVENTS and report["wouldFire"] == len(live["firingIds"])
    assert report["suppressed"] == {"trigger_limit": live["suppressed"]}
    assert report["pending"] == 0 and report["cooledDown"] > 0 and not report["truncated"]
    assert len(report["perDay"]) == DAYS + 1 and sum(day["firings"] for day in report["perDay"]) == len(fired)
    assert report["perBand"] == {"critical": 0, "high": len(fired), "medium": 0, "low": 0}

    definition = decided["workdir"] / "trigger.json"
    definition.write_text(json.dumps(TRIGGER))
    run = cli(kafka_bootstrap, decided["topics"], decided["app_id"], str(definition),
              "--from", decided["start"].isoformat(), "--to", decided["end"].isoformat(), "--json")
    assert run.returncode == 0, run.stderr
    from_cli = json.loads(run.stdout)
    assert "events" in run.stderr  # the progress bar
    assert {key: value for key, value in from_cli.items() if key != "seconds"} == \
        {key: value for key, value in report.items() if key != "seconds"}
    assert len(from_cli["samples"]) == 20 and {s["firingId"] for s in from_cli["samples"]} <= live["firingIds"]

    async with httpx.AsyncClient(timeout=120) as client:
        response = await client.post(f"{decided['worker'].url}/triggers/backtest", json={
            "triggerId": TRIGGER_ID, "from": decided["start"].isoformat(), "to": decided["end"].isoformat()})
    assert response.status_code == 200, response.text
    by_id = response.json()
    # The published trigger's samples name the version backtested (a file has none).
    versions = {sample.pop("definitionVersion") for sample in by_id["samples"]}
    assert len(versions) == 1 and isinstance(versions.pop(), int)
    assert {key: value for key, value in by_id.items() if key != "seconds"} == \
        {key: value for key, value in report.items() if key != "seconds"}

    assert await end_offsets(kafka_bootstrap) == before, "a backtest produced a record"


async def test_max_events_stops_early_and_says_so(decided: dict[str, Any], kafka_bootstrap: str) -> None:
    run = cli(kafka_bootstrap, decided["topics"], decided["app_id"], TRIGGER_ID,
              "--from", decided["start"].isoformat(), "--to", decided["end"].isoformat(), "--max-events", "1000")
    assert run.returncode == 0, run.stderr
    assert "1,000  of 10,000 in the range (stopped at --max-events 1,000)" in run.stdout


async def test_a_stopped_run_reports_what_it_read(decided: dict[str, Any]) -> None:
    """What Ctrl-C does in the CLI (its SIGINT handler sets the flag `should_stop` reads)."""
    checks = 0

    def stop_soon() -> bool:
        nonlocal checks
        checks += 1
        return checks > 3  # after a few thousand records
    outcome = await run_backtest(decided["settings"], decided["topics"], compile_definition(TRIGGER),
                                 decided["start"], decided["end"], should_stop=stop_soon)
    assert outcome.interrupted and 0 < outcome.report["eventsRead"] < EVENTS
    assert outcome.report["wouldFire"] < len(decided["live"]["firingIds"])


async def test_ctrl_c_prints_the_partial_report_and_exits_130(decided: dict[str, Any], kafka_bootstrap: str) -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TRIGGERS_TOPIC_PREFIX": decided["topics"].prefix,
           "TRIGGERS_PARTITIONS": str(PARTITIONS), "TRIGGERS_APP_ID": decided["app_id"]}
    process = subprocess.Popen(
        [sys.executable, "-m", "faust", "-A", "app.main", "triggers", "backtest", TRIGGER_ID,
         "--from", decided["start"].isoformat(), "--to", decided["end"].isoformat()],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    await asyncio.to_thread(process.stderr.read, 1)  # the progress bar's first character: the run began
    process.send_signal(signal.SIGINT)
    stdout, stderr = await asyncio.to_thread(process.communicate, timeout=120)
    assert process.returncode == 130, (stdout, stderr)
    assert "INTERRUPTED: a partial report" in stdout and "Traceback" not in stderr


async def test_bad_input_is_refused_with_a_clear_message_and_no_traceback(
        decided: dict[str, Any], kafka_bootstrap: str, tmp_path: Path) -> None:
    topics, app_id = decided["topics"], decided["app_id"]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({**TRIGGER, "priority": 500, "conditions": ["event.amount >>> 1"]}))
    cases = [
        ((TRIGGER_ID, "--from", "2026-11-02", "--to", "2026-11-01"), 2,
         "--from (2026-11-02T00:00:00+00:00) must be before --to"),
        ((TRIGGER_ID, "--from", "yesterday", "--to", "now"), 2, "--from: 'yesterday' is not a time"),
        (("no-such-trigger", "--from", "-1d", "--to", "now"), 2, "no trigger 'no-such-trigger'"),
        ((str(broken), "--from", "-1d", "--to", "now"), 1, "priority"),
        ((TRIGGER_ID, "--to", "now"), 2, "backtest needs --from TIME and --to TIME"),
    ]
    for args, code, message in cases:
        run = cli(kafka_bootstrap, topics, app_id, *args)
        assert run.returncode == code, (args, run.stdout, run.stderr)
        assert message in run.stderr, (args, run.stderr)
        assert "Traceback" not in run.stderr
    broken_lines = cli(kafka_bootstrap, topics, app_id, str(broken), "--from", "-1d", "--to", "now").stderr
    assert "conditions" in broken_lines  # every error, each naming its field

    # A range with no events: zeros and a clear line, exit 0.
    empty = cli(kafka_bootstrap, topics, app_id, TRIGGER_ID, "--from", "2001-01-01", "--to", "2001-01-03")
    assert empty.returncode == 0, empty.stderr
    assert "no events in this range" in empty.stdout and "events read              0" in empty.stdout


async def test_http_bad_input_names_the_field(decided: dict[str, Any]) -> None:
    url = f"{decided['worker'].url}/triggers/backtest"
    async with httpx.AsyncClient(timeout=30) as client:
        cases = [
            ({"triggerId": TRIGGER_ID, "from": "2026-11-02", "to": "2026-11-01"}, 400, "must be before"),
            ({"triggerId": TRIGGER_ID, "to": "now"}, 400, "from: required"),
            ({"triggerId": TRIGGER_ID, "from": "-1d", "to": "now", "maxEvents": 0}, 400, "maxEvents"),
            ({"triggerId": "nope", "from": "-1d", "to": "now"}, 404, "triggerId: no trigger 'nope'"),
            ({"definition": {**TRIGGER, "priority": 500}, "from": "-1d", "to": "now"}, 422, "definition: priority"),
        ]
        for body, status, message in cases:
            response = await client.post(url, json=body)
            assert response.status_code == status, (body, response.text)
            assert any(message in error for error in response.json()["errors"]), response.json()

        # One backtest at a time per worker: a second one meanwhile is refused, not queued.
        whole = {"triggerId": TRIGGER_ID, "from": decided["start"].isoformat(), "to": decided["end"].isoformat()}
        answers = await asyncio.gather(client.post(url, json=whole), client.post(url, json=whole))
        assert sorted(answer.status_code for answer in answers) == [200, 429], [a.text for a in answers]
        assert next(a for a in answers if a.status_code == 429).headers["Retry-After"] == "5"


async def test_conditions_on_customer_see_todays_rows(decided: dict[str, Any], kafka_bootstrap: str) -> None:
    """Last in this module: it loads a row (so the topics change)."""
    topics, settings = decided["topics"], decided["settings"]
    kafka = await KafkaClient(kafka_bootstrap).start()
    try:
        await kafka.send(topics.rows, "bt-1", {"table": "customers", "customerId": "bt-1",
                                               "attributes": {"tier": "gold"}})
        await kafka.read(f"{decided['app_id']}-rows-changelog", until=lambda records: len(records) >= 1, timeout=30)
    finally:
        await kafka.stop()
    gold = {**TRIGGER, "id": "gold-spender", "conditions": ["event.amount > 500", "customer.tier == 'gold'"]}
    fired: list[ActionCommand] = []
    outcome = await run_backtest(settings, topics, compile_definition(gold), decided["start"], decided["end"],
                                 on_firing=fired.append)
    assert fired and {command.customer_id for command in fired} == {"bt-1"}
    assert outcome.rows.startswith("today's (1 customers")


async def test_topics_of_one_partition_are_merged_in_time_order(kafka_bootstrap: str) -> None:
    """A refund on events.outcomes dated before the purchase's due time cancels it, although
    events.streaming holds a far later event of the same customer: read topic by topic, that
    later event would move the partition's time past the due time before the refund is read."""
    topics = Topics(f"m{uuid.uuid4().hex[:8]}.")
    settings = Settings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, TRIGGERS_PARTITIONS=PARTITIONS,
                        TRIGGERS_TOPIC_PREFIX=topics.prefix)
    await ensure_topics(settings, topics)
    start = datetime(2026, 10, 1, tzinfo=UTC)

    def at(minutes: int, event_type: str, order: str, event_id: str) -> tuple[int, str, dict[str, Any]]:
        moment = start + timedelta(minutes=minutes)
        return (int(moment.timestamp() * 1000), "mx-1", {"type": event_type, "customerId": "mx-1", "id": event_id,
                                                          "orderId": order, "amount": 900,
                                                          "timestamp": moment.isoformat()})
    await produce(kafka_bootstrap, topics.streaming, [at(0, "purchase", "o1", "p1"), at(120, "purchase", "o2", "p2")])
    await produce(kafka_bootstrap, topics.outcomes, [at(10, "refund", "o1", "r1")])
    definition = {name: value for name, value in TRIGGER.items() if name != "limit"} | {
        "id": "merged", "cooldownMinutes": 0,
        "cancelOn": [{"source": "outcome", "eventType": "refund", "sameFields": ["orderId"]}]}
    fired: list[ActionCommand] = []
    outcome = await run_backtest(settings, topics, compile_definition(definition), start, start + timedelta(days=1),
                                 on_firing=fired.append)
    assert [command.event_id for command in fired] == ["p2"]
    assert outcome.details["cancelled"] == 1 and outcome.report["eventsRead"] == 3
