"""Secure by default, against a real broker and real worker processes: where a worker listens
without a token, who may call it with tokens, who is recorded as the actor of a write, and
that secrets inside URLs reach neither readers nor the log."""

from __future__ import annotations

import asyncio
import ipaddress
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from tests.integration.conftest import Deployment, start_deployment
from tests.support.kafka import KafkaClient
from tests.support.worker import REPO, WorkerProcess

pytestmark = pytest.mark.integration

ALICE, BOB = "alice-" + uuid.uuid4().hex, "bob-" + uuid.uuid4().hex
REFUSAL = "without an API token the worker listens on loopback only"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def headers_of(bootstrap: str, topic: str, key: str, timeout: float = 30.0) -> list[dict[str, bytes]]:
    """The Kafka headers of every record on `topic` keyed `key`, read until there is one."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=20)
    await consumer.start()
    found: list[dict[str, bytes]] = []
    try:
        deadline = time.monotonic() + timeout
        while not found and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                found.extend(dict(m.headers) for m in batch if m.key == key.encode())
            if found:  # and whatever else arrives with it
                for batch in (await consumer.getmany(timeout_ms=300)).values():
                    found.extend(dict(m.headers) for m in batch if m.key == key.encode())
    finally:
        await consumer.stop()
    assert found, f"no record keyed {key!r} on {topic}"
    return found


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket in LISTEN state on `port`, from /proc/net/tcp{,6}
    (looked up on this machine only: nothing is sent anywhere)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(port_hex, 16) == port:
                found.add(_address(address))
    return found


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    # /proc writes each 32-bit word in host (little-endian) order.
    words = [raw[i:i + 4][::-1] for i in range(0, len(raw), 4)]
    joined = b"".join(words)
    if len(joined) == 4:
        return ".".join(str(b) for b in joined)
    return str(ipaddress.IPv6Address(joined))


async def wait_exit(worker: WorkerProcess, timeout: float = 60.0) -> int:
    assert worker.process is not None
    deadline = time.monotonic() + timeout
    while worker.process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    if worker.process.poll() is None:
        worker.kill()
        raise AssertionError(f"worker still running after {timeout}s:\n{worker.log_tail()}")
    return worker.process.returncode


# ------------------------------------------------------------------------------ no token


async def test_no_token_and_a_public_bind_address_refuses_to_start(kafka_bootstrap: str, tmp_path: Path) -> None:
    for host in ("0.0.0.0", "::"):  # noqa: S104 - the address that must be refused
        worker = WorkerProcess(kafka_bootstrap, unique("refuse"), unique("t") + ".", tmp_path, unique("w"),
                               env={"TRIGGERS_WEB_HOST": host}).start()
        code = await wait_exit(worker)
        assert code != 0
        log = worker.log_path.read_text(errors="replace")
        assert REFUSAL in log and "TRIGGERS_API_TOKEN" in log
        assert not listening_addresses(worker.port)

    # `faust worker --web-bind` overrides TRIGGERS_WEB_HOST: it is checked too.
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "faust", "-A", "app.main", "worker", "--web-bind", "0.0.0.0"],
        cwd=REPO, capture_output=True, timeout=60, env={**worker.env, "TRIGGERS_WEB_HOST": "127.0.0.1"})
    assert done.returncode != 0
    assert REFUSAL in (done.stdout + done.stderr).decode(errors="replace")


@pytest.fixture(scope="module")
async def loopback_worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
                          ) -> AsyncIterator[tuple[WorkerProcess, KafkaClient, str]]:
    """A worker started with neither a token nor TRIGGERS_WEB_HOST: the defaults decide."""
    tag = unique("t")
    worker = WorkerProcess(kafka_bootstrap, f"app-{tag}", f"{tag}.", tmp_path_factory.mktemp("loopback"), "w")
    del worker.env["TRIGGERS_WEB_HOST"]
    worker.env.pop("TRIGGERS_API_TOKEN", None)
    worker.env.pop("TRIGGERS_API_TOKENS", None)
    worker.start()
    kafka = await KafkaClient(kafka_bootstrap).start()
    try:
        await worker.wait_healthy()
        yield worker, kafka, f"{tag}."
    finally:
        worker.stop()
        await kafka.stop()


async def test_no_token_listens_on_loopback_only(loopback_worker: tuple[WorkerProcess, KafkaClient, str]) -> None:
    worker, _, _ = loopback_worker
    assert listening_addresses(worker.port) == {"127.0.0.1"}
    async with httpx.AsyncClient(base_url=worker.url) as client:
        assert (await client.get("/triggers")).status_code == 200  # no token configured: open, locally


async def test_no_token_writes_are_recorded_as_anonymous(kafka_bootstrap: str,
                                                         loopback_worker: tuple[WorkerProcess, KafkaClient, str]
                                                         ) -> None:
    worker, _, prefix = loopback_worker
    trigger_id = unique("anon")
    async with httpx.AsyncClient(base_url=worker.url) as client:
        response = await client.put(f"/triggers/{trigger_id}", json={
            "source": "streaming", "eventType": unique("t"),
            "action": {"type": "enroll_journey", "journeyId": "j"}})
        assert response.status_code == 202, response.text
    [headers] = await headers_of(kafka_bootstrap, f"{prefix}triggers.definitions", trigger_id)
    assert headers == {"actor": b"anonymous"}


# ------------------------------------------------------------------------------ named tokens


@pytest.fixture(scope="module")
async def guarded(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    deployment = await start_deployment(kafka_bootstrap, tmp_path_factory.mktemp("guarded"),
                                        env={"TRIGGERS_API_TOKENS": f"alice:{ALICE},bob:{BOB}"})
    yield deployment
    deployment.stop()
    await deployment.kafka.stop()


async def test_with_tokens_only_health_and_metrics_are_open(guarded: Deployment) -> None:
    async with httpx.AsyncClient(base_url=guarded.workers[0].url) as client:
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200
        for method, path in (("GET", "/triggers"), ("GET", "/triggers/x"), ("POST", "/triggers/x/test"),
                             ("PUT", "/triggers/x"), ("DELETE", "/triggers/x"), ("POST", "/events"),
                             ("POST", "/respond"), ("POST", "/triggers/backtest"), ("GET", "/triggers/x/report")):
            for headers in ({}, bearer("not-a-token"), {"Authorization": f"Basic {ALICE}"}):
                response = await client.request(method, path, headers=headers, json={})
                assert response.status_code == 401, (method, path, headers)
        for token in (ALICE, BOB):
            assert (await client.get("/triggers", headers=bearer(token))).status_code == 200


async def test_the_tokens_name_is_the_actor_of_each_write(guarded: Deployment) -> None:
    bootstrap, topics = guarded.kafka.bootstrap, guarded.topics
    trigger_id, customer = unique("by-bob"), unique("c")
    async with httpx.AsyncClient(base_url=guarded.workers[0].url) as client:
        put = await client.put(f"/triggers/{trigger_id}", headers=bearer(BOB), json={
            "source": "streaming", "eventType": unique("t"), "action": {"type": "enroll_journey", "journeyId": "j"}})
        assert put.status_code == 202, put.text
        event = await client.post("/events", headers=bearer(ALICE), json={"type": "x", "customerId": customer})
        assert event.status_code == 202, event.text
        outcome = await client.post("/respond", headers=bearer(BOB), json={"type": "click", "customerId": customer})
        assert outcome.status_code == 202, outcome.text
        deleted = await client.delete(f"/triggers/{trigger_id}", headers=bearer(ALICE))
        assert deleted.status_code == 202, deleted.text

    assert await headers_of(bootstrap, topics.definitions, trigger_id) == [{"actor": b"bob"}, {"actor": b"alice"}]
    assert await headers_of(bootstrap, topics.streaming, customer) == [{"actor": b"alice"}]
    assert await headers_of(bootstrap, topics.outcomes, customer) == [{"actor": b"bob"}]

    log = guarded.workers[0].log_path.read_text(errors="replace")
    assert "API write" in log and "actor=bob" in log and "actor=alice" in log
    assert ALICE not in log and BOB not in log


async def test_urls_are_masked_in_reads_and_never_logged(guarded: Deployment) -> None:
    password, api_key, fragment = unique("pw"), unique("key"), unique("frag")
    # Loopback, which the worker refuses to call (TRIGGERS_ALLOW_PRIVATE_URLS is off): the
    # firing goes through the sink without any request leaving, or even reaching, anything.
    url = f"https://hookuser:{password}@127.0.0.1:9/in?api_key={api_key}&team=growth#{fragment}"
    trigger_id, event_type = unique("masked"), unique("t")
    definition = {"source": "streaming", "eventType": event_type, "action": {"type": "webhook", "url": url}}
    async with httpx.AsyncClient(base_url=guarded.workers[0].url, headers=bearer(ALICE), timeout=30) as client:
        assert (await client.put(f"/triggers/{trigger_id}", json=definition)).status_code == 202
        deadline = time.monotonic() + 30
        while (shown := await client.get(f"/triggers/{trigger_id}")).status_code != 200:
            assert time.monotonic() < deadline, shown.text
            await asyncio.sleep(0.1)
        assert shown.json()["action"]["url"] == "https://***:***@127.0.0.1:9/in?api_key=***&team=***#***"
        listing = (await client.get("/triggers")).text
        dry_run = await client.post(f"/triggers/{trigger_id}/test",
                                    json={"event": {"type": event_type, "customerId": unique("c")}})
        assert dry_run.status_code == 200 and dry_run.json()["action"]["url"].startswith("https://***:***@")
        # A firing goes to the webhook sink, which refuses the address and dead-letters it, logging why.
        fired = await client.post("/events", json={"type": event_type, "customerId": unique("c")})
        assert fired.status_code == 202
        await guarded.firings(1, lambda f: f["triggerId"] == trigger_id)
        health = (await client.get("/health")).text
        await asyncio.sleep(2)

    log = guarded.workers[0].log_path.read_text(errors="replace")
    for text in (shown.text, listing, dry_run.text, health, log):
        for secret in (password, api_key, fragment, "hookuser"):
            assert secret not in text
    assert f"id={trigger_id}" in log and "action dead-lettered" in log  # the log covers all of it
