"""`make bench`: the engine against the bare-consumer ceiling, on one fresh embedded broker.

Measures, in one run: (a) a bare aiokafka consume+decode rate, (b) engine throughput on a
backlog with 10 definitions, (c) the same with 1,000 definitions over 200 event types,
(i) the same as (b) with 100 definitions reading 50 windowed aggregates, (j) (b) with a contact
policy applying to every firing ((b), (c), (i) and (j) run four times each, interleaved, and each
is all its events over all its time),
(d) produce-to-firing latency at a steady rate, (e) firing-to-recommendation latency,
(f) the worker's RSS, (h) how late delayed firings fire when 1,000 a second come due,
(g) the worker's RSS with 1,000,000 pending firings and its recovery from an empty data
directory, (l) webhook deliveries per second to one local endpoint and to 100 (a receiver in a
process of its own) against a bare httpx client sending the same requests, (k) a backtest
(`triggers backtest`) over 1,000,000 events already on the topic: its rate against (b) and its
peak RSS (`--only-backtest` runs (k) alone), (m) (b) with an experiment on every firing: a
10% holdout, two variants and a conversion window per firing, which events of one of the ten
types convert (`--only-experiment` runs (b) and (m) once each). Prints a table and writes
bench/results/<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.cli.devbroker import EmbeddedBroker, free_port
from app.settings import Settings
from app.topics import Topics, ensure_topics
from bench.plot import plot
from bench.webhooks import Receiver, bare_rate
from tests.support.worker import REPO, WorkerProcess

PARTITIONS = 8
RESULTS = Path(__file__).parent / "results"
# The bare client of (l) gets the engine's default concurrency per endpoint.
WEBHOOK_SLOTS_PER_ENDPOINT: int = Settings.model_fields["webhook_per_endpoint_concurrency"].default


def make_events(count: int, customers: int, types: list[str], firing_share: float, seed: int = 7) -> list[bytes]:
    """~100-byte JSON events; `firing_share` of them carry an amount above the threshold."""
    rng = random.Random(seed)  # noqa: S311 - test data
    events = []
    for n in range(count):
        amount = 5000 if rng.random() < firing_share else rng.randint(1, 900)
        events.append(json.dumps({"type": rng.choice(types), "customerId": f"c-{rng.randrange(customers)}",
                                  "amount": amount, "channel": "web", "id": f"e{n}"}).encode())
    return events


CHANNELS = ["web", "app", "store", "email", "sms"]


def definitions(count: int, types: list[str]) -> list[dict[str, Any]]:
    """`count` definitions over `types`. Where several share a type, their filters name
    different channels and only one names the events' "web": every definition of the type
    is a candidate and is checked, but the same events fire as with one per type, so (c)
    differs from (b) in the definitions to match, not in the actions to perform."""
    return [{"id": f"bench-{n}", "source": "streaming", "eventType": types[n % len(types)],
             "filters": {"channel": CHANNELS[n // len(types) % len(CHANNELS)]},
             "conditions": ["event.amount > 1000"],
             "action": {"type": "enroll_journey", "journeyId": "bench"}, "priority": 1 + n % 100}
            for n in range(count)]


async def produce(bootstrap: str, topic: str, events: Iterable[bytes]) -> None:
    """Events keyed by their customer id, as fast as the producer takes them."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=262144)
    await producer.start()
    try:
        for raw in events:
            key = json.loads(raw)["customerId"].encode()
            await producer.send(topic, key=key, value=raw)
        await producer.flush()
    finally:
        await producer.stop()


