"""Outbound HTTP for webhooks and recommendation delivery: one attempt, address checks, signing."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from app.domain.webhooks import delivery_headers, parse_retry_after, refused_address_reason

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attempt:
    number: int
    status: int | None
    error: str | None
    duration_ms: float

    def to_json(self) -> dict[str, Any]:
        return {"attempt": self.number, "status": self.status, "error": self.error,
                "durationMs": round(self.duration_ms, 1)}


@dataclass(frozen=True)
class AttemptResult:
    """One attempt's answer; app/domain/delivery.py says what it means for the schedule."""

    attempt: Attempt
    retry_after_s: float | None = None
    refused: bool = False  # the address may not be reached: no later attempt would be different

    @property
    def delivered(self) -> bool:
        return self.attempt.status is not None and 200 <= self.attempt.status < 300

    @property
    def reason(self) -> str:
        if self.attempt.status is not None:
            return f"HTTP {self.attempt.status}"
        return str(self.attempt.error)


# Connections kept per origin (an endpoint gets at most TRIGGERS_WEBHOOK_PER_ENDPOINT_CONCURRENCY
# requests at once from the dispatcher; several endpoints may share an origin), and clients kept.
PER_ORIGIN_CONNECTIONS = 32
MAX_CLIENTS = 512


@dataclass
class _Client:
    http: httpx.AsyncClient
    in_flight: int = 0


class RefusedAddress(Exception):
    """The URL resolves to an address outbound requests may not reach."""


class HttpDelivery:
    """POSTs one body to one URL, once per call: the retry schedule is kept durably by the
    caller (app/actions/delivery/dispatch.py), not in this process's memory.

    The host is resolved once per attempt and every address checked; the request then goes to
    the checked address (Host header and TLS server name kept), so a DNS answer that changes
    between check and connect cannot redirect it. Redirects are never followed.
    """

    def __init__(self, timeout_s: float, allow_private: bool,
                 resolve: Callable[[str, int], Awaitable[list[str]]] | None = None) -> None:
        self.resolve = resolve or system_resolve
        self.allow_private = allow_private
        self.timeout_s = timeout_s
        # One client per pinned origin: httpcore's pool looks at every connection it holds on
        # each request, so one pool for every endpoint made many endpoints slow each other down.
        self.clients: OrderedDict[str, _Client] = OrderedDict()
        self._closing: set[asyncio.Future[None]] = set()
        self.tls = httpx.create_ssl_context()  # one for all: each client would load the CA bundle

    async def close(self) -> None:
        for client in self.clients.values():
            await client.http.aclose()
        self.clients.clear()

    def _client(self, origin: str) -> _Client:
        client = self.clients.get(origin)
        if client is None:
            client = self.clients[origin] = _Client(httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 5.0)),
                follow_redirects=False, verify=self.tls,
                limits=httpx.Limits(max_connections=PER_ORIGIN_CONNECTIONS,
                                    max_keepalive_connections=PER_ORIGIN_CONNECTIONS)))
            self._close_idle()
        self.clients.move_to_end(origin)
        return client

    def _close_idle(self) -> None:
        """Beyond MAX_CLIENTS, the least recently used clients with nothing in flight go."""
        for origin in list(self.clients):
            if len(self.clients) <= MAX_CLIENTS:
                return
            if not self.clients[origin].in_flight:
                closing = asyncio.ensure_future(self.clients.pop(origin).http.aclose())
                self._closing.add(closing)  # a task nothing refers to may be collected mid-run
                closing.add_done_callback(self._closing.discard)

    async def attempt(self, url: str, body: bytes, firing_id: str, secret: str | None,
                      headers: dict[str, str], number: int) -> AttemptResult:
        started = time.monotonic()
        status, error, retry_after = None, None, None
        try:
            response = await self._post_once(url, body, firing_id, secret, headers)
            status = response.status_code
            retry_after = parse_retry_after(response.headers.get("retry-after"), datetime.now(UTC))
        except RefusedAddress as exc:
            return AttemptResult(Attempt(number, None, f"refused: {exc}", _ms(started)), refused=True)
        except (httpx.HTTPError, OSError) as exc:  # OSError: the name did not resolve
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return AttemptResult(Attempt(number, status, error, _ms(started)), retry_after)

    async def _post_once(self, url: str, body: bytes, firing_id: str, secret: str | None,
                         headers: dict[str, str]) -> httpx.Response:
        target, host_header, server_name = await self._pinned(url)
        signed = delivery_headers(firing_id, int(time.time()), body, secret, headers)
        signed["Host"] = host_header
        extensions = {"sni_hostname": server_name} if server_name else {}
        parts = urlsplit(target)
        client = self._client(f"{parts.scheme}://{parts.netloc}|{host_header}")
        client.in_flight += 1
        try:
            return await client.http.post(target, content=body, headers=signed, extensions=extensions)
        finally:
            client.in_flight -= 1

    async def _pinned(self, url: str) -> tuple[str, str, str | None]:
        """(URL with the checked IP as host, Host header, TLS server name)."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = await self.resolve(host, port)
        if not addresses:
            raise RefusedAddress(f"{host} does not resolve")
        if not self.allow_private:
            for address in addresses:
                reason = refused_address_reason(address)
                if reason:
                    raise RefusedAddress(f"{host} resolves to {reason} "
                                         "(set TRIGGERS_ALLOW_PRIVATE_URLS=1 to allow)")
        ip = addresses[0]
        ip_text = f"[{ip}]" if isinstance(ipaddress.ip_address(ip.split("%")[0]), ipaddress.IPv6Address) else ip
        netloc = f"{ip_text}:{parts.port}" if parts.port else ip_text
        host_header = parts.netloc.rsplit("@", 1)[-1]
        pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        return pinned, host_header, host if parts.scheme == "https" else None


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000
