"""A local webhook receiver for `make run`: prints each delivery and checks its signature."""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import time

from aiohttp import web

DEMO_SECRET = "demo-secret"  # the secret of the example trigger in triggers_config/  # noqa: S105
MAX_AGE_S = 300


def verify(secret: str, headers: dict[str, str], body: bytes) -> str:
    """What a receiver does with the Standard Webhooks headers (see docs/contract.md)."""
    signature = headers.get("webhook-signature")
    if not signature:
        return "unsigned"
    message_id, timestamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "0")
    if abs(time.time() - int(timestamp)) > MAX_AGE_S:
        return "REJECTED: stale timestamp"
    signed = f"{message_id}.{timestamp}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()
    return "signature ok" if hmac.compare_digest(expected, signature) else "REJECTED: bad signature"


async def receive(request: web.Request) -> web.Response:
    body = await request.read()
    check = verify(DEMO_SECRET, dict(request.headers), body)
    summary = json.loads(body) if body else None
    print(f"[receiver] POST {request.path} ({check}) idempotency-key={request.headers.get('Idempotency-Key')}\n"
          f"           {json.dumps(summary)[:300]}", flush=True)
    return web.Response(status=200, text="ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/{tail:.*}", receive)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
