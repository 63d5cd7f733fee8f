"""What every action type's performer is: an `action_type` and `perform(command)`, built alike from the services."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from pydantic import ValidationError

from app.actions.delivery.dispatch import HttpRequest
from app.domain.expressions import Scope
from app.domain.intake import MAX_ID_LENGTH, load_json
from app.domain.models import ActionCommand
from app.errors import ActionFailed
from app.kafka.publisher import Publisher
from app.registry.catalogs import Catalogs
from app.settings import Settings
from app.state.enrollments import EnrollmentStore
from app.state.rows import RowStore
from app.topics import Topics


@dataclass(frozen=True)
class ActionServices:
    """Everything a performer may read or write. Every performer class is built from the same
    object, so the registry (app/actions/__init__.py) builds them all in one way."""

    settings: Settings
    topics: Topics
    catalogs: Catalogs
    publisher: Publisher
    row_store: RowStore
    enrollments: EnrollmentStore
    clock: Callable[[], datetime]


class Performer(ABC):
    """Performs one action type's commands. The Sink around it (app/actions/sink.py) parses
    each command, skips firings already performed and dead-letters failures, so `perform`
    only performs: it raises ActionFailed (or KeyError, TypeError, ValueError for a command
    missing what it needs) when the command cannot be performed."""

    action_type: ClassVar[str]
    # Whether `perform` may hand back an HTTP request; its commands are then consumed by an
    # agent that acknowledges each one when its delivery has ended.
    delivers_over_http: ClassVar[bool] = False

    def __init__(self, services: ActionServices) -> None:
        self.services = services

    @abstractmethod
    async def perform(self, command: ActionCommand) -> HttpRequest | None:
        """Perform the command, or return the HTTP request that completes it."""

    def request_for(self, command: ActionCommand, body: bytes) -> HttpRequest:
        """The request again, for a later attempt of a delivery waiting in the deliveries
        table (which keeps the body, never a secret): raises ActionFailed when it cannot be
        made any more. Only performers that deliver over HTTP have one."""
        raise NotImplementedError(f"{self.action_type} does not deliver over HTTP")

    def scope(self, command: ActionCommand, **extra: dict[str, Any]) -> Scope:
        """What the command's expressions see: its event, the customer's row, now."""
        scope = Scope(event=command.event, customer=self.services.row_store.customer(command.customer_id),
                      now=self.services.clock(), extra=extra)
        # The aggregates as they were when the trigger fired: `agg.<name>` (checked against
        # the trigger's aggregates when the definition was accepted).
        scope.set_aggregates(command.aggregates or {})
        return scope


def parse_command(value: bytes | None) -> ActionCommand:
    try:
        command = ActionCommand.model_validate(load_json(value or b"null"))
    except (ValueError, RecursionError, ValidationError) as exc:
        raise ActionFailed(f"malformed action command: {exc}") from None
    # These ids are stored (performed, enrollments) and become keys: bounded like an event's.
    for name, field_value in (("firingId", command.firing_id), ("triggerId", command.trigger_id),
                              ("customerId", command.customer_id), ("eventId", command.event_id)):
        if not field_value or len(field_value) > MAX_ID_LENGTH:
            raise ActionFailed(f"malformed action command: field {name!r} must be 1 to "
                               f"{MAX_ID_LENGTH} characters")
    return command


def failure_reason(exc: Exception) -> str:
    """A dead letter's reason for an exception `perform` raised on purpose (or for a command
    missing what it needs)."""
    return str(exc) if isinstance(exc, ActionFailed) else f"malformed action: {type(exc).__name__}: {exc}"
