"""`webhook`: the command's payload POSTed to its URL, with the headers and secret its definition still has."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, ClassVar

from app.actions.delivery.dispatch import HttpRequest
from app.actions.performer import Performer
from app.domain.experiments import variant_action
from app.domain.models import ActionCommand, WebhookAction
from app.domain.webhooks import Template, compile_template
from app.errors import ActionFailed, ExpressionFailed, InvalidExpression

DEFINITION_GONE = "the trigger's secret or headers are no longer available (trigger deleted or changed)"


@lru_cache(maxsize=1024)
def _template(source_json: str) -> Template:
    return compile_template(json.loads(source_json))


class Webhook(Performer):
    action_type: ClassVar[str] = "webhook"
    delivers_over_http: ClassVar[bool] = True

    async def perform(self, command: ActionCommand) -> HttpRequest:
        return self.request_for(command, self._body(command))

    def request_for(self, command: ActionCommand, body: bytes) -> HttpRequest:
        secret, headers = self._credentials(command)
        return HttpRequest(str(command.action["url"]), body, secret, headers, _rate(command))

    def _credentials(self, command: ActionCommand) -> tuple[str | None, dict[str, str]]:
        """The secret and header values stay in the definition (commands carry `signed` and
        `headerNames`): a command gets what it names, from the definition as it is now, or
        is dead-lettered when any of it is gone; nothing it does not name."""
        signed = command.action.get("signed") is True
        names = command.action.get("headerNames") or []
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise ActionFailed("malformed action command: 'headerNames' must be a list of header names")
        if not signed and not names:
            return None, {}
        trigger = self.services.catalogs.triggers.get(command.trigger_id)
        configured = trigger.definition.action if trigger else None
        if trigger is not None and command.group and trigger.definition.experiment is not None:
            # A variant's webhook keeps its own secret and headers in the definition.
            configured = variant_action(trigger.definition.experiment, command.group) or configured
        if not isinstance(configured, WebhookAction):
            raise ActionFailed(DEFINITION_GONE)
        if signed and configured.secret is None:
            raise ActionFailed("the trigger's secret is no longer available (removed from its definition)")
        # Header names are case-insensitive (and distinct so in a definition).
        current = {name.lower(): (name, value) for name, value in configured.headers.items()}
        gone = [name for name in names if name.lower() not in current]
        if gone:
            raise ActionFailed(f"the trigger's header(s) {', '.join(map(repr, gone))} are no longer "
                               "available (removed from its definition)")
        headers = dict(current[name.lower()] for name in names)
        return (configured.secret.get_secret_value() if signed and configured.secret else None), headers

    def _body(self, command: ActionCommand) -> bytes:
        action = command.action
        payload: Any = command.to_json()
        if action.get("payload") is not None:
            trigger_info = {"id": command.trigger_id, "priority": command.priority}
            firing = {k: v for k, v in command.to_json().items() if k != "event"}
            try:
                template = _template(json.dumps(action["payload"], sort_keys=True))
                payload = template.render(self.scope(command, trigger=trigger_info, firing=firing))
            except (InvalidExpression, ExpressionFailed) as exc:
                raise ActionFailed(f"payload template failed: {exc}") from None
        try:
            return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise ActionFailed(f"payload is not JSON: {exc}") from None


def _rate(command: ActionCommand) -> int | None:
    value = command.action.get("maxPerSecond")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
