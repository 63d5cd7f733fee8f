"""Versions, the audit trail, history and rollback, on a real broker with two real workers:
changes made through the CLI (two actors) and the HTTP API (a named token), read back as
history, rolled back, and audited exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.domain.versions import AuditEntry, history
from app.registry.catalogs import Catalogs
from tests.integration.conftest import Deployment, start_deployment
from tests.support.kafka import Record
from tests.support.worker import REPO, WorkerProcess

pytestmark = pytest.mark.integration

CAROL = "carol-token-" + uuid.uuid4().hex


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def trigger(trigger_id: str, minimum: int) -> dict[str, Any]:
    return {"id": trigger_id, "source": "streaming", "eventType": "purchase",
            "conditions": [f"event.amount > {minimum}"],
            "action": {"type": "webhook", "url": "https://crm.example/hook?key=s3cret",
                       "secret": "signing-secret", "headers": {"X-Api-Key": "header-secret"}}}


@pytest.fixture(scope="module")
async def two_workers(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    deployment = await start_deployment(kafka_bootstrap, tmp_path_factory.mktemp("versions"), workers=2,
                                        env={"TRIGGERS_API_TOKENS": f"carol:{CAROL}"})
    yield deployment
    deployment.stop()
    await deployment.kafka.stop()


class Cli:
    """`faust -A app.main ...` run as an operator would, against the deployment's topics."""

    def __init__(self, deployment: Deployment, tmp: Path) -> None:
        self.tmp = tmp
        self.env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": deployment.kafka.bootstrap,
                    "TRIGGERS_TOPIC_PREFIX": deployment.topics.prefix, "TRIGGERS_PARTITIONS": "4"}

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "faust", "-A", "app.main", *args], cwd=REPO,
                              env=self.env, capture_output=True, text=True, timeout=120)

    def apply(self, definition: dict[str, Any], actor: str) -> None:
        path = self.tmp / f"{uuid.uuid4().hex}.json"
        path.write_text(json.dumps(definition))
        result = self("triggers", "apply", str(path), "--actor", actor)
        assert result.returncode == 0, result.stderr

    async def history(self, trigger_id: str, count: int, timeout: float = 60) -> dict[str, Any]:
        """`history --json` once the audit trail holds `count` versions of the id."""
        deadline = time.monotonic() + timeout
        while True:
            result = self("triggers", "history", trigger_id, "--json")
            if result.returncode == 0:
                history = json.loads(result.stdout)
                if len(history["versions"]) >= count:
                    return dict(history)
            assert time.monotonic() < deadline, f"{count} versions not audited: {result.stdout} {result.stderr}"
            await asyncio.sleep(0.5)


async def caught_up(deployment: Deployment, kind: str, offset: int) -> None:
    for worker in deployment.workers:
        await worker.wait_for(lambda r: r["catalogs"][kind]["offset"] >= offset, timeout=30,
                              what=f"caught up to version {offset}")