async def create_topic(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, prefix: str) -> None:
    """Drop a finished case's topics. The embedded broker keeps everything in memory and
    serves fetches more slowly the more it holds, so without this every case would run on a
    slower broker than the one before it (measured: swapping (b) and (c) swapped the winner)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [name for name in await admin.list_topics() if name.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


async def bare_consumer_rate(bootstrap: str, events: list[bytes]) -> float:
    """(a) What one Python process can read and decode: the ceiling for the engine."""
    topic = f"bench-raw-{uuid.uuid4().hex[:6]}"
    await create_topic(bootstrap, topic)
    await produce(bootstrap, topic, events)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                fetch_max_wait_ms=10, max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    seen, started = 0, time.perf_counter()
    try:
        while seen < len(events):
            for records in (await consumer.getmany(timeout_ms=200, max_records=10_000)).values():
                for record in records:
                    json.loads(record.value)
                seen += len(records)
    finally:
        await consumer.stop()
    rate = seen / (time.perf_counter() - started)
    await delete_topics(bootstrap, topic)
    return rate


class Deployment:
    def __init__(self, bootstrap: str, workdir: Path, name: str) -> None:
        tag = uuid.uuid4().hex[:6]
        self.bootstrap = bootstrap
        self.topics = Topics(f"b{tag}.")
        self.app_id = f"bench-{tag}"  # faust's own topics (changelogs) start with it
        # A data directory of its own: tables left by an earlier run (whose topics are gone)
        # would be stale state, which faust's recovery consistency check rightly refuses.
        (workdir / tag).mkdir()
        self.worker = WorkerProcess(bootstrap, self.app_id, self.topics.prefix, workdir / tag, name,
                                    partitions=PARTITIONS, env={"TRIGGERS_ALLOW_PRIVATE_URLS": "1"})

    async def publish(self, topic: str, items: list[dict[str, Any]], id_field: str = "id") -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap)
        await producer.start()
        try:
            for item in items:
                await producer.send(topic, key=item[id_field].encode(), value=json.dumps(item).encode())
            await producer.flush()
        finally:
            await producer.stop()

    def rss_mb(self) -> float:
        assert self.worker.process is not None
        status = Path(f"/proc/{self.worker.process.pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024


async def engine_throughput(bootstrap: str, workdir: Path, events: list[bytes], defs: list[dict[str, Any]],
                            name: str, policies: list[dict[str, Any]] | None = None) -> dict[str, float]:
    """(b)/(c)/(i)/(j): a backlog waits on the topic; time the worker from ready to the last event."""
    deployment = Deployment(bootstrap, workdir, name)
    # Topics and definitions first (a throwaway start creates the topics), then the backlog.
    deployment.worker.start()
    await deployment.worker.wait_healthy()
    # The journey the definitions enroll into, so firings are performed (not dead-lettered).
    await deployment.publish(deployment.topics.journey_definitions, [{"id": "bench", "maxDurationDays": 30}])
    await deployment.publish(deployment.topics.definitions, defs)
    await deployment.publish(deployment.topics.policy_definitions, policies or [])
    await deployment.worker.wait_for(lambda r: r["definitions"] == len(defs)
                                     and r["catalogs"]["journey"]["count"] == 1
                                     and r["catalogs"]["policy"]["count"] == len(policies or []), what="loaded")
    deployment.worker.stop()
    await produce(bootstrap, deployment.topics.streaming, events)
    deployment.worker.start()
    try:
        report = await deployment.worker.wait_healthy()
        started = time.perf_counter()
        # Events the worker took before it reported ready are not counted in its time.
        initial = report["counters"].get("events.streaming", 0)
        samples: list[tuple[float, int]] = []
        while True:
            report = await deployment.worker.health() or report
            done = report["counters"].get("events.streaming", 0)
            samples.append((time.perf_counter() - started, done))
            if done >= len(events):
                break
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        rss = deployment.rss_mb()
        firings = report["counters"].get("firings", 0)
    finally:
        deployment.worker.stop()
    await delete_topics(bootstrap, deployment.topics.prefix)
    await delete_topics(bootstrap, deployment.app_id)
    timed = len(events) - initial
    if timed < len(events) // 2:
        raise SystemExit(f"{name}: the worker took {initial} of {len(events)} events before it reported "
                         "ready, too few are left to time: use a larger --events")
    return {"events": timed, "seconds": elapsed, "eventsPerSecond": timed / elapsed,
            "firings": firings, "rssMb": rss, "timeline": samples}


async def paced(started: float, n: int, rate: int) -> None:
    """Until the time the `n`th record of a steady `rate` per second is due."""
    await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))


async def steady_latency(bootstrap: str, workdir: Path, rate: int, seconds: int) -> dict[str, float]:
    """(d) produce-to-firing and (e) firing-to-recommendation at a steady rate."""
    deployment = Deployment(bootstrap, workdir, "latency")
    deployment.worker.start()
    await deployment.worker.wait_healthy()
    await deployment.publish(deployment.topics.decision_flow_definitions, [{
        "id": "bench-flow", "maxOffers": 1, "offers": [{"id": "o1", "score": "event.amount / 100"}]}])
    await deployment.publish(deployment.topics.definitions, [
        {"id": "every-tick", "source": "streaming", "eventType": "tick",
         "action": {"type": "fire_recommend", "decisionFlowId": "bench-flow"}}])
    await deployment.worker.wait_for(lambda r: r["definitions"] == 1 and r["catalogs"]["decision_flow"]["count"] == 1,
                                     what="loaded")
    sent: dict[str, float] = {}
    latencies: list[float] = []
    fired_at: dict[str, datetime] = {}
    recommended_at: dict[str, datetime] = {}
    total = rate * seconds

    async def read() -> None:
        consumer = AIOKafkaConsumer(deployment.topics.firings, deployment.topics.recommendations,
                                    bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                    fetch_max_wait_ms=5)
        await consumer.start()
        try:
            while len(latencies) < total or len(recommended_at) < total:
                for records in (await consumer.getmany(timeout_ms=100)).values():
                    now = time.perf_counter()
                    for record in records:
                        value = json.loads(record.value)
                        if record.topic == deployment.topics.firings:
                            latencies.append(now - sent[value["eventId"]])
                            fired_at[value["firingId"]] = datetime.fromisoformat(value["firedAt"])
                        else:  # the two topics are read independently: pair them up at the end
                            recommended_at[value["firingId"]] = datetime.fromisoformat(value["at"])
        finally:
            await consumer.stop()

    reader = asyncio.create_task(read())
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    started = time.perf_counter()
    for n in range(total):
        await paced(started, n, rate)
        event_id = f"lat-{n}"
        body = json.dumps({"type": "tick", "customerId": f"c-{n % 500}", "id": event_id, "amount": n}).encode()
        sent[event_id] = time.perf_counter()
        await producer.send_and_wait(deployment.topics.streaming, key=f"c-{n % 500}".encode(), value=body)
    await producer.stop()
    try:
        await asyncio.wait_for(reader, timeout=60)
    finally:
        deployment.worker.stop()
    recommendation_gaps = [(recommended_at[f] - fired_at[f]).total_seconds() for f in recommended_at]
    return {"rate": rate, "events": total, **_percentiles("produceToFiringMs", latencies),
            **_percentiles("firingToRecommendationMs", recommendation_gaps)}


# (i): five aggregates per event type (50 over the 10 types), each with a condition that holds
# for every event of the bench (so it is computed and compared on every event of its type).
AGGREGATES = [
    ("n1h", {"fn": "count", "window": {"hours": 1}}, "agg.n1h >= 1"),
    ("sum24h", {"fn": "sum", "of": "event.amount", "window": {"hours": 24}}, "agg.sum24h > 0"),
    ("max1h", {"fn": "max", "of": "event.amount", "window": {"hours": 1}}, "agg.max1h >= 1"),
    ("avg24h", {"fn": "avg", "of": "event.amount", "window": {"hours": 24}}, "agg.avg24h > 0"),
    ("channels24h", {"fn": "distinct", "of": "event.channel", "window": {"hours": 24}}, "agg.channels24h >= 1"),
]
AGGREGATES_NOTE = ("(i) 100 definitions, 10 per event type of (b): each defines two of its type's 5 aggregates "
                   "(count 1 h, sum/avg of amount 24 h, max amount 1 h, distinct channel 24 h: 50 distinct) "
                   "and has no filters; conditions: both aggregates (true for every event), then "
                   "event.amount > 1000 for one definition per type (as in (b)), > 10000 (never) for the other 9")


# (j): one policy over every firing, a limit no customer reaches (so every firing is counted
# and checked, and all fire, as in (b)).
CAP_POLICY = {"id": "bench-cap", "limits": [{"max": 1_000_000, "window": {"days": 7}}]}
CAP_NOTE = ("(j) is (b) with one contact policy applying to every firing: a 7-day limit no customer "
            "reaches, so each firing reads and writes the customer's contact history")


# (k): a backtest over events already on the topic, run as an operator runs it (the CLI).
BACKTEST_DAYS = 7
BACKTEST_START = datetime(2026, 1, 5, tzinfo=UTC)
BACKTEST_TRIGGER = {**definitions(10, [f"type-{n}" for n in range(10)])[0], "id": "bench-backtest",
                    "cooldownMinutes": 60}
BACKTEST_NOTE = ("(k) `triggers backtest` (a process of its own, tqdm bar on) over events of (b)'s shape, dated "
                 f"over {BACKTEST_DAYS} days, for one definition of (b) with a 60-minute cooldown; rate = events "
                 "read / the report's seconds (offsets found, records read and decided); peak RSS = the "
                 "process's VmHWM")


def backtest_events(count: int, customers: int, seed: int = 7) -> Iterator[tuple[int, bytes, bytes]]:
    """(timestamp ms, key, value): (b)'s events (10 types, ~1% over the threshold), in time order."""
    rng = random.Random(seed)  # noqa: S311 - test data
    start_ms = int(BACKTEST_START.timestamp() * 1000)
    step = BACKTEST_DAYS * 86_400_000 / count
    for n in range(count):
        customer = f"c-{rng.randrange(customers)}"
        amount = 5000 if rng.random() < 0.01 else rng.randint(1, 900)
        yield (start_ms + int(n * step), customer.encode(), json.dumps(
            {"type": f"type-{rng.randrange(10)}", "customerId": customer, "amount": amount, "channel": "web",
             "id": f"k{n}"}).encode())


