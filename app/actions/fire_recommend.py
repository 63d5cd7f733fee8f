"""`fire_recommend`: the decision flow run for the customer, its result published and, if asked, POSTed."""

from __future__ import annotations

import json
import logging
from typing import Any, ClassVar

from app.actions.delivery.dispatch import HttpRequest
from app.actions.performer import Performer
from app.domain.decisions import decide, decision_id
from app.domain.models import ActionCommand
from app.errors import ActionFailed

log = logging.getLogger(__name__)


class FireRecommend(Performer):
    action_type: ClassVar[str] = "fire_recommend"
    delivers_over_http: ClassVar[bool] = True

    async def perform(self, command: ActionCommand) -> HttpRequest | None:
        recommendation = self._recommend(command)
        await self.services.publisher.send(self.services.topics.recommendations, command.customer_id,
                                           recommendation)
        url = command.action.get("deliveryUrl")
        if not url:
            return None
        return self.request_for(command, json.dumps(recommendation, separators=(",", ":")).encode())

    def request_for(self, command: ActionCommand, body: bytes) -> HttpRequest:
        """The recommendation was decided and published once; a later attempt POSTs the same body."""
        rate = command.action.get("maxPerSecond")
        return HttpRequest(str(command.action["deliveryUrl"]), body,
                           max_per_second=rate if isinstance(rate, int) and not isinstance(rate, bool) else None)

    def _recommend(self, command: ActionCommand) -> dict[str, Any]:
        flow_id = str(command.action["decisionFlowId"])
        flow = self.services.catalogs.decision_flows.get(flow_id)
        if flow is None:
            raise ActionFailed(f"unknown decision flow {flow_id!r}")
        offers, errors = decide(flow, self.scope(command))
        for error in errors:
            log.debug("offer skipped", extra={"decisionFlowId": flow_id, "error": error})
        return {"decisionId": decision_id(command.firing_id), "decisionFlowId": flow_id,
                "customerId": command.customer_id, "offers": offers, "firingId": command.firing_id,
                "at": self.services.clock().isoformat(), "channel": command.action.get("channel")}
