"""Invalid definitions reported on `triggers.errors` by one group agent, so each error is
reported once however many workers read the definitions."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from faust.types import Message

from app.domain.deadletters import short_reason
from app.errors import InvalidDefinition
from app.kafka.publisher import Publisher
from app.registry.catalogs import Catalogs
from app.topics import Topics

log = logging.getLogger(__name__)

# An error report on `triggers.errors` names at most this much of a hostile key, and this many errors.
MAX_ID_CHARS = 256
MAX_REPORTED_ERRORS = 50


class DefinitionReports:
    def __init__(self, topics: Topics, catalogs: Catalogs, publisher: Publisher,
                 clock: Callable[[], datetime]) -> None:
        self.topics = topics
        self.catalogs = catalogs
        self.publisher = publisher
        self.clock = clock

    async def on_definition_message(self, message: Message) -> None:
        catalog = self.catalogs.by_topic[message.topic]
        if message.key is None:  # every worker ignores it: say so once
            await self._report(message, catalog.kind, None, ["a definition record needs a key (the definition's id)"])
            return
        if message.value is None:
            return  # a deletion
        key = message.key.decode("utf-8", "replace")
        try:
            catalog.validate(message.value, key)
        except InvalidDefinition as exc:
            # The id is what the worker removed, even if the value names another id.
            await self._report(message, catalog.kind, key, exc.errors)
        except Exception as exc:  # noqa: BLE001 - a validator bug must not stop the reports
            log.error("definition check failed", exc_info=exc, extra={"topic": message.topic,
                                                                       "offset": message.offset})
            await self._report(message, catalog.kind, key, [f"{type(exc).__name__}: {exc}"])

    async def report_failed(self, message: Message, exc: Exception) -> None:
        """A report that could not be made is logged: definitions themselves are not dead-lettered."""
        log.error("definition report failed", exc_info=exc, extra={"topic": message.topic,
                                                                    "offset": message.offset})

    async def _report(self, message: Message, kind: str, key: str | None, errors: list[str]) -> None:
        item_id = key if key is None or len(key) <= MAX_ID_CHARS else f"{key[:MAX_ID_CHARS]}…"
        errors = [short_reason(e) for e in errors[:MAX_REPORTED_ERRORS]]
        error: dict[str, Any] = {"kind": kind, "id": item_id, "error": short_reason("; ".join(errors)),
                                 "errors": errors, "topic": message.topic, "offset": message.offset,
                                 "at": self.clock().isoformat()}
        if kind == "trigger":
            error["triggerId"] = item_id
        log.warning("invalid definition reported", extra={"kind": kind, "id": item_id})
        await self.publisher.send(self.topics.errors, item_id, error)