async def backtest_rate(bootstrap: str, workdir: Path, count: int, customers: int) -> dict[str, Any]:
    """(k) `count` events on a fresh streaming topic (record timestamps = the events' times),
    then `faust -A app.main triggers backtest FILE --from --to --json` over all of them."""
    topics = Topics(f"k{uuid.uuid4().hex[:6]}.")
    await ensure_topics(Settings(KAFKA_BOOTSTRAP_SERVERS=bootstrap, TRIGGERS_PARTITIONS=PARTITIONS), topics)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=262144)
    await producer.start()
    try:
        for at, key, value in backtest_events(count, customers):
            await producer.send(topics.streaming, key=key, value=value, timestamp_ms=at)
        await producer.flush()
    finally:
        await producer.stop()
    definition = workdir / "backtest-trigger.json"
    definition.write_text(json.dumps(BACKTEST_TRIGGER))
    end = BACKTEST_START + timedelta(days=BACKTEST_DAYS)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TRIGGERS_TOPIC_PREFIX": topics.prefix,
           "TRIGGERS_PARTITIONS": str(PARTITIONS)}
    started = time.perf_counter()
    process = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "faust", "-A", "app.main", "triggers", "backtest", str(definition),
         "--from", BACKTEST_START.isoformat(), "--to", end.isoformat(), "--json"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    peak_kb = 0
    while process.poll() is None:  # VmHWM only grows: the last reading is the peak
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
            peak_kb = max(peak_kb, int(next(line for line in status.splitlines()
                                            if line.startswith("VmHWM:")).split()[1]))
        except (OSError, StopIteration):
            pass
        await asyncio.sleep(0.2)
    wall = time.perf_counter() - started
    stdout = process.stdout.read() if process.stdout is not None else b""
    await delete_topics(bootstrap, topics.prefix)
    if process.returncode != 0:
        raise SystemExit(f"(k) the backtest exited with {process.returncode}")
    report = json.loads(stdout)
    return {"events": report["eventsRead"], "seconds": report["seconds"],
            "eventsPerSecond": report["eventsRead"] / report["seconds"], "processSeconds": wall,
            "wouldFire": report["wouldFire"], "matched": report["matched"], "cooledDown": report["cooledDown"],
            "peakRssMb": peak_kb / 1024}


