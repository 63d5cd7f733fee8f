"""API tokens: parsing the settings, deciding a request's actor, and where a worker may listen."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.domain.secrets import ApiToken, TokenSettingError, bind_refusal, is_loopback_host, parse_api_tokens
from app.settings import Settings
from app.web.auth import Unauthorized, authenticate, matching_name

ALICE, BOB = ApiToken("alice", "a-secret-1"), ApiToken("bob", "b-secret-2")

# ------------------------------------------------------------------------------ parsing


def test_no_token_settings_mean_no_tokens() -> None:
    assert parse_api_tokens(None, None) == ()
    assert parse_api_tokens("", "  ") == ()


def test_single_token_is_named_default() -> None:
    assert parse_api_tokens(" t0ken ", None) == (ApiToken("default", "t0ken"),)


def test_named_tokens_in_order_with_spaces_trimmed() -> None:
    assert parse_api_tokens(None, "alice:a-secret-1, bob : b-secret-2") == (ALICE, BOB)


def test_both_settings_combine() -> None:
    assert parse_api_tokens("t0ken", "alice:a-secret-1") == (ApiToken("default", "t0ken"), ALICE)


def test_a_token_may_contain_colons() -> None:
    assert parse_api_tokens(None, "svc:abc:def") == (ApiToken("svc", "abc:def"),)


@pytest.mark.parametrize(("named", "single", "message"), [
    ("Xsecret1", None, "entry 1 has no ':'"),
    ("alice:Xsecret1,Xsecret2", None, "entry 2 has no ':'"),
    (":Xsecret1", None, "entry 1 has an empty name"),
    ("alice:", None, "entry 1 ('alice'): the token is empty"),
    ("alice:Xsecret1,,bob:Xsecret2", None, "entry 2 is empty"),
    ("alice:Xsecret1,", None, "entry 2 is empty"),
    ("al ice:Xsecret1", None, "the name 'al ice' must be"),
    ("alice:Xsecret1 Xsecret2", None, "the token contains spaces"),
    ("alice:Xsecret1,alice:Xsecret2", None, "the token name 'alice' is used twice"),
    ("default:Xsecret1", "Xsecret2", "'default' is used twice (TRIGGERS_API_TOKEN is named 'default')"),
    ("alice:Xsecret1,bob:Xsecret1", None, "the tokens named 'alice' and 'bob' are the same"),
    (None, "Xsecret1\x00", "TRIGGERS_API_TOKEN: the token contains spaces or control characters"),
])
def test_bad_token_settings_are_refused_naming_no_secret(named: str | None, single: str | None,
                                                         message: str) -> None:
    with pytest.raises(TokenSettingError) as info:
        parse_api_tokens(single, named)
    assert message in str(info.value)
    assert "Xsecret" not in str(info.value)


def test_settings_parse_tokens_at_start_and_never_echo_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIGGERS_API_TOKENS", "alice:a-secret-1,bob:b-secret-2")
    assert Settings().api_tokens == (ALICE, BOB)
    monkeypatch.setenv("TRIGGERS_API_TOKENS", "alice:very-secret-value,alice:other-secret-value")
    with pytest.raises(ValidationError) as info:
        Settings()
    assert "used twice" in str(info.value)
    assert "very-secret-value" not in str(info.value) and "other-secret-value" not in str(info.value)


def test_a_token_never_shows_in_its_repr() -> None:
    assert "a-secret-1" not in repr(ALICE) and "alice" in repr(ALICE)


def test_web_host_defaults_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRIGGERS_WEB_HOST", raising=False)
    assert Settings().web_host == "127.0.0.1"


# ------------------------------------------------------------------------------ requests


def test_without_tokens_everyone_is_anonymous() -> None:
    assert authenticate(None, ()) == "anonymous"
    assert authenticate("Bearer anything", ()) == "anonymous"


@pytest.mark.parametrize(("header", "actor"), [
    ("Bearer a-secret-1", "alice"), ("bearer b-secret-2", "bob"), ("  BEARER   b-secret-2 ", "bob"),
])
def test_the_matching_tokens_name_is_the_actor(header: str, actor: str) -> None:
    assert authenticate(header, (ALICE, BOB)) == actor


@pytest.mark.parametrize("header", [None, "", "   ", "a-secret-1", "Basic YWxpY2U=", "Bearer", "Bearer ",
                                    "Bearer a-secret-", "Bearer a-secret-12", "Bearer A-SECRET-1",
                                    "Bearer a-secret-1 b-secret-2", "Bearer tökén", "Token a-secret-1"])
def test_anything_else_is_refused(header: str | None) -> None:
    with pytest.raises(Unauthorized) as info:
        authenticate(header, (ALICE, BOB))
    assert "secret" not in str(info.value)


def test_every_token_is_compared() -> None:
    # The last token matches: no early exit makes a difference to the answer either.
    tokens = tuple(ApiToken(f"n{i}", f"s{i}") for i in range(5))
    assert matching_name("s4", tokens) == "n4"
    assert matching_name("s0", tokens) == "n0"
    assert matching_name("s5", tokens) is None


# ------------------------------------------------------------------------------ bind address


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "localhost", "LOCALHOST.", "::1", "[::1]",
                                  "::ffff:127.0.0.1"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)
    assert bind_refusal(host, ()) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", " ", "192.168.1.10", "10.0.0.5", "fe80::1",
                                  "example.com", "myhost", "localhost.example.com", "::ffff:10.0.0.1"])
def test_other_hosts_need_a_token(host: str) -> None:
    assert not is_loopback_host(host)
    refusal = bind_refusal(host, ())
    assert refusal is not None and "TRIGGERS_API_TOKEN" in refusal and "loopback" in refusal
    assert bind_refusal(host, (ALICE,)) is None
