"""HttpDelivery against a real local HTTP server: one attempt each (the schedule is the dispatcher's),
refusals, redirects, timeouts, signing, and what each answer means (app/domain/delivery.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from app.actions.delivery.http import HttpDelivery
from app.domain.delivery import after_attempt, parse_schedule

pytestmark = pytest.mark.asyncio(loop_scope="session")

BODY = json.dumps({"firingId": "firing-1", "amount": 1500}).encode()


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Server:
    """Answers with the queued replies in order (200 once they run out) and records requests."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.requests: list[Seen] = []
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def reply(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(Seen(request.method, request.path_qs, dict(request.headers), await request.read()))
        reply = self.replies.pop(0) if self.replies else Reply()
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        return web.Response(status=reply.status, headers=reply.headers, text="ok")


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", srv.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    srv.port = runner.addresses[0][1]
    try:
        yield srv
    finally:
        await runner.cleanup()


@pytest.fixture
async def make_delivery() -> AsyncIterator[Callable[..., HttpDelivery]]:
    made: list[HttpDelivery] = []

    def make(timeout_s: float = 5.0, allow_private: bool = True) -> HttpDelivery:
        delivery = HttpDelivery(timeout_s=timeout_s, allow_private=allow_private)
        made.append(delivery)
        return delivery

    yield make
    for delivery in made:
        await delivery.close()


SCHEDULE = parse_schedule("0,5s,5m")
NOW_MS = 1_000_000


def outcome(result):
    a = result.attempt
    return after_attempt(SCHEDULE, 1, a.status, a.error, result.refused, result.retry_after_s, NOW_MS)


# --- outcomes --------------------------------------------------------------------------------


async def test_2xx_is_delivered_in_one_attempt(server, make_delivery):
    server.reply(Reply(202))

    result = await make_delivery().attempt(server.url, BODY, "firing-1", None, {}, 1)

    assert result.delivered
    assert (result.attempt.number, result.attempt.status, result.attempt.error) == (1, 202, None)
    assert outcome(result).kind == "delivered"
    assert len(server.requests) == 1
    seen = server.requests[0]
    assert (seen.method, seen.path, seen.body) == ("POST", "/hook", BODY)
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Idempotency-Key"] == "firing-1"


async def test_503_is_one_request_and_a_retry_on_the_schedule(server, make_delivery):
    server.reply(Reply(503))

    result = await make_delivery().attempt(server.url, BODY, "firing-1", None, {}, 2)

    assert not result.delivered
    assert (result.attempt.number, result.attempt.status) == (2, 503)
    assert len(server.requests) == 1
    assert outcome(result).kind == "retry"
    assert outcome(result).due_ms == NOW_MS + 5000


@pytest.mark.parametrize(("status", "reason"), [(404, "HTTP 404: not retryable"), (410, "HTTP 410 Gone"),
                                                (302, "HTTP 302: not retryable")])
async def test_request_faults_and_gone_end_the_schedule(server, make_delivery, status, reason):
    server.reply(Reply(status, {"Location": f"http://127.0.0.1:{server.port}/elsewhere"}))

    result = await make_delivery().attempt(server.url, BODY, "firing-1", None, {}, 1)

    assert outcome(result).kind == "dead"
    assert outcome(result).reason.startswith(reason)
    assert [r.path for r in server.requests] == ["/hook"]  # a redirect is not followed


async def test_429_retry_after_is_honoured(server, make_delivery):
    server.reply(Reply(429, {"Retry-After": "7"}))

    result = await make_delivery().attempt(server.url, BODY, "firing-1", None, {}, 1)

    assert result.retry_after_s == 7.0
    assert outcome(result).due_ms == NOW_MS + 7000  # longer than the schedule's 5 s


# --- refused addresses ---------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_private_addresses_are_refused_before_any_request(server, make_delivery, host):
    url = f"http://{host}:{server.port}/hook"

    result = await make_delivery(allow_private=False).attempt(url, BODY, "firing-1", None, {}, 1)

    assert not result.delivered
    assert result.refused
    assert result.attempt.error.startswith("refused:")
    assert "loopback" in result.attempt.error
    assert "TRIGGERS_ALLOW_PRIVATE_URLS" in result.attempt.error
    assert outcome(result).kind == "dead"  # refusal is final, never retried
    assert server.requests == []


async def test_an_unresolvable_name_is_a_failed_attempt_retried_on_the_schedule(make_delivery):
    result = await make_delivery(allow_private=False).attempt("http://does-not-exist.invalid/", BODY,
                                                              "firing-1", None, {}, 1)

    assert not result.delivered and not result.refused
    assert result.attempt.status is None and result.attempt.error
    assert outcome(result).kind == "retry"


class Rebinding:
    """A DNS server an attacker controls: a public answer for the check, loopback after it."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return [self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]]


async def test_a_dns_answer_that_changes_after_the_check_never_reaches_the_private_address(server):
    # "localhost" is loopback to the system resolver: if the connection re-resolved the name
    # instead of using the checked address, the request would reach the local server.
    dns = Rebinding("2606:4700:4700::1111", "127.0.0.1")  # a public address (no listener on that port), then loopback
    delivery = HttpDelivery(timeout_s=0.5, allow_private=False, resolve=dns)
    try:
        first = await delivery.attempt(f"http://localhost:{server.port}/hook", BODY, "firing-1", None, {}, 1)
        second = await delivery.attempt(f"http://localhost:{server.port}/hook", BODY, "firing-1", None, {}, 2)
    finally:
        await delivery.close()

    assert server.requests == []
    assert first.attempt.status is None and first.attempt.error  # the checked address did not answer
    assert second.refused  # re-checked
    assert second.attempt.error.startswith("refused: localhost resolves to 127.0.0.1 is a loopback")
    assert dns.asked == ["localhost", "localhost"]  # resolved once per attempt, by us


async def test_the_request_goes_to_the_address_that_was_checked(server):
    # The system cannot resolve this name at all: only the checked answer can be used.
    delivery = HttpDelivery(timeout_s=2, allow_private=True, resolve=Rebinding("127.0.0.1"))
    try:
        result = await delivery.attempt(f"http://hooks.rebind.invalid:{server.port}/hook", BODY, "f-1", None, {}, 1)
    finally:
        await delivery.close()

    assert result.delivered
    assert server.requests[0].headers["Host"] == f"hooks.rebind.invalid:{server.port}"


# --- what the request carries ----------------------------------------------------------------------


async def test_request_keeps_the_host_of_the_original_url(server, make_delivery):
    infos = await asyncio.get_running_loop().getaddrinfo("localhost", server.port, type=socket.SOCK_STREAM)
    if infos[0][4][0] != "127.0.0.1":
        pytest.skip("localhost does not resolve to 127.0.0.1 first here (the server listens there only)")
    url = f"http://localhost:{server.port}/hook?x=1"

    result = await make_delivery().attempt(url, BODY, "firing-1", None, {}, 1)

    assert result.delivered
    assert server.requests[0].headers["Host"] == f"localhost:{server.port}"
    assert server.requests[0].path == "/hook?x=1"


async def test_signed_request_carries_verifiable_signature_headers(server, make_delivery):
    result = await make_delivery().attempt(server.url, BODY, "firing-1", "s3cret",
                                           {"X-Custom": "yes", "Authorization": "Bearer abc"}, 1)

    assert result.delivered
    headers = server.requests[0].headers
    assert headers["webhook-id"] == "firing-1"
    assert headers["Idempotency-Key"] == "firing-1"
    assert headers["X-Custom"] == "yes"
    assert headers["Authorization"] == "Bearer abc"
    timestamp = headers["webhook-timestamp"]
    assert timestamp.isdigit()
    expected = hmac.new(b"s3cret", f"firing-1.{timestamp}.".encode() + server.requests[0].body,
                        hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(expected).decode()


async def test_unsigned_request_has_no_signature_header(server, make_delivery):
    await make_delivery().attempt(server.url, BODY, "firing-1", None, {}, 1)
    assert "webhook-signature" not in server.requests[0].headers
    assert "webhook-timestamp" in server.requests[0].headers


# --- timeouts ----------------------------------------------------------------------------------------


async def test_a_timeout_is_a_failed_attempt_retried_on_the_schedule(server, make_delivery):
    server.reply(Reply(200, delay_s=1.5))

    result = await make_delivery(timeout_s=0.3).attempt(server.url, BODY, "firing-1", None, {}, 1)

    assert not result.delivered
    assert result.attempt.status is None and "Timeout" in result.attempt.error
    assert outcome(result).kind == "retry"


# --- bugs --------------------------------------------------------------------------------------------


async def test_odd_retry_after_on_a_2xx_does_not_break_delivery(server, make_delivery):
    server.reply(Reply(200, {"Retry-After": "Wed, 21 Oct 2015 07:28:00"}))
    result = await make_delivery().attempt(server.url, BODY, "firing-1", None, {}, 1)
    assert result.delivered
