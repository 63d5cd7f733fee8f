"""HttpDelivery against a real local HTTP server: retries, refusals, redirects, timeouts, signing."""

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
from app.domain.webhooks import RetryPolicy

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


class Sleeps:
    """A no-op sleep that records the delays HttpDelivery asked for."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def make_delivery(sleeps: Sleeps) -> AsyncIterator[Callable[..., HttpDelivery]]:
    made: list[HttpDelivery] = []

    def make(max_attempts: int = 3, timeout_s: float = 5.0, allow_private: bool = True,
             **policy: float) -> HttpDelivery:
        delivery = HttpDelivery(RetryPolicy(max_attempts=max_attempts, **policy), timeout_s=timeout_s,
                                allow_private=allow_private, sleep=sleeps)
        made.append(delivery)
        return delivery

    yield make
    for delivery in made:
        await delivery.close()


# --- outcomes --------------------------------------------------------------------------------


async def test_2xx_is_delivered_in_one_attempt(server, make_delivery, sleeps):
    server.reply(Reply(202))

    result = await make_delivery().deliver(server.url, BODY, "firing-1", None, {})

    assert result.delivered
    assert result.reason is None
    assert [(a.number, a.status, a.error) for a in result.attempts] == [(1, 202, None)]
    assert sleeps.delays == []
    assert len(server.requests) == 1
    seen = server.requests[0]
    assert (seen.method, seen.path, seen.body) == ("POST", "/hook", BODY)
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Idempotency-Key"] == "firing-1"


async def test_503_twice_then_200_is_delivered_on_the_third_attempt(server, make_delivery, sleeps):
    server.reply(Reply(503), Reply(503), Reply(200))

    result = await make_delivery(max_attempts=5).deliver(server.url, BODY, "firing-1", None, {})

    assert result.delivered
    assert [a.status for a in result.attempts] == [503, 503, 200]
    assert [a.number for a in result.attempts] == [1, 2, 3]
    assert len(sleeps.delays) == 2
    assert all(0 <= d <= 30 for d in sleeps.delays)
    assert len(server.requests) == 3
    # every attempt carries the same idempotency key
    assert {r.headers["Idempotency-Key"] for r in server.requests} == {"firing-1"}


async def test_gives_up_after_max_attempts(server, make_delivery, sleeps):
    server.reply(*[Reply(500)] * 3)

    result = await make_delivery(max_attempts=3).deliver(server.url, BODY, "firing-1", None, {})

    assert not result.delivered
    assert result.reason == "gave up after 3 attempts: HTTP 500"
    assert len(server.requests) == 3
    assert len(sleeps.delays) == 2  # no sleep after the last attempt


async def test_404_is_not_retried(server, make_delivery, sleeps):
    server.reply(Reply(404))

    result = await make_delivery(max_attempts=5).deliver(server.url, BODY, "firing-1", None, {})

    assert not result.delivered
    assert result.reason == "HTTP 404: not retryable"
    assert [a.status for a in result.attempts] == [404]
    assert len(server.requests) == 1
    assert sleeps.delays == []


async def test_429_retry_after_is_honoured(server, make_delivery, sleeps):
    server.reply(Reply(429, {"Retry-After": "7"}), Reply(200))

    result = await make_delivery().deliver(server.url, BODY, "firing-1", None, {})

    assert result.delivered
    assert [a.status for a in result.attempts] == [429, 200]
    assert sleeps.delays == [7.0]


async def test_retry_after_is_bounded(server, make_delivery, sleeps):
    server.reply(Reply(503, {"Retry-After": "86400"}), Reply(200))

    result = await make_delivery(max_retry_after_s=12.0).deliver(server.url, BODY, "firing-1", None, {})

    assert result.delivered
    assert sleeps.delays == [12.0]


async def test_redirect_is_neither_followed_nor_retried(server, make_delivery, sleeps):
    server.reply(Reply(302, {"Location": f"http://127.0.0.1:{server.port}/elsewhere"}))

    result = await make_delivery(max_attempts=5).deliver(server.url, BODY, "firing-1", None, {})

    assert not result.delivered
    assert result.reason == "HTTP 302: not retryable"
    assert [r.path for r in server.requests] == ["/hook"]
    assert sleeps.delays == []


# --- refused addresses ---------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_private_addresses_are_refused_before_any_request(server, make_delivery, sleeps, host):
    url = f"http://{host}:{server.port}/hook"

    result = await make_delivery(max_attempts=5, allow_private=False).deliver(url, BODY, "firing-1", None, {})

    assert not result.delivered
    assert result.reason.startswith("refused:")
    assert "loopback" in result.reason
    assert "TRIGGERS_ALLOW_PRIVATE_URLS" in result.reason
    assert len(result.attempts) == 1  # refusal is final, never retried
    assert server.requests == []
    assert sleeps.delays == []


async def test_unresolvable_name_is_retried_then_given_up(make_delivery, sleeps):
    result = await make_delivery(max_attempts=3, allow_private=False).deliver(
        "http://does-not-exist.invalid/", BODY, "firing-1", None, {})

    assert not result.delivered
    assert result.reason.startswith("gave up after 3 attempts: ")
    assert [a.status for a in result.attempts] == [None, None, None]
    assert all(a.error for a in result.attempts)
    assert len(sleeps.delays) == 2


class Rebinding:
    """A DNS server an attacker controls: a public answer for the check, loopback after it."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return [self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]]


