"""`faust -A app.main`: the worker's app, built from the environment on first use.

Importing this module reads nothing and builds nothing (PEP 562): `app.main.app` is built
by app/wiring.py when faust (or anything else) first asks for it."""

from __future__ import annotations

from functools import cache
from typing import Any

from app.kafka.app import TriggerApp
from app.settings import get_settings
from app.wiring import build


@cache
def _app() -> TriggerApp:
    return build(get_settings())


def __getattr__(name: str) -> Any:
    if name == "app":
        return _app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