def aggregate_definitions(types: list[str]) -> list[dict[str, Any]]:
    """10 definitions per type: every event of a type counts in its 5 aggregates, and each of
    its 10 definitions computes and compares two of them; one per type fires (~1%, as in (b))."""
    defs = []
    for n in range(10 * len(types)):
        first = n // len(types) % len(AGGREGATES)
        chosen = [AGGREGATES[first], AGGREGATES[(first + 1) % len(AGGREGATES)]]
        threshold = 1000 if n < len(types) else 10000
        defs.append({"id": f"bench-agg-{n}", "source": "streaming", "eventType": types[n % len(types)],
                     "aggregates": {name: spec for name, spec, _ in chosen},
                     "conditions": [condition for _, _, condition in chosen] + [f"event.amount > {threshold}"],
                     "action": {"type": "enroll_journey", "journeyId": "bench"}, "priority": 1 + n % 100})
    return defs


def timer_events(count: int, customers: int) -> Iterator[bytes]:
    """(g): `count` events of one type, customer n % `customers` (so count / customers each),
    distinct ids; made as they are produced (a million would hold ~200 MB here)."""
    for n in range(count):
        yield json.dumps({"type": "cart_add", "customerId": f"c-{n % customers}", "amount": n % 1000,
                          "channel": "web", "id": f"t{n}"}).encode()


# The worker's log line once the due index is rebuilt (app/timers/store.py).
TIMERS_INDEXED = re.compile(r"index rebuilt table=timers .*pending=(\d+) .*seconds=([0-9.]+)")


async def pending_timers(bootstrap: str, workdir: Path, count: int, customers: int) -> dict[str, Any]:
    """(g) `count` firings pending on one worker (delay 30 days: none comes due): its RSS once
    all are scheduled, then a restart on an empty data directory: the tables come back from
    their changelogs and the due index is rebuilt from them."""
    deployment = Deployment(bootstrap, workdir, "timers")
    worker = deployment.worker
    worker.start()
    await worker.wait_healthy()
    await deployment.publish(deployment.topics.journey_definitions, [{"id": "bench", "maxDurationDays": 30}])
    await deployment.publish(deployment.topics.definitions, [
        {"id": "bench-month", "source": "streaming", "eventType": "cart_add", "delay": {"days": 30},
         "action": {"type": "enroll_journey", "journeyId": "bench"}}])
    await worker.wait_for(lambda r: r["definitions"] == 1 and r["catalogs"]["journey"]["count"] == 1, what="loaded")
    worker.stop()
    started = time.perf_counter()
    await produce(bootstrap, deployment.topics.streaming, timer_events(count, customers))
    produce_s = time.perf_counter() - started
    try:
        worker.start()
        report = await worker.wait_healthy()
        started = time.perf_counter()
        initial = report["counters"].get("events.streaming", 0)
        while (scheduled := report["counters"].get("pending_scheduled", 0)) < count:
            if time.perf_counter() - started > 1800:
                raise AssertionError(f"{scheduled} of {count} firings scheduled in 30 minutes")
            await asyncio.sleep(0.5)
            report = await _health(worker) or report
        schedule_s = time.perf_counter() - started
        rss = deployment.rss_mb()
        worker.stop()
        # Everything local is gone: the tables must come back from their changelogs.
        shutil.rmtree(worker.data_dir)
        # The embedded broker (Tansu) answers a fetch of these changelogs (~125,000 records of
        # ~1 KB per partition) with no records when the fetch may wait only the worker's default
        # 10 ms, and the worker lengthens its wait only after a fetch that brought records:
        # recovery never starts. 250 ms is the wait the worker uses itself while it works off a
        # backlog (measured: 8 partitions read at 34,000 records/s with it, none in 12 s with 10 ms).
        worker.env["TRIGGERS_FETCH_MAX_WAIT_MS"] = "250"
        log_from = worker.log_path.stat().st_size
        started = time.perf_counter()
        worker.start()
        report = await worker.wait_healthy(timeout=1800)
        healthy_s = time.perf_counter() - started
        while (indexed := _timers_indexed(worker.log_path, log_from)) is None or indexed[0] < scheduled:
            if time.perf_counter() - started > 1800:
                raise AssertionError(f"timers not indexed 30 minutes after the restart: {indexed}")
            await _health(worker)  # raises if the worker exited
            await asyncio.sleep(0.1)
        indexed_s = time.perf_counter() - started
        recovered_rss = deployment.rss_mb()
        report = await _health(worker) or report
    finally:
        worker.stop()
    await delete_topics(bootstrap, deployment.topics.prefix)
    await delete_topics(bootstrap, deployment.app_id)
    return {"events": count, "customers": customers, "produceSeconds": produce_s,
            "scheduled": scheduled, "scheduleSeconds": schedule_s,
            "scheduledPerSecond": (count - initial) / schedule_s, "rssMb": rss,
            "restart": {"healthySeconds": healthy_s, "indexedSeconds": indexed_s, "indexedPending": indexed[0],
                        "indexBuildSeconds": indexed[1], "rssMb": recovered_rss,
                        "eventsReadAgain": report["counters"].get("events.streaming", 0)}}


