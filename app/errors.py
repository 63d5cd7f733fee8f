"""The engine's exception hierarchy: one root, one subclass per kind of failure."""

from __future__ import annotations


class TriggerEngineError(Exception):
    """Root of every error the engine raises on purpose."""


class InvalidExpression(TriggerEngineError):
    """An expression could not be parsed or uses something outside the sandbox."""

    def __init__(self, expression: str, reason: str) -> None:
        super().__init__(f"invalid expression {expression!r}: {reason}")
        self.expression = expression
        self.reason = reason


class ExpressionFailed(TriggerEngineError):
    """A valid expression raised while being evaluated against one event."""


class InvalidDefinition(TriggerEngineError):
    """A trigger definition was rejected as a whole; `errors` says why."""

    def __init__(self, trigger_id: str | None, errors: list[str]) -> None:
        super().__init__(f"invalid definition {trigger_id!r}: " + "; ".join(errors))
        self.trigger_id = trigger_id
        self.errors = errors


class MalformedEvent(TriggerEngineError):
    """An incoming message cannot be turned into an event; it is dead-lettered."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ActionFailed(TriggerEngineError):
    """An action command that cannot be performed; it goes to `actions.deadletter` with this reason."""
