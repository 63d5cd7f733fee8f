"""The worker's HTTP API (events, outcomes, trigger definitions, dry runs, metrics)."""

from app.api.views import MAX_BODY_BYTES, register_api

__all__ = ["MAX_BODY_BYTES", "register_api"]
