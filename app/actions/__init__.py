"""The action types, one performer module each behind one Sink: a new type is a module and a line here."""

from __future__ import annotations

from app.actions.enroll_journey import EnrollJourney
from app.actions.fire_recommend import FireRecommend
from app.actions.performer import Performer
from app.actions.update_attribute import UpdateAttribute
from app.actions.webhook import Webhook

PERFORMERS: tuple[type[Performer], ...] = (Webhook, FireRecommend, EnrollJourney, UpdateAttribute)
