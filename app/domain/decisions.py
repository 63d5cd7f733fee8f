"""Decision flows: eligible offers ranked by score, ties by id, at most maxOffers."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.domain import limits
from app.domain.expressions import Budget, Expression, Scope, cost_error, parse_expression
from app.domain.models import ID_PATTERN, Contract, refuse
from app.errors import ExpressionFailed, InvalidDefinition, InvalidExpression

_DECISION_NAMESPACE = uuid.UUID("3d1f5b8e-2a47-4c6b-b0e9-7a4c2f1d8e65")


class Offer(BaseModel):
    """An offer; fields other than id/conditions/score are passed through to the result."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: str = Field(min_length=1, max_length=limits.MAX_OFFER_ID_LENGTH)
    conditions: list[str] = Field(default_factory=list, max_length=limits.MAX_CONDITIONS)
    score: str = "0"

    @model_validator(mode="after")
    def _few_fields(self) -> Offer:
        if len(self.model_extra or {}) > limits.MAX_OFFER_FIELDS:
            raise refuse(f"more than {limits.MAX_OFFER_FIELDS} fields besides id, conditions and score")
        return self


class DecisionFlowDefinition(Contract):
    id: str = Field(pattern=ID_PATTERN)
    name: str = Field(default="", max_length=limits.MAX_NAME_LENGTH)
    max_offers: int = Field(default=1, alias="maxOffers", ge=1, le=100, strict=True)
    offers: list[Offer] = Field(min_length=1, max_length=limits.MAX_OFFERS)


@dataclass(frozen=True)
class CompiledOffer:
    offer: Offer
    conditions: tuple[Expression, ...]
    score: Expression


@dataclass(frozen=True)
class CompiledDecisionFlow:
    definition: DecisionFlowDefinition
    offers: tuple[CompiledOffer, ...]

    @property
    def id(self) -> str:
        return self.definition.id


def compile_flow(definition: DecisionFlowDefinition) -> CompiledDecisionFlow:
    """Parse every offer's expressions; InvalidExpression names the offer."""
    offers = []
    for offer in definition.offers:
        try:
            offers.append(CompiledOffer(offer, tuple(parse_expression(c) for c in offer.conditions),
                                        parse_expression(offer.score)))
        except InvalidExpression as exc:
            raise InvalidExpression(exc.expression, f"offer {offer.id!r}: {exc.reason}") from None
    # One decision evaluates every offer with one budget, so the flow's total cost is limited.
    error = cost_error("offers", (e for o in offers for e in (*o.conditions, o.score)))
    if error is not None:
        raise InvalidDefinition(definition.id, [error])
    return CompiledDecisionFlow(definition, tuple(offers))


def decision_id(firing_id: str) -> str:
    return str(uuid.uuid5(_DECISION_NAMESPACE, firing_id))


def decide(flow: CompiledDecisionFlow, scope: Scope) -> tuple[list[dict[str, Any]], list[str]]:
    """The ranked offers and the errors met (an offer whose expression fails is ineligible).
    All offers share one evaluation budget: once it is spent, the rest are ineligible."""
    scored: list[tuple[float, str, dict[str, Any]]] = []
    errors: list[str] = []
    budget = Budget()
    for compiled in flow.offers:
        try:
            if not all(condition.evaluate(scope, budget) for condition in compiled.conditions):
                continue
            score = float(compiled.score.evaluate(scope, budget))
            if not math.isfinite(score):
                raise ValueError(f"score {score} is not a finite number")
        except (ExpressionFailed, TypeError, ValueError, ArithmeticError) as exc:
            errors.append(f"offer {compiled.offer.id!r}: {exc}")
            continue
        extra = compiled.offer.model_extra or {}
        scored.append((score, compiled.offer.id, {**extra, "id": compiled.offer.id, "score": score}))
    scored.sort(key=lambda item: (-item[0], item[1]))
    return [offer for _, _, offer in scored[: flow.definition.max_offers]], errors