async def _health(worker: WorkerProcess) -> dict[str, Any] | None:
    if worker.process is None or worker.process.poll() is not None:
        raise AssertionError(f"worker {worker.name} exited:\n{worker.log_tail()}")
    return await worker.health()


def _timers_indexed(log_path: Path, offset: int) -> tuple[int, float] | None:
    """The last "index rebuilt table=timers" line after `offset` of the worker's log: (pending, seconds)."""
    with log_path.open("rb") as log:
        log.seek(offset)
        found = TIMERS_INDEXED.findall(log.read().decode(errors="replace"))
    return (int(found[-1][0]), float(found[-1][1])) if found else None


async def timer_lateness(bootstrap: str, workdir: Path, rate: int, seconds: int, delay_s: int) -> dict[str, Any]:
    """(h) live events at `rate` for `seconds`, each scheduling a firing `delay_s` later: from
    then on `rate` firings a second come due. Lateness: when the engine decided (the "fired"
    record's `at` on triggers.pending) minus `dueAt`."""
    deployment = Deployment(bootstrap, workdir, "lateness")
    worker = deployment.worker
    worker.start()
    await worker.wait_healthy()
    await deployment.publish(deployment.topics.journey_definitions, [{"id": "bench", "maxDurationDays": 30}])
    await deployment.publish(deployment.topics.definitions, [
        {"id": "bench-due", "source": "streaming", "eventType": "due", "delay": {"seconds": delay_s},
         "action": {"type": "enroll_journey", "journeyId": "bench"}}])
    await worker.wait_for(lambda r: r["definitions"] == 1 and r["catalogs"]["journey"]["count"] == 1, what="loaded")
    total = rate * seconds
    late: list[float] = []
    statuses: Counter[str] = Counter()

    async def read() -> None:
        consumer = AIOKafkaConsumer(deployment.topics.pending, bootstrap_servers=bootstrap, group_id=None,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=50)
        await consumer.start()
        try:
            while statuses["fired"] + statuses["dropped"] < total:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for record in records:
                        value = json.loads(record.value)
                        statuses[value["status"]] += 1
                        if value["status"] == "fired":
                            late.append((datetime.fromisoformat(value["at"])
                                         - datetime.fromisoformat(value["dueAt"])).total_seconds())
        finally:
            await consumer.stop()

    reader = asyncio.create_task(read())
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    started = time.perf_counter()
    for n in range(total):
        await paced(started, n, rate)
        customer = f"c-{n % (total // 4)}"
        body = {"type": "due", "customerId": customer, "id": f"d{n}", "amount": n,
                "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds")}
        await producer.send(deployment.topics.streaming, key=customer.encode(), value=json.dumps(body).encode())
    await producer.flush()
    produce_s = time.perf_counter() - started
    await producer.stop()
    try:
        await asyncio.wait_for(reader, timeout=delay_s + 120)
    except TimeoutError:
        pass  # reported as undecided
    finally:
        worker.stop()
    await delete_topics(bootstrap, deployment.topics.prefix)
    await delete_topics(bootstrap, deployment.app_id)
    return {"rate": rate, "seconds": seconds, "delaySeconds": delay_s, "events": total,
            "producedPerSecond": total / produce_s, "statuses": dict(statuses),
            "undecided": total - statuses["fired"] - statuses["dropped"],
            **_percentiles("latenessMs", late)}


async def experiment_cost(bootstrap: str, workdir: Path, count: int, customers: int) -> dict[str, Any]:
    """(b) and (m) once each on the same events: m/b."""
    types10 = [f"type-{n}" for n in range(10)]
    events = make_events(count, customers, types10, firing_share=0.01)
    plain = await engine_throughput(bootstrap, workdir, events, definitions(10, types10), "defs10")
    experimented = await engine_throughput(bootstrap, workdir, events, experiment_definitions(types10),
                                           "experiment10")
    return {"b": {k: v for k, v in plain.items() if k != "timeline"},
            "m": {k: v for k, v in experimented.items() if k != "timeline"},
            "experimentOverDefs10": experimented["eventsPerSecond"] / plain["eventsPerSecond"]}


