"""Experiments on a real broker with two workers: holdout and variant shares over 2,000
customers, one group per customer on every event and both workers, held-out firings performing
nothing, conversions attributed once inside their window and never outside it, and the report
(HTTP and CLI) counting what the topics hold, with the library's interval."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from statsmodels.stats.proportion import confint_proportions_2indep

from app.domain.experiments import assign
from app.domain.models import ACTION_TYPES, HOLDOUT, Experiment
from tests.integration.conftest import Deployment, start_deployment
from tests.support.worker import REPO

pytestmark = pytest.mark.integration

PARTITIONS = 4
CUSTOMERS = 2000


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def attribute(name: str) -> dict[str, Any]:
    return {"type": "update_attribute", "attributes": {name: "1"}}


async def send_many(deployment: Deployment, events: list[dict[str, Any]], topic: str | None = None,
                    at_once: int = 200) -> None:
    for start in range(0, len(events), at_once):
        await asyncio.gather(*(deployment.send_event(e, topic=topic) for e in events[start:start + at_once]))


async def split_between_two(deployment: Deployment) -> list[set[int]]:
    first, second = deployment.workers
    reports: list[Any] = []
    for _ in range(240):
        reports = [await first.health(), await second.health()]
        owned = [set(r["assignedPartitions"]) for r in reports if r and r["status"] == "ok"]
        if len(owned) == 2 and all(owned) and owned[0] | owned[1] == set(range(PARTITIONS)):
            return owned
        await asyncio.sleep(0.5)
    pytest.fail(f"partitions never split between the workers: {reports}")


async def read(deployment: Deployment, topic: str, count: int, where: Any, settle: float = 2.0,
               timeout: float = 90) -> list[dict[str, Any]]:
    return await deployment.firings(count, where, settle=settle, timeout=timeout, topic=topic)


async def counter(deployment: Deployment, name: str) -> list[int]:
    values = []
    for worker in deployment.workers:
        report = await worker.health()
        assert report is not None
        values.append(report["counters"].get(name, 0))
    return values


@pytest.fixture(scope="module")
async def two_workers(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    deployment = await start_deployment(kafka_bootstrap, tmp_path_factory.mktemp("experiments"), workers=2,
                                        partitions=PARTITIONS)
    await split_between_two(deployment)
    yield deployment
    deployment.stop()
    await deployment.kafka.stop()


async def test_holdout_and_variants_split_as_declared_and_held_out_firings_perform_nothing(
        two_workers: Deployment) -> None:
    deployment, topics = two_workers, two_workers.topics
    holdout_type, variants_type = unique("visit"), unique("browse")
    held = {"id": "exp-holdout", "source": "streaming", "eventType": holdout_type,
            "action": attribute("seen_holdout_offer"), "experiment": {"holdoutPercent": 20}}
    weighted = {"id": "exp-variants", "source": "streaming", "eventType": variants_type,
                "action": attribute("seen_default"),
                "experiment": {"variants": [{"name": "A", "weight": 1, "action": attribute("seen_a")},
                                            {"name": "B", "weight": 3, "action": attribute("seen_b")}]}}
    await deployment.put_definition(held)
    await deployment.put_definition(weighted)
    prefix = unique("c")
    customers = [f"{prefix}-{n}" for n in range(CUSTOMERS)]
    repeat = customers[:300]  # a second event each: the same group again
    await send_many(deployment, [{"type": holdout_type, "customerId": c, "id": f"h1-{c}"} for c in customers]
                    + [{"type": holdout_type, "customerId": c, "id": f"h2-{c}"} for c in repeat]
                    + [{"type": variants_type, "customerId": c, "id": f"v-{c}"} for c in customers])

    total = CUSTOMERS + len(repeat)
    live = await read(deployment, topics.firings, 1, lambda r: r["triggerId"] == "exp-holdout", settle=0.1)
    out = await read(deployment, topics.holdout, 1, lambda r: r["triggerId"] == "exp-holdout", settle=0.1)
    for _ in range(60):  # until every firing of the first trigger is out, on one topic or the other
        if len(live) + len(out) >= total:
            break
        await asyncio.sleep(1)
        live = await read(deployment, topics.firings, 0, lambda r: r["triggerId"] == "exp-holdout", settle=0.1)
        out = await read(deployment, topics.holdout, 0, lambda r: r["triggerId"] == "exp-holdout", settle=0.1)
    assert len(live) + len(out) == total

    groups: dict[str, set[str]] = defaultdict(set)
    for firing in live + out:
        groups[firing["customerId"]].add(firing["group"])
    assert all(len(seen) == 1 for seen in groups.values()), "a customer changed group between events"
    assert len(groups) == CUSTOMERS
    experiment = Experiment(holdoutPercent=20)
    assert all(seen == {assign(experiment, "exp-holdout", c)} for c, seen in groups.items())
    held_out = {c for c, seen in groups.items() if seen == {HOLDOUT}}
    assert abs(len(held_out) / CUSTOMERS - 0.20) <= 0.04, len(held_out)
    assert all(f["group"] == HOLDOUT for f in out) and all(f["group"] == "default" for f in live)
    # Both workers decided (each owns partitions) and both held customers out.
    assert all(n > 0 for n in await counter(deployment, "holdout_firings"))

    # Held-out firings perform nothing: no command of theirs on any action topic.
    held_ids = {f["firingId"] for f in out}
    performed = await read(deployment, topics.action("update_attribute"), len(live),
                           lambda r: r["triggerId"] == "exp-holdout", settle=2.0)
    assert {c["firingId"] for c in performed} == {f["firingId"] for f in live}
    for action_type in ACTION_TYPES:
        commands = await read(deployment, topics.action(action_type), 0, lambda r: True, settle=0.5)
        assert not held_ids & {c["firingId"] for c in commands}, action_type

    # Variants by weight (1:3), each performing its own action.
    fired = await read(deployment, topics.firings, CUSTOMERS, lambda r: r["triggerId"] == "exp-variants")
    assert len(fired) == CUSTOMERS
    shares = Counter(f["group"] for f in fired)
    assert abs(shares["A"] / CUSTOMERS - 0.25) <= 0.04 and abs(shares["B"] / CUSTOMERS - 0.75) <= 0.04, shares
    assert all(f["action"]["attributes"] == {f"seen_{f['group'].lower()}": "1"} for f in fired)


async def test_conversions_inside_the_window_count_once_outside_never_and_the_report_counts_the_topics(
        two_workers: Deployment, kafka_bootstrap: str) -> None:
    deployment, topics = two_workers, two_workers.topics
    visit, converted = unique("visit"), unique("purchase")
    trigger_id = unique("exp-conv")
    await deployment.put_definition({
        "id": trigger_id, "source": "streaming", "eventType": visit, "action": attribute("seen_conv_offer"),
        "experiment": {"holdoutPercent": 50,
                       "conversion": {"source": "outcome", "eventType": converted, "filters": {"paid": True},
                                      "within": {"hours": 1}}}})
    start = datetime.now(UTC) - timedelta(hours=3)
    prefix = unique("k")
    customers = [f"{prefix}-{n}" for n in range(80)]
    inside, outside = customers[:40], customers[40:]

    def at(offset: timedelta) -> str:
        return (start + offset).isoformat()

    await send_many(deployment, [{"type": visit, "customerId": c, "id": f"visit-{c}", "timestamp": at(timedelta())}
                                 for c in customers])
    firings = await read(deployment, topics.firings, 1, lambda r: r["triggerId"] == trigger_id, settle=0.1)
    held = await read(deployment, topics.holdout, 1, lambda r: r["triggerId"] == trigger_id, settle=0.1)
    for _ in range(60):
        if len(firings) + len(held) >= len(customers):
            break
        await asyncio.sleep(1)
        firings = await read(deployment, topics.firings, 0, lambda r: r["triggerId"] == trigger_id, settle=0.1)
        held = await read(deployment, topics.holdout, 0, lambda r: r["triggerId"] == trigger_id, settle=0.1)
    assert len(firings) + len(held) == len(customers)

    outcomes = []
    for c in inside:  # the first qualifying event converts; a second one and a redelivery do not
        outcomes += [{"type": converted, "customerId": c, "id": f"buy-{c}", "paid": True,
                      "timestamp": at(timedelta(minutes=20))},
                     {"type": converted, "customerId": c, "id": f"buy-{c}", "paid": True,
                      "timestamp": at(timedelta(minutes=20))},
                     {"type": converted, "customerId": c, "id": f"buy2-{c}", "paid": True,
                      "timestamp": at(timedelta(minutes=40))}]
    for c in outside:  # too late, or not qualifying (filter)
        outcomes += [{"type": converted, "customerId": c, "id": f"late-{c}", "paid": True,
                      "timestamp": at(timedelta(minutes=90))},
                     {"type": converted, "customerId": c, "id": f"unpaid-{c}", "paid": False,
                      "timestamp": at(timedelta(minutes=10))}]
    await send_many(deployment, outcomes, topic=topics.outcomes)
    conversions = await read(deployment, topics.conversions, len(inside), lambda r: r["triggerId"] == trigger_id,
                             settle=4.0)
    assert sorted(c["customerId"] for c in conversions) == sorted(inside)  # once each, never outside
    by_firing = {f["firingId"]: f for f in firings + held}
    for conversion in conversions:
        firing = by_firing[conversion["firingId"]]
        assert (conversion["group"], conversion["customerId"]) == (firing["group"], firing["customerId"])
        assert conversion["eventId"] == f"buy-{conversion['customerId']}"
        assert set(conversion) == {"firingId", "triggerId", "group", "customerId", "eventId", "convertedAt"}

    # The report counts what the topics hold, and its interval is the library's on those numbers.
    per_group: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for firing in firings + held:
        per_group[firing["group"]][0] += 1
    for conversion in conversions:
        per_group[conversion["group"]][1] += 1
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.get(f"{deployment.workers[1].url}/triggers/{trigger_id}/report")
        assert response.status_code == 200, response.text
        report = response.json()
        assert {g["group"]: [g["firings"], g["conversions"]] for g in report["groups"]} == dict(per_group)
        live, holdout = per_group["default"], per_group[HOLDOUT]
        expected = confint_proportions_2indep(live[1], live[0], holdout[1], holdout[0], method="newcomb",
                                              compare="diff")
        [default] = [g for g in report["groups"] if g["group"] == "default"]
        assert default["lift"]["differenceCi95"] == pytest.approx(list(expected))
        assert default["lift"]["difference"] == pytest.approx(live[1] / live[0] - holdout[1] / holdout[0])

        unknown = await client.get(f"{deployment.workers[0].url}/triggers/{unique('nosuch')}/report")
        assert unknown.status_code == 404, unknown.text
        future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        empty = await client.get(f"{deployment.workers[0].url}/triggers/{trigger_id}/report",
                                 params={"since": future})
        assert empty.status_code == 200 and empty.json()["groups"] == [] and "no firings" in empty.json()["message"]
        bad = await client.get(f"{deployment.workers[0].url}/triggers/{trigger_id}/report",
                               params={"since": "yesterday-ish"})
        assert bad.status_code == 400 and "since" in bad.text

    cli = _cli(kafka_bootstrap, topics.prefix)
    answer = cli("triggers", "report", trigger_id, "--json")
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["groups"] == report["groups"]
    text = cli("triggers", "report", trigger_id)
    assert text.returncode == 0 and "holdout" in text.stdout and "newcomb" in text.stdout, text.stdout
    missing = cli("triggers", "report", unique("nosuch"))
    assert missing.returncode == 2 and "no trigger" in missing.stderr and "Traceback" not in missing.stderr
    nothing = cli("triggers", "report", trigger_id, "--since", future)
    assert nothing.returncode == 1 and "no firings" in nothing.stderr and "Traceback" not in nothing.stderr


def _cli(bootstrap: str, prefix: str) -> Any:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TRIGGERS_TOPIC_PREFIX": prefix,
           "TRIGGERS_PARTITIONS": str(PARTITIONS)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "faust", "-A", "app.main", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=180)
    return run


def test_the_example_trigger_is_valid() -> None:
    from app.domain.definitions import compile_definition

    path = Path(REPO) / "triggers_config" / "triggers" / "welcome-offer-experiment.json"
    compiled = compile_definition(json.loads(path.read_text()))
    assert compiled.definition.experiment is not None and compiled.definition.experiment.conversion is not None
