"""A real local HTTP server that records webhook requests and answers as each test scripts it."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field

from aiohttp import web

from app.cli.devbroker import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int
    arrived: float = 0.0  # time.monotonic() when the request came in (before any scripted delay)


@dataclass
class Receiver:
    """POST /<path>: answers with the next scripted status for that path (default 200),
    after an optional delay; every request is recorded."""

    port: int = field(default_factory=free_port)
    requests: list[Received] = field(default_factory=list)
    scripts: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    delays: dict[str, float] = field(default_factory=dict)
    _runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def script(self, path: str, *statuses: int, delay: float = 0.0) -> None:
        self.scripts[path].extend(statuses)
        if delay:
            self.delays[path] = delay

    def to(self, path: str, status: int | None = None) -> list[Received]:
        return [r for r in self.requests if r.path == path and (status is None or r.answered == status)]

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{path}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        path = request.match_info["path"]
        body = await request.read()
        script = self.scripts[path]
        status = script.pop(0) if script else 200
        if path in self.delays:
            await asyncio.sleep(self.delays[path])
        self.requests.append(Received(path, dict(request.headers), body, status, arrived))
        return web.Response(status=status, text="ok")

    def delivered(self, path: str) -> set[str]:
        """The distinct `Idempotency-Key`s (firingIds) answered 200 on `path`."""
        return {r.headers.get("Idempotency-Key", "") for r in self.to(path, 200)}

    async def wait_for_deliveries(self, path: str, count: int, timeout: float = 30.0) -> None:
        """Until `count` distinct firings were answered 200 (a repeated delivery counts once)."""
        for _ in range(int(timeout * 20)):
            if len(self.delivered(path)) >= count:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{path}: {len(self.delivered(path))} distinct deliveries, expected {count}")

    async def wait_for(self, path: str, count: int, timeout: float = 30.0, status: int | None = None) -> None:
        for _ in range(int(timeout * 20)):
            if len(self.to(path, status)) >= count:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{path}: {len(self.to(path, status))} requests, expected {count}")