async def test_a_dns_answer_that_changes_after_the_check_never_reaches_the_private_address(server, sleeps):
    # "localhost" is loopback to the system resolver: if the connection re-resolved the name
    # instead of using the checked address, the request would reach the local server.
    dns = Rebinding("2606:4700:4700::1111", "127.0.0.1")  # a public address (no listener on that port), then loopback
    delivery = HttpDelivery(RetryPolicy(max_attempts=3), timeout_s=0.5, allow_private=False,
                            sleep=sleeps, resolve=dns)
    try:
        result = await delivery.deliver(f"http://localhost:{server.port}/hook", BODY, "firing-1", None, {})
    finally:
        await delivery.close()

    assert server.requests == []
    assert [a.status for a in result.attempts] == [None, None]
    assert result.attempts[0].error  # the checked address did not answer
    assert result.reason.startswith("refused: localhost resolves to 127.0.0.1 is a loopback")  # re-checked
    assert dns.asked == ["localhost", "localhost"]  # resolved once per attempt, by us


async def test_the_request_goes_to_the_address_that_was_checked(server, sleeps):
    # The system cannot resolve this name at all: only the checked answer can be used.
    delivery = HttpDelivery(RetryPolicy(max_attempts=1), timeout_s=2, allow_private=True,
                            sleep=sleeps, resolve=Rebinding("127.0.0.1"))
    try:
        result = await delivery.deliver(f"http://hooks.rebind.invalid:{server.port}/hook", BODY, "f-1", None, {})
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

    result = await make_delivery().deliver(url, BODY, "firing-1", None, {})

    assert result.delivered
    assert server.requests[0].headers["Host"] == f"localhost:{server.port}"
    assert server.requests[0].path == "/hook?x=1"


async def test_signed_request_carries_verifiable_signature_headers(server, make_delivery):
    result = await make_delivery().deliver(server.url, BODY, "firing-1", "s3cret",
                                           {"X-Custom": "yes", "Authorization": "Bearer abc"})

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
    await make_delivery().deliver(server.url, BODY, "firing-1", None, {})
    assert "webhook-signature" not in server.requests[0].headers
    assert "webhook-timestamp" in server.requests[0].headers


# --- timeouts ----------------------------------------------------------------------------------------


async def test_timeout_is_retried(server, make_delivery, sleeps):
    server.reply(Reply(200, delay_s=1.5), Reply(200))

    result = await make_delivery(max_attempts=3, timeout_s=0.3).deliver(server.url, BODY, "firing-1", None, {})

    assert result.delivered
    assert [a.status for a in result.attempts] == [None, 200]
    assert "Timeout" in result.attempts[0].error
    assert len(sleeps.delays) == 1


async def test_timeouts_every_time_give_up(server, make_delivery, sleeps):
    server.reply(Reply(200, delay_s=1.5), Reply(200, delay_s=1.5))

    result = await make_delivery(max_attempts=2, timeout_s=0.3).deliver(server.url, BODY, "firing-1", None, {})

    assert not result.delivered
    assert result.reason.startswith("gave up after 2 attempts: ")
    assert "Timeout" in result.reason


# --- bugs --------------------------------------------------------------------------------------------


async def test_odd_retry_after_on_a_2xx_does_not_break_delivery(server, make_delivery):
    server.reply(Reply(200, {"Retry-After": "Wed, 21 Oct 2015 07:28:00"}))
    result = await make_delivery().deliver(server.url, BODY, "firing-1", None, {})
    assert result.delivered
