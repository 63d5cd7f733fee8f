"""The one registry of topics: every name, partition count and cleanup policy the engine uses."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from app.domain.models import ACTION_TYPES
from app.errors import TriggerEngineError
from app.settings import Settings

log = logging.getLogger(__name__)



class TopicMismatch(TriggerEngineError):
    """An existing topic has a partition count that breaks co-partitioning."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    # None: the engine's partition count; every such topic is co-partitioned by customer id.
    partitions: int | None = None
    compacted: bool = False
    # Kept forever when True (retention.ms=-1): a trail that must not age out.
    forever: bool = False


@dataclass(frozen=True)
class Topics:
    """Topic names after the optional prefix (TRIGGERS_TOPIC_PREFIX) is applied."""

    prefix: str = ""

    def _n(self, name: str) -> str:
        return f"{self.prefix}{name}"

    @property
    def definitions(self) -> str:
        return self._n("triggers.definitions")

    @property
    def errors(self) -> str:
        return self._n("triggers.errors")

    @property
    def firings(self) -> str:
        return self._n("triggers.firings")

    @property
    def shadow(self) -> str:
        """Firings of shadow triggers (mode shadow): evaluated like live ones, performed never."""
        return self._n("triggers.shadow")

    @property
    def holdout(self) -> str:
        """Held-out firings of experiments: counted like firings, performed never."""
        return self._n("triggers.holdout")

    @property
    def conversions(self) -> str:
        """Firings and held-out firings their customer converted after (one record per firing)."""
        return self._n("triggers.conversions")

    @property
    def pending(self) -> str:
        """Delayed firings: scheduled, cancelled, fired, dropped."""
        return self._n("triggers.pending")

    @property
    def audit(self) -> str:
        """Every definition change, appended once (not compacted, kept forever)."""
        return self._n("triggers.audit")

    @property
    def streaming(self) -> str:
        return self._n("events.streaming")

    @property
    def cdc(self) -> str:
        return self._n("events.cdc")

    @property
    def outcomes(self) -> str:
        return self._n("events.outcomes")

    @property
    def schema(self) -> str:
        return self._n("events.schema")

    @property
    def deadletter(self) -> str:
        return self._n("events.deadletter")

    @property
    def rows(self) -> str:
        """Schema-table rows to load (upsert or delete), keyed by customer id."""
        return self._n("schema.rows")

    @property
    def rerouted(self) -> str:
        """Internal: events whose key or partition did not match their customer id."""
        return self._n("triggers.internal.rerouted")

    @property
    def journey_definitions(self) -> str:
        return self._n("journeys.definitions")

    @property
    def policy_definitions(self) -> str:
        return self._n("policies.definitions")

    @property
    def suppressed(self) -> str:
        """Firings a contact policy or trigger limit stopped."""
        return self._n("triggers.suppressed")

    @property
    def decision_flow_definitions(self) -> str:
        return self._n("decisionflows.definitions")

    @property
    def table_definitions(self) -> str:
        """Schema tables (typed columns), keyed by table name."""
        return self._n("schema.tables")

    @property
    def journey_events(self) -> str:
        return self._n("journeys.events")

    @property
    def enrollments(self) -> str:
        return self._n("journeys.enrollments")

    @property
    def recommendations(self) -> str:
        return self._n("recommendations")

    @property
    def definition_topics(self) -> list[str]:
        return [self.definitions, self.journey_definitions, self.decision_flow_definitions,
                self.table_definitions, self.policy_definitions]

    @property
    def ticks(self) -> str:
        """Internal: one record per partition for each scheduled-trigger tick."""
        return self._n("triggers.internal.ticks")

    @property
    def actions_deadletter(self) -> str:
        return self._n("actions.deadletter")

    @property
    def dead_letter_topics(self) -> list[str]:
        return [self.deadletter, self.actions_deadletter]

    @property
    def endpoints_health(self) -> str:
        """Webhook endpoints' health (healthy, failing, disabled), keyed by origin; read by every worker."""
        return self._n("endpoints.health")

    def action(self, action_type: str) -> str:
        if action_type not in ACTION_TYPES:
            raise ValueError(f"unknown action type {action_type!r}")
        return self._n(f"actions.{action_type}")

    def specs(self) -> list[TopicSpec]:
        keyed_by_customer = [
            self.streaming, self.cdc, self.outcomes, self.schema, self.deadletter, self.rows,
            self.rerouted, self.ticks, self.firings, self.pending, self.suppressed, self.actions_deadletter,
            self.shadow, self.holdout, self.conversions,
            *(self.action(t) for t in ACTION_TYPES),
            self.enrollments, self.journey_events, self.recommendations,
        ]
        return [
            *(TopicSpec(name) for name in keyed_by_customer),
            *(TopicSpec(name, partitions=1, compacted=True) for name in self.definition_topics),
            TopicSpec(self.endpoints_health, partitions=1, compacted=True),
            TopicSpec(self.errors, partitions=1),
            TopicSpec(self.audit, partitions=1, forever=True),
        ]


async def ensure_topics(settings: Settings, topics: Topics, attempts: int = 30) -> None:
    """Create missing topics and refuse to run on topics that would break co-partitioning."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_list)
    await _start_with_retry(admin, attempts)
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in topics.specs() if spec.name not in existing]
        if missing:
            await _create(admin, settings, missing)
        await _check_partitions(admin, settings, topics)
    finally:
        await admin.close()


async def _start_with_retry(admin: AIOKafkaAdminClient, attempts: int) -> None:
    # The broker may still be starting (make run starts both at once).
    for attempt in range(1, attempts + 1):
        try:
            await admin.start()
            return
        except KafkaError:
            if attempt == attempts:
                raise
            await asyncio.sleep(1)


async def _create(admin: AIOKafkaAdminClient, settings: Settings, specs: list[TopicSpec]) -> None:
    new = [
        NewTopic(
            name=spec.name,
            num_partitions=spec.partitions or settings.partitions,
            replication_factor=settings.replication_factor,
            topic_configs=({"cleanup.policy": "compact"} if spec.compacted else {})
            | ({"retention.ms": "-1"} if spec.forever else {}),
        )
        for spec in specs
    ]
    try:
        await admin.create_topics(new)
    except TopicAlreadyExistsError:
        pass  # another worker created them first
    log.info("created topics", extra={"topics": [spec.name for spec in specs]})


async def _check_partitions(admin: AIOKafkaAdminClient, settings: Settings, topics: Topics) -> None:
    specs = {spec.name: spec for spec in topics.specs()}
    described = await admin.describe_topics(list(specs))
    for topic in described:
        spec = specs[topic["topic"]]
        expected = spec.partitions or settings.partitions
        actual = len(topic.get("partitions") or [])
        if spec.partitions is None and actual != expected:
            raise TopicMismatch(
                f"topic {spec.name!r} has {actual} partitions but the engine needs {expected} "
                "(TRIGGERS_PARTITIONS): topics keyed by customer id must be co-partitioned"
            )