def combined(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs of one case as one: all their events over all their time."""
    events, seconds = sum(r["events"] for r in runs), sum(r["seconds"] for r in runs)
    return {"events": events, "seconds": seconds, "eventsPerSecond": events / seconds,
            "firings": sum(r["firings"] for r in runs), "rssMb": max(r["rssMb"] for r in runs),
            "runs": runs}


def _percentiles(name: str, seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {f"{name}P50": pick(0.50), f"{name}P99": pick(0.99), f"{name}Max": ordered[-1] * 1000,
            f"{name}Mean": statistics.fmean(ordered) * 1000}


# (m): (b) with an experiment on every firing: each firing is assigned (a SHA-256 per firing),
# 10% are held out, each opens a conversion window in the experiments table, and every event of
# type-0 (a tenth of them) is shown to the conversion tracker, reading its customer's windows.
EXPERIMENT_NOTE = ("(m) is (b) with an experiment on every definition: holdoutPercent 10, two variants (weights "
                   "1:1, enroll_journey), a conversion window of 7 days per firing, converted by any type-0 event")


def experiment_definitions(types: list[str]) -> list[dict[str, Any]]:
    return [{**definition, "experiment": {
        "holdoutPercent": 10,
        "variants": [{"name": "A", "weight": 1, "action": definition["action"]},
                     {"name": "B", "weight": 1, "action": definition["action"]}],
        "conversion": {"source": "streaming", "eventType": types[0], "within": {"days": 7}}}}
        for definition in definitions(10, types)]


# (b), (c), (i), (j) and (m) four times each in this order: this VM's speed drifts by tens of percent
# within minutes, and a steady drift then weighs on all of them alike; every (b) run is next to
# an (i) and a (j) run.
THROUGHPUT_ORDER = ("b", "i", "j", "m", "c", "c", "m", "j", "i", "b", "c", "b", "m", "i", "j", "j", "i", "m",
                    "b", "c")
# `--quick`: the same cases twice each, and no (d), (e), (g), (h), (l): a check of the ratios
# after a change that leaves latency, timers and webhooks alone (the results file says so).
QUICK_ORDER = ("b", "i", "j", "m", "c", "c", "m", "j", "i", "b")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--latency-seconds", type=int, default=20)
    parser.add_argument("--timers", type=int, default=1_000_000, help="(g) pending firings")
    parser.add_argument("--timer-customers", type=int, default=250_000, help="(g) customers they are spread over")
    parser.add_argument("--due-rate", type=int, default=1000, help="(h) firings coming due per second")
    parser.add_argument("--due-seconds", type=int, default=20, help="(h) for how long")
    parser.add_argument("--deliveries", type=int, default=5000, help="(l) webhook firings per case")
    parser.add_argument("--backtest-events", type=int, default=1_000_000, help="(k) events backtested")
    parser.add_argument("--only-backtest", action="store_true", help="run (k) alone and print its figures")
    parser.add_argument("--only-experiment", action="store_true", help="run (b) and (m) once each, print m/b")
    parser.add_argument("--quick", action="store_true",
                        help="(a)-(c), (f), (i)-(k), (m) only, each throughput case twice (about 10 minutes)")
    args = parser.parse_args()
    broker = EmbeddedBroker(free_port()).start()
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    began = time.perf_counter()
    if args.only_backtest:
        try:
            alone = await backtest_rate(broker.bootstrap, workdir, args.backtest_events, args.customers)
        finally:
            broker.stop()
            shutil.rmtree(workdir, ignore_errors=True)
        print(json.dumps(alone, indent=2))
        print(BACKTEST_NOTE)
        return 0
    if args.only_experiment:
        try:
            alone = await experiment_cost(broker.bootstrap, workdir, args.events, args.customers)
        finally:
            broker.stop()
            shutil.rmtree(workdir, ignore_errors=True)
        print(json.dumps(alone, indent=2))
        print(EXPERIMENT_NOTE)
        return 0
    try:
        types10 = [f"type-{n}" for n in range(10)]
        types200 = [f"type-{n}" for n in range(200)]
        events10 = make_events(args.events, args.customers, types10, firing_share=0.01)
        events200 = make_events(args.events, args.customers, types200, firing_share=0.01)
        print(f"embedded broker on {broker.bootstrap}; {args.events} events, {args.customers} customers", flush=True)
        raw = await bare_consumer_rate(broker.bootstrap, events10)
        print(f"(a) bare consumer: {raw:,.0f} events/s", flush=True)
        cases = {"b": ("defs10", events10, definitions(10, types10), []),
                 "c": ("defs1000", events200, definitions(1000, types200), []),
                 "i": ("aggregates100", events10, aggregate_definitions(types10), []),
                 "j": ("capped10", events10, definitions(10, types10), [CAP_POLICY]),
                 "m": ("experiment10", events10, experiment_definitions(types10), [])}
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _, _ in cases.values()}
        for case in QUICK_ORDER if args.quick else THROUGHPUT_ORDER:
            name, events, defs, policies = cases[case]
            run = await engine_throughput(broker.bootstrap, workdir, events, defs, name, policies)
            runs[name].append(run)
            print(f"({case}) {name}: {run['eventsPerSecond']:,.0f} events/s", flush=True)
        ten, thousand, aggregated = combined(runs["defs10"]), combined(runs["defs1000"]), \
            combined(runs["aggregates100"])
        capped = combined(runs["capped10"])
        experimented = combined(runs["experiment10"])
        latency: dict[str, Any] | None = None
        hooks: list[dict[str, Any]] = []
        lateness: dict[str, Any] | None = None
        pending: dict[str, Any] | None = None
        if not args.quick:
            latency = await steady_latency(broker.bootstrap, workdir, rate=100, seconds=args.latency_seconds)
            print("(d)(e) latency measured", flush=True)
            hooks = [await webhook_deliveries(broker.bootstrap, workdir, args.deliveries, endpoints)
                     for endpoints in (1, 100)]
            for hook in hooks:
                print(f"(l) {hook['endpoints']} endpoint(s): {hook['engineDeliveriesPerSecond']:,.0f} deliveries/s, "
                      f"bare httpx {hook['bareHttpxRequestsPerSecond']:,.0f}/s", flush=True)
            # The timers cases last: (g) leaves the most behind in the broker, even once its topics are deleted.
            lateness = await timer_lateness(broker.bootstrap, workdir, args.due_rate, args.due_seconds, delay_s=5)
            print(f"(h) timer lateness p99 {lateness['latenessMsP99']:,.0f} ms", flush=True)
        backtest = await backtest_rate(broker.bootstrap, workdir, args.backtest_events, args.customers)
        print(f"(k) backtest: {backtest['eventsPerSecond']:,.0f} events/s, peak RSS {backtest['peakRssMb']:.0f} MB",
              flush=True)
        if not args.quick:
            pending = await pending_timers(broker.bootstrap, workdir, args.timers, args.timer_customers)
            print(f"(g) {args.timers:,} pending timers: {pending['rssMb']:.0f} MB; restart indexed them in "
                  f"{pending['restart']['indexedSeconds']:.1f} s", flush=True)
    except BaseException:
        print(f"worker logs and data kept in {workdir}", file=sys.stderr)
        raise
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    finally:
        broker.stop()
    results = {
        "at": datetime.now(UTC).isoformat(), "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                                         "python": sys.version.split()[0]},
        "benchSeconds": time.perf_counter() - began, "quick": args.quick,
        "bareConsumerEventsPerSecond": raw, "engine10": ten, "engine1000": thousand, "latency": latency,
        "engineAggregates": {**aggregated, "definitions": AGGREGATES_NOTE},
        "engineCapped": {**capped, "definitions": CAP_NOTE},
        "engineExperiment": {**experimented, "definitions": EXPERIMENT_NOTE},
        "timerLateness": lateness, "pendingTimers": pending, "webhooks": hooks,
        "backtest": {**backtest, "definitions": BACKTEST_NOTE},
        "ratios": {"engineOverRaw": ten["eventsPerSecond"] / raw,
                   "defs1000OverDefs10": thousand["eventsPerSecond"] / ten["eventsPerSecond"],
                   "aggregatesOverDefs10": aggregated["eventsPerSecond"] / ten["eventsPerSecond"],
                   "cappedOverDefs10": capped["eventsPerSecond"] / ten["eventsPerSecond"],
                   "experimentOverDefs10": experimented["eventsPerSecond"] / ten["eventsPerSecond"],
                   "backtestOverDefs10": backtest["eventsPerSecond"] / ten["eventsPerSecond"]},
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(results, indent=2))
    print_table(results, out)
    png = plot(results, out.with_suffix(".png"))
    print(f"plot: {png}" if png else "plot: skipped (matplotlib is not installed)")
    return 0


# (l): webhook deliveries, the engine against a bare httpx client, both to one receiver process.
def webhook_definitions(urls: list[str]) -> list[dict[str, Any]]:
    """One webhook trigger per endpoint, each on an event type of its own (every event fires)."""
    return [{"id": f"bench-hook-{n}", "source": "streaming", "eventType": f"hook-{n}",
             "action": {"type": "webhook", "url": url}} for n, url in enumerate(urls)]


def webhook_events(count: int, endpoints: int) -> list[bytes]:
    return [json.dumps({"type": f"hook-{n % endpoints}", "customerId": f"c-{n}", "amount": 5000,
                        "channel": "web", "id": f"h{n}"}).encode() for n in range(count)]


async def webhook_deliveries(bootstrap: str, workdir: Path, count: int, endpoints: int) -> dict[str, Any]:
    """(l) `count` firings, each a webhook to one of `endpoints` origins (ports of one receiver
    process answering 200): the worker's deliveries per second, from its start on the backlog
    to the last delivery received, against the bare client's over the same URLs."""
    receiver = Receiver(endpoints).start()
    try:
        bare = await bare_rate(receiver.urls, count, WEBHOOK_SLOTS_PER_ENDPOINT)
        before = await receiver.count()
        deployment = Deployment(bootstrap, workdir, f"hooks{endpoints}")
        deployment.worker.start()
        await deployment.worker.wait_healthy()
        defs = webhook_definitions(receiver.urls)
        await deployment.publish(deployment.topics.definitions, defs)
        await deployment.worker.wait_for(lambda r: r["definitions"] == len(defs), what="loaded")
        deployment.worker.stop()
        await produce(bootstrap, deployment.topics.streaming, webhook_events(count, endpoints))
        deployment.worker.start()
        try:
            await deployment.worker.wait_healthy()
            started = time.perf_counter()
            initial = await receiver.count() - before
            await receiver.wait_for(before + count, timeout_s=1800)
            elapsed = time.perf_counter() - started
            rss = deployment.rss_mb()
        finally:
            deployment.worker.stop()
        await delete_topics(bootstrap, deployment.topics.prefix)
        await delete_topics(bootstrap, deployment.app_id)
    finally:
        receiver.stop()
    engine = (count - initial) / elapsed
    return {"deliveries": count, "endpoints": endpoints, "engineDeliveriesPerSecond": engine,
            "bareHttpxRequestsPerSecond": bare, "engineOverBare": engine / bare, "rssMb": rss,
            "slotsPerEndpoint": WEBHOOK_SLOTS_PER_ENDPOINT}


def print_table(r: dict[str, Any], out: Path) -> None:
    rows = [
        ("(a) bare aiokafka consume+decode", f"{r['bareConsumerEventsPerSecond']:,.0f} events/s", ""),
        ("(b) engine, 10 definitions, ~1% firing", f"{r['engine10']['eventsPerSecond']:,.0f} events/s",
         f"engine/raw = {r['ratios']['engineOverRaw']:.3f} (target >= 0.15)"),
        ("(c) engine, 1000 definitions / 200 types", f"{r['engine1000']['eventsPerSecond']:,.0f} events/s",
         f"1000/10 = {r['ratios']['defs1000OverDefs10']:.2f} (target >= 0.8)"),
        ("(f) worker RSS after the 1000-definition run", f"{r['engine1000']['rssMb']:.0f} MB", "(target <= 300)"),
    ]
    if r["latency"] is not None:
        rows += latency_and_timer_rows(r)
    rows += [
        ("(i) engine, 100 aggregate definitions", f"{r['engineAggregates']['eventsPerSecond']:,.0f} events/s",
         f"i/b = {r['ratios']['aggregatesOverDefs10']:.2f} (target >= 0.7)"),
        ("(j) engine, (b) with a cap on every firing", f"{r['engineCapped']['eventsPerSecond']:,.0f} events/s",
         f"j/b = {r['ratios']['cappedOverDefs10']:.2f} (target >= 0.9: the cap costs <= 10%)"),
    ]
    if "engineExperiment" in r:
        rows.append(("(m) engine, (b) with an experiment on every firing",
                     f"{r['engineExperiment']['eventsPerSecond']:,.0f} events/s",
                     f"m/b = {r['ratios']['experimentOverDefs10']:.2f} (target >= 0.9: the experiment costs <= 10%)"))
    if "backtest" in r:
        k = r["backtest"]
        rows.append((f"(k) backtest over {k['events']:,} events", f"{k['eventsPerSecond']:,.0f} events/s",
                     f"k/b = {r['ratios']['backtestOverDefs10']:.2f} (target >= 0.5); "
                     f"peak RSS {k['peakRssMb']:.0f} MB"))
    for hook in r["webhooks"]:
        rows.append((f"(l) webhook deliveries, {hook['endpoints']} endpoint(s)",
                     f"{hook['engineDeliveriesPerSecond']:,.0f} /s",
                     f"bare httpx {hook['bareHttpxRequestsPerSecond']:,.0f}/s; engine/bare = "
                     f"{hook['engineOverBare']:.2f} (goal >= 0.5)"))
    print()
    for name, value, note in rows:
        print(f"{name:<46} {value:>20}   {note}")
    print(f"\n{AGGREGATES_NOTE}.\n{CAP_NOTE}.\n{EXPERIMENT_NOTE}.")
    if r["pendingTimers"] is not None:
        print(f"(g) {r['pendingTimers']['events']:,} events produced as a backlog, then the worker started; the "
              "restart deletes its data directory, so its tables come back from their changelogs before the index "
              "is rebuilt.")
    if r["quick"]:
        print("--quick: (d), (e), (g), (h) and (l) not measured in this run.")
    print(f"\nresults: {out} (the bench took {r['benchSeconds'] / 60:.1f} minutes)")


def latency_and_timer_rows(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(d), (e), (g), (h): not measured by `--quick`."""
    lat, late, timers = r["latency"], r["timerLateness"], r["pendingTimers"]
    restart = timers["restart"]
    return [
        ("(d) produce-to-firing at 100 events/s", f"p50 {lat['produceToFiringMsP50']:.1f} ms",
         f"p99 {lat['produceToFiringMsP99']:.1f} ms (target <= 100)"),
        ("(e) firing-to-recommendation", f"p50 {lat['firingToRecommendationMsP50']:.1f} ms",
         f"p99 {lat['firingToRecommendationMsP99']:.1f} ms"),
        (f"(g) worker RSS, {timers['scheduled']:,} pending timers", f"{timers['rssMb']:.0f} MB",
         f"(target <= 400) {timers['customers']:,} customers x {timers['events'] // timers['customers']} events, "
         f"delay 30 days; scheduled at {timers['scheduledPerSecond']:,.0f} events/s"),
        ("(g) restart, empty data dir: index rebuilt", f"{restart['indexedSeconds']:.1f} s",
         f"healthy after {restart['healthySeconds']:.1f} s; {restart['indexedPending']:,} indexed (the index "
         f"itself {restart['indexBuildSeconds']:.1f} s); RSS then {restart['rssMb']:.0f} MB"),
        (f"(h) timer lateness, {late['rate']:,} due/s for {late['seconds']} s", f"p50 {late['latenessMsP50']:.0f} ms",
         f"p99 {late['latenessMsP99']:.0f} ms (target <= 1000), max {late['latenessMsMax']:.0f} ms; "
         f"{late['statuses'].get('fired', 0):,} fired, {late['undecided']:,} undecided"),
    ]


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
