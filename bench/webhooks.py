"""(l)'s two fixed parts: a webhook receiver in a process of its own, and the bare httpx
client the engine's deliveries are measured against.

The receiver listens on one or more free ports (one origin each; it prints them, comma-separated,
once listening), answers every POST to /hook with 200 and counts them; `GET /count` on any port
answers the total so far. Run it as `python -m bench.webhooks --endpoints 100`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

import httpx
from aiohttp import web


def _receiver_app(counter: list[int]) -> web.Application:
    async def receive(request: web.Request) -> web.Response:
        await request.read()
        counter[0] += 1
        return web.Response(status=200)

    async def count(_: web.Request) -> web.Response:
        return web.json_response({"count": counter[0]})

    app = web.Application()
    app.router.add_post("/hook", receive)
    app.router.add_get("/count", count)
    return app


async def _serve(endpoints: int) -> None:
    counter = [0]  # one count over every port
    app = _receiver_app(counter)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ports = []
    for _ in range(endpoints):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))  # bound here, so no other process can take it meanwhile
        ports.append(sock.getsockname()[1])
        await web.SockSite(runner, sock).start()
    print(",".join(map(str, ports)), flush=True)
    await asyncio.Event().wait()


class Receiver:
    """The receiver process: its URLs, its count, stopped when done."""

    def __init__(self, endpoints: int) -> None:
        self.endpoints = endpoints
        self.ports: list[int] = []
        self.urls: list[str] = []
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> Receiver:
        self.process = subprocess.Popen(  # noqa: S603 - our own module
            [sys.executable, "-m", "bench.webhooks", "--endpoints", str(self.endpoints)],
            stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        ready = self.process.stdout.readline().strip()
        if not ready:
            raise SystemExit("the webhook receiver did not start")
        self.ports = [int(port) for port in ready.split(",")]
        self.urls = [f"http://127.0.0.1:{port}/hook" for port in self.ports]
        return self

    async def count(self) -> int:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{self.ports[0]}/count")
            return int(response.json()["count"])

    async def wait_for(self, total: int, timeout_s: float) -> float:
        """Seconds until the receiver has counted `total` requests in all."""
        started = time.perf_counter()
        while (received := await self.count()) < total:
            if time.perf_counter() - started > timeout_s:
                raise SystemExit(f"the receiver got {received} of {total} deliveries in {timeout_s:.0f} s")
            await asyncio.sleep(0.05)
        return time.perf_counter() - started

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait()


# More at once only queues in the client: 800 connections opened at once (100 endpoints x 8)
# saw connections reset under load here.
BARE_IN_FLIGHT = 64


def sample_body(n: int) -> bytes:
    """A body of the size of a webhook firing's (its command's JSON)."""
    return json.dumps({"firingId": f"f{n:032x}", "triggerId": "bench-hook-0", "customerId": f"c-{n}",
                       "eventId": f"e{n}", "priority": 50, "actionType": "webhook",
                       "firedAt": "2026-12-02T00:00:00.000000+00:00",
                       "event": {"type": "hook-0", "customerId": f"c-{n}", "amount": 5000, "channel": "web",
                                 "id": f"e{n}", "timestamp": "2026-12-02T00:00:00+00:00"},
                       "action": {"type": "webhook", "url": "http://127.0.0.1/hook", "signed": False}}).encode()


async def bare_rate(urls: Sequence[str], count: int, per_endpoint: int, in_all: int = BARE_IN_FLIGHT) -> float:
    """Requests per second of one httpx client POSTing `count` bodies round-robin over
    `urls`, at most `per_endpoint` at a time to each (the engine's default slots) and
    `in_all` in all."""
    slots = {url: asyncio.Semaphore(per_endpoint) for url in urls}
    total = asyncio.Semaphore(in_all)
    limits = httpx.Limits(max_connections=in_all, max_keepalive_connections=in_all)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
        async def post(n: int) -> None:
            url = urls[n % len(urls)]
            async with slots[url], total:
                response = await client.post(url, content=sample_body(n),
                                             headers={"content-type": "application/json"})
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(post(n) for n in range(count)))
        return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoints", type=int, default=1, help="how many ports to listen on")
    args = parser.parse_args()
    asyncio.run(_serve(args.endpoints))


if __name__ == "__main__":
    main()
