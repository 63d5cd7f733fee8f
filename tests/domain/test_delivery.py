"""Durable delivery rules: the schedule setting, next attempts and Retry-After, what an answer
means, origins, per-origin limits and worker shares, the token bucket, the waiting record."""

from __future__ import annotations

import pytest

from app.domain.delivery import (
    DEFAULT_SCHEDULE,
    MAX_RETRY_AFTER_S,
    ScheduleError,
    Source,
    TokenBucket,
    WaitingDelivery,
    after_attempt,
    delivery_key,
    final_failure,
    next_attempt_ms,
    origin,
    origin_limits,
    parse_schedule,
    worker_share,
)

# -- the schedule setting ----------------------------------------------------------------------------


def test_the_default_schedule_is_the_contracts() -> None:
    assert parse_schedule(DEFAULT_SCHEDULE) == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)


@pytest.mark.parametrize(("text", "delays"), [
    ("0", (0,)),
    ("0,0.2s,0.2s,0.2s", (0, 0.2, 0.2, 0.2)),
    (" 0 , 500ms , 2 , 1d ", (0, 0.5, 2, 86400)),
    ("0,5M,2H", (0, 300, 7200)),
])
def test_schedules_parse(text: str, delays: tuple[float, ...]) -> None:
    assert parse_schedule(text) == pytest.approx(delays)


@pytest.mark.parametrize(("text", "message"), [
    ("5s,10s", "must start with 0"),
    ("0,,5s", "item 2 ('') is not a delay"),
    ("0,5 minutes", "item 2 ('5 minutes') is not a delay"),
    ("0,-1s", "item 2 ('-1s') is not a delay"),
    ("0,25h", "item 2 ('25h') is longer than one day"),
    (",".join(["0"] * 51), "at most 50 attempts"),
])
def test_bad_schedules_are_refused_naming_the_setting(text: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(text)
    assert str(caught.value).startswith("TRIGGERS_WEBHOOK_RETRY_SCHEDULE: ")
    assert message in str(caught.value)


# -- next attempts -------------------------------------------------------------------------------------

SCHEDULE = (0.0, 5.0, 300.0)


@pytest.mark.parametrize(("made", "due"), [(1, 5_000), (2, 300_000), (3, None), (9, None)])
def test_the_next_attempt_follows_the_schedule_until_it_runs_out(made: int, due: int | None) -> None:
    assert next_attempt_ms(SCHEDULE, made, 0, None) == due


def test_retry_after_wins_when_longer_and_is_capped() -> None:
    assert next_attempt_ms(SCHEDULE, 1, 1_000, 60.0) == 61_000
    assert next_attempt_ms(SCHEDULE, 1, 1_000, 1.0) == 6_000  # the schedule's 5 s is longer
    assert next_attempt_ms(SCHEDULE, 1, 0, 10 * 86_400.0) == MAX_RETRY_AFTER_S * 1000


@pytest.mark.parametrize(("status", "final"), [
    (None, None), (200, None), (204, None), (408, None), (429, None), (500, None), (503, None),
    (410, "HTTP 410 Gone: the endpoint is gone; schedule ended"),
    (400, "HTTP 400: not retryable"), (404, "HTTP 404: not retryable"), (302, "HTTP 302: not retryable"),
])
def test_which_answers_end_the_schedule(status: int | None, final: str | None) -> None:
    assert final_failure(status) == final


def test_after_an_attempt() -> None:
    assert after_attempt(SCHEDULE, 1, 201, None, False, None, 0).kind == "delivered"
    retry = after_attempt(SCHEDULE, 1, 503, None, False, None, 0)
    assert (retry.kind, retry.due_ms, retry.reason) == ("retry", 5_000, "attempt 1 failed: HTTP 503")
    timeout = after_attempt(SCHEDULE, 2, None, "ReadTimeout", False, None, 0)
    assert (timeout.kind, timeout.due_ms) == ("retry", 300_000)
    exhausted = after_attempt(SCHEDULE, 3, 503, None, False, None, 0)
    assert (exhausted.kind, exhausted.reason) == ("dead", "gave up after 3 attempts (schedule exhausted): HTTP 503")
    gone = after_attempt(SCHEDULE, 1, 410, None, False, None, 0)
    assert gone.kind == "dead" and "410" in (gone.reason or "")
    refused = after_attempt(SCHEDULE, 1, None, "refused: loopback", True, None, 0)
    assert (refused.kind, refused.reason) == ("dead", "refused: loopback")


# -- origins and rates ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "expected"), [
    ("https://hooks.example/in?token=x", "https://hooks.example:443"),
    ("http://user:secret@Hooks.Example:8080/a/b", "http://hooks.example:8080"),
    ("http://[::1]/x", "http://[::1]:80"),
])
def test_origin_is_scheme_host_and_port_without_credentials(url: str, expected: str) -> None:
    assert origin(url) == expected


def test_the_smallest_limit_per_origin_wins() -> None:
    limits = origin_limits([("https://a.example/x", 50), ("https://a.example:443/y", 20),
                            ("https://a.example/z", None), ("https://b.example/", 7), ("https://c.example/", None)])
    assert limits == {"https://a.example:443": 20, "https://b.example:443": 7}


@pytest.mark.parametrize("workers", [[8], [4, 4], [3, 3, 2], [1, 1, 1, 1, 1, 1, 1, 1], [5, 3, 0]])
def test_worker_shares_add_up_to_at_most_the_rate(workers: list[int]) -> None:
    total = sum(workers)
    shares = [worker_share(20, assigned, total) for assigned in workers if assigned]
    assert sum(shares) == pytest.approx(20)
    assert worker_share(20, 0, total) > 0  # no partitions: a floor, never a division by zero


def test_a_token_bucket_spaces_takes_by_the_rate_with_no_burst() -> None:
    bucket = TokenBucket(10.0)
    assert bucket.take(0)
    assert not bucket.take(0) and not bucket.take(99)
    assert bucket.wait_ms(99) == 2
    assert bucket.take(100)
    taken = [ms for ms in range(100, 10_100, 7) if bucket.take(ms)]
    windows = [sum(1 for t in taken if start <= t < start + 1000) for start in range(100, 9_100, 50)]
    assert max(windows) <= 10


def test_a_token_bucket_follows_a_new_rate() -> None:
    bucket = TokenBucket(1.0)
    assert bucket.take(0) and not bucket.take(500)
    bucket.set_rate(4.0)
    assert bucket.take(750)


# -- the waiting record -------------------------------------------------------------------------------------


COMMAND = {"firingId": "f-1", "customerId": "c-1", "triggerId": "t"}


def test_a_waiting_delivery_round_trips_and_counts_its_attempts() -> None:
    parked = WaitingDelivery("webhook", COMMAND, "{}", "https://a.example/h", 10, Source("actions.webhook", 3, 42),
                             max_per_second=5)
    assert parked.parked and parked.key == delivery_key("c-1", "f-1") == "c-1|f-1"
    later = parked.after_failure({"attempt": 1, "status": 503}, 5_010, "attempt 1 failed: HTTP 503")
    assert not later.parked and later.attempts_made == 1 and later.due_ms == 5_010
    assert WaitingDelivery.from_json(later.to_json()) == later


def test_a_waiting_delivery_keeps_only_its_latest_attempts() -> None:
    waiting = WaitingDelivery("webhook", COMMAND, "{}", "e", 0, Source("t", 0, 0))
    for n in range(1, 31):
        waiting = waiting.after_failure({"attempt": n}, n, "x")
    assert waiting.attempts_made == 30
    assert [a["attempt"] for a in waiting.attempts] == list(range(11, 31))
