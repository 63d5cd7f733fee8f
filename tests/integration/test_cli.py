"""The operators' commands, run as a person would (`faust -A app.main ...`) against a real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from app.topics import Topics
from tests.support.kafka import KafkaClient
from tests.support.worker import REPO

pytestmark = pytest.mark.integration


class Cli:
    def __init__(self, bootstrap: str) -> None:
        self.prefix = f"cli{uuid.uuid4().hex[:6]}."
        self.topics = Topics(self.prefix)
        self.env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TRIGGERS_TOPIC_PREFIX": self.prefix,
                    "TRIGGERS_PARTITIONS": "4"}

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "faust", "-A", "app.main", *args], cwd=REPO,
                              env=self.env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def cli(kafka_bootstrap: str) -> Cli:
    return Cli(kafka_bootstrap)


def write(path: Path, content: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


TRIGGER = {"id": "big-spender", "source": "streaming", "eventType": "purchase",
           "conditions": ["event.amount > 100"], "action": {"type": "enroll_journey", "journeyId": "vip"}}


async def definitions_on_topic(kafka_bootstrap: str, cli: Cli) -> list[Any]:
    kafka = KafkaClient(kafka_bootstrap)
    return [(r.key, r.value) for r in await kafka.read(cli.topics.definitions, timeout=3)]


async def test_apply_reports_every_error_at_once_and_publishes_nothing(
        cli: Cli, tmp_path: Path, kafka_bootstrap: str) -> None:
    write(tmp_path / "triggers" / "good.json", TRIGGER)
    write(tmp_path / "triggers" / "bad.json", [
        {**TRIGGER, "id": "bad-priority", "priority": 500},
        {**TRIGGER, "id": "bad-condition", "conditions": ["event.amount >>> 1"]}])
    write(tmp_path / "journeys" / "j.json", {"id": "vip", "maxDurationDays": -1})
    write(tmp_path / "rows" / "customers.jsonl", '{"customerId": "c-1", "attributes": {"tier": "gold"}}\nnot json\n')

    result = cli("triggers", "apply", str(tmp_path))

    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 4, result.stderr
    assert any("bad.json[0]: priority" in e for e in errors)
    assert any("bad.json[1]: conditions[0]" in e and "event.amount >>> 1" in e for e in errors)
    assert any("j.json: maxDurationDays" in e for e in errors)
    assert any("customers.jsonl:2: not valid JSON" in e for e in errors)
    assert "nothing published" in result.stderr
    assert await definitions_on_topic(kafka_bootstrap, cli) == []


async def test_apply_list_test_and_delete(cli: Cli, tmp_path: Path, kafka_bootstrap: str) -> None:
    write(tmp_path / "triggers" / "good.json", TRIGGER)
    assert cli("triggers", "validate", str(tmp_path)).returncode == 0
    assert cli("triggers", "apply", str(tmp_path), "--dry-run").returncode == 0
    assert await definitions_on_topic(kafka_bootstrap, cli) == []

    applied = cli("triggers", "apply", str(tmp_path))
    assert applied.returncode == 0 and "published: 1 triggers" in applied.stdout
    listed = cli("triggers", "list")
    assert listed.returncode == 0 and "big-spender" in listed.stdout and "1 trigger(s)" in listed.stdout

    rich = write(tmp_path / "rich.json", {"type": "purchase", "customerId": "c-1", "amount": 500})
    poor = write(tmp_path / "poor.json", {"type": "purchase", "customerId": "c-1", "amount": 5})
    fires = cli("triggers", "test", "big-spender", "--event", str(rich))
    assert fires.returncode == 0 and json.loads(fires.stdout)["wouldFire"] is True
    silent = cli("triggers", "test", "big-spender", "--event", str(poor))
    assert silent.returncode == 1
    assert json.loads(silent.stdout)["conditions"][0] == {
        "expression": "event.amount > 100", "result": False, "passed": False}

    assert cli("triggers", "delete", "big-spender").returncode == 0
    assert ("big-spender", None) in await definitions_on_topic(kafka_bootstrap, cli)
    assert "0 trigger(s)" in cli("triggers", "list").stdout
    missing = cli("triggers", "delete", "big-spender-typo")
    assert missing.returncode == 2 and "no trigger 'big-spender-typo'" in missing.stderr
    assert cli("triggers", "frobnicate").returncode == 2


async def test_rows_load_publishes_csv_rows(cli: Cli, tmp_path: Path, kafka_bootstrap: str) -> None:
    csv_file = write(tmp_path / "customers.csv", "customerId,tier,score,vip\nc-1,gold,42,true\nc-2,,3.5,false\n")
    result = cli("rows", "load", str(csv_file))
    assert result.returncode == 0, result.stderr
    records = await KafkaClient(kafka_bootstrap).read(cli.topics.rows, until=lambda rs: len(rs) >= 2)
    assert {r.key: r.value for r in records} == {
        "c-1": {"table": "customers", "customerId": "c-1", "attributes": {"tier": "gold", "score": 42, "vip": True}},
        "c-2": {"table": "customers", "customerId": "c-2", "attributes": {"tier": None, "score": 3.5, "vip": False}},
    }
    bad = write(tmp_path / "bad.csv", "tier\ngold\n")
    refused = cli("rows", "load", str(bad))
    assert refused.returncode == 1 and "no 'customerId' column" in refused.stderr
