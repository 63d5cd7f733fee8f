"""The one JSON encoding of everything the engine writes to Kafka or sends over HTTP."""

from __future__ import annotations

import json
from typing import Any


def encode(value: Any) -> bytes:
    """Compact, UTF-8, strict JSON: NaN and Infinity are refused (ValueError), as every reader
    of the contract's topics expects standard JSON."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