async def test_history_lists_three_versions_with_actors_and_rollback_restores_the_first(
        two_workers: Deployment, tmp_path: Path) -> None:
    deployment, cli = two_workers, Cli(two_workers, tmp_path)
    trigger_id, customer = unique("spender"), unique("c")
    cli.apply(trigger(trigger_id, 100), "alice")
    cli.apply(trigger(trigger_id, 200), "bob")
    async with httpx.AsyncClient(base_url=deployment.workers[0].url, headers=bearer(CAROL)) as client:
        put = await client.put(f"/triggers/{trigger_id}", json=trigger(trigger_id, 300))
        assert put.status_code == 202, put.text

        history = await cli.history(trigger_id, 3)
        versions = history["versions"]
        assert [v["actor"] for v in versions] == ["alice", "bob", "carol"]
        assert versions == sorted(versions, key=lambda v: v["version"])
        assert versions[0]["before"] is None
        assert versions[1]["before"]["conditions"] == ["event.amount > 100"]
        assert versions[2]["after"]["conditions"] == ["event.amount > 300"]
        shown = json.dumps(history)
        assert "s3cret" not in shown and "signing-secret" not in shown and "header-secret" not in shown

        text = cli("triggers", "history", trigger_id)
        assert text.returncode == 0, text.stderr
        assert "by alice" in text.stdout and "by bob" in text.stdout and "by carol" in text.stdout
        assert '-    "event.amount > 100"' in text.stdout and '+    "event.amount > 200"' in text.stdout
        assert "signing-secret" not in text.stdout

        over_http = await client.get(f"/triggers/{trigger_id}/history")
        assert over_http.status_code == 200, over_http.text
        assert over_http.json() == {"kind": "trigger", "id": trigger_id, "versions": versions}

        first, third = versions[0]["version"], versions[2]["version"]
        await caught_up(deployment, "trigger", third)
        current = (await client.get(f"/triggers/{trigger_id}")).json()
        assert (current["version"], current["actor"]) == (third, "carol")
        listed = {t["id"]: t for t in (await client.get("/triggers")).json()["triggers"]}
        assert listed[trigger_id]["version"] == third and listed[trigger_id]["changedAt"]

        rolled = cli("triggers", "rollback", trigger_id, "--to", str(first), "--actor", "dave")
        assert rolled.returncode == 0, rolled.stderr
        rollback_version = int(rolled.stdout.rsplit("published as version ", 1)[1].split()[0])
        await caught_up(deployment, "trigger", rollback_version)
        restored = (await client.get(f"/triggers/{trigger_id}")).json()
        assert restored["conditions"] == ["event.amount > 100"]
        assert (restored["version"], restored["actor"]) == (rollback_version, "dave")

        # 150 fires only under the first version: the firing names the rollback's version.
        await deployment.send_event({"type": "purchase", "customerId": customer, "amount": 150})
        [firing] = await deployment.firings(1, lambda f: f["customerId"] == customer)
        assert firing["definitionVersion"] == rollback_version

        history = await cli.history(trigger_id, 4)
        assert history["versions"][-1]["actor"] == "dave"
        assert history["versions"][-1]["after"] == versions[0]["after"]

        # Over HTTP, with the token's name as the actor.
        back = await client.post(f"/triggers/{trigger_id}/rollback", json={"to": versions[1]["version"]})
        assert back.status_code == 202, back.text
        assert back.json() == {"triggerId": trigger_id, "rolledBackTo": versions[1]["version"], "status": "accepted"}
        history = await cli.history(trigger_id, 5)
        assert history["versions"][-1]["actor"] == "carol"
        assert history["versions"][-1]["after"]["conditions"] == ["event.amount > 200"]
        missing = await client.post(f"/triggers/{trigger_id}/rollback", json={"to": 999_999})
        assert missing.status_code == 404 and "no version 999999" in missing.json()["error"]
        assert (await client.get(f"/triggers/{unique('nobody')}/history")).status_code == 404
        assert (await client.post(f"/triggers/{trigger_id}/rollback", json={"to": "1"})).status_code == 400


async def test_cli_refuses_unknown_ids_versions_and_deletions(two_workers: Deployment, tmp_path: Path) -> None:
    cli = Cli(two_workers, tmp_path)
    trigger_id = unique("gone")
    cli.apply(trigger(trigger_id, 1), "alice")
    deleted = cli("triggers", "delete", trigger_id, "--actor", "erin")
    assert deleted.returncode == 0, deleted.stderr
    history = await cli.history(trigger_id, 2)
    deletion = history["versions"][1]
    assert (deletion["actor"], deletion["after"]) == ("erin", None)

    for args, code, message in [
        (("history", unique("nobody")), 2, "no trigger"),
        (("rollback", trigger_id, "--to", "abc"), 2, "a version is a number"),
        (("rollback", trigger_id), 2, "give the version"),
        (("rollback", trigger_id, "--to", "999999"), 2, "has no version 999999"),
        (("rollback", trigger_id, "--to", str(deletion["version"])), 1, "is its deletion"),
        (("history", trigger_id, "--kind", "widget"), 2, "unknown kind"),
    ]:
        result = cli("triggers", *args)
        assert result.returncode == code, (args, result.stdout, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)

    restored = cli("triggers", "rollback", trigger_id, "--to", str(history["versions"][0]["version"]))
    assert restored.returncode == 0, restored.stderr


async def test_each_change_of_every_kind_is_audited_once_with_two_workers(
        two_workers: Deployment, tmp_path: Path) -> None:
    deployment, topics = two_workers, two_workers.topics
    journey_id, trigger_id, bad_id = unique("journey"), unique("once"), unique("bad")
    await deployment.put(topics.journey_definitions, "journey", journey_id, {"id": journey_id})
    await deployment.put_definition(trigger(trigger_id, 5))
    await deployment.put_definition({"id": bad_id, "source": "streaming"})  # rejected: audited with its errors
    await deployment.put(topics.policy_definitions, "policy", "cap", {"id": "cap", "limits": [
        {"max": 3, "window": {"days": 7}}]})

    # Two workers running: every record of every definitions topic (this module's tests
    # included) audited exactly once.
    kind_of = {topic: catalog.kind for topic, catalog in Catalogs(topics).by_topic.items()}

    async def published() -> set[tuple[str, int]]:
        return {(kind_of[topic], record.offset) for topic in topics.definition_topics
                for record in await deployment.kafka.read(topic, timeout=3) if record.key is not None}

    def audited(records: list[Record]) -> set[tuple[str, int]]:
        return {(r.value["kind"], r.value["version"]) for r in records}

    expected = await published()
    audit = await deployment.kafka.read(topics.audit, until=lambda rs: expected <= audited(rs), settle=5,
                                        timeout=120)
    assert audited(audit) == expected and len(audit) == len(expected)
    [rejected] = [r.value for r in audit if r.value["id"] == bad_id]
    assert rejected["errors"] and rejected["actor"] == "unknown"

    # The worker auditing triggers leaves: the other one takes the topic over and must find
    # what version 5 was on the trail alone. Then it comes back on an empty data directory.
    owner = auditing_worker(deployment.workers)
    deployment.workers.remove(owner)
    owner.stop()
    await deployment.put_definition(trigger(trigger_id, 6))
    await audit_of(deployment, trigger_id, 2)
    await deployment.put_definition(None, trigger_id)
    await audit_of(deployment, trigger_id, 3)
    back = WorkerProcess(owner.env["KAFKA_BOOTSTRAP_SERVERS"], owner.env["TRIGGERS_APP_ID"],
                         topics.prefix, tmp_path, "worker-again", 4, {"TRIGGERS_API_TOKENS": f"carol:{CAROL}"}).start()
    deployment.workers.append(back)
    await back.wait_healthy()
    await deployment.put_definition(trigger(trigger_id, 7))

    # Across the moves every record is audited; a takeover may write one twice, which
    # history lists once (docs/contract.md 3.10).
    expected = await published()
    audit = await deployment.kafka.read(topics.audit, until=lambda rs: expected <= audited(rs), settle=5,
                                        timeout=120)
    assert audited(audit) == expected
    changes = history([entry for r in audit if (entry := AuditEntry.from_json(r.value))], "trigger", trigger_id)
    assert [_minimum(e.before) for e in changes] == [None, 5, 6, None]
    assert [_minimum(e.after) for e in changes] == [5, 6, None, 7]


def _minimum(definition: dict[str, Any] | None) -> int | None:
    return None if definition is None else int(definition["conditions"][0].rsplit(" ", 1)[1])


async def audit_of(deployment: Deployment, item_id: str, count: int) -> list[dict[str, Any]]:
    """The audit records of `item_id`, once there are `count`."""
    def mine(records: list[Record]) -> list[dict[str, Any]]:
        return [r.value for r in records if r.value["id"] == item_id]

    # Generous: a takeover waits for the group to rebalance and the tables to recover.
    records = await deployment.kafka.read(deployment.topics.audit, until=lambda rs: len(mine(rs)) >= count,
                                          timeout=120)
    assert len(mine(records)) >= count, mine(records)
    return mine(records)


def auditing_worker(workers: list[WorkerProcess]) -> WorkerProcess:
    """The worker that read the trail last: the one auditing now (log lines start with the time)."""
    last_read = {}
    for worker in workers:
        reads = [line for line in worker.log_path.read_text(errors="replace").splitlines()
                 if "audit trail read" in line]
        if reads:
            last_read[worker.name] = (reads[-1][:29], worker)
    assert last_read, "no worker has audited anything"
    return max(last_read.values(), key=lambda found: found[0])[1]
