"""Secrets inside URLs are masked wherever a URL is shown or logged: a table of URLs."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from app.domain.secrets import mask_bootstrap, mask_url, mask_urls_in_text
from app.logs import StructuredFormatter


@pytest.mark.parametrize(("url", "masked"), [
    ("https://u:p@h/x?api_key=1", "https://***:***@h/x?api_key=***"),
    ("https://user:pass@host.example/?api_key=abc", "https://***:***@host.example/?api_key=***"),
    ("https://ghp_tokenasuser@host.example/hook", "https://***@host.example/hook"),
    ("https://host.example/hook", "https://host.example/hook"),
    ("https://host.example:8443/a/b", "https://host.example:8443/a/b"),
    ("https://h/x?a=1&b=&c", "https://h/x?a=***&b=***&***"),
    ("https://h/x?sig=abc#access_token=xyz", "https://h/x?sig=***#***"),
    ("https://h/x?k=v=w&&z=1", "https://h/x?k=***&&z=***"),
    ("https://u:p%40ss@h:9/p;x", "https://***:***@h:9/p;x"),
    ("https://u:p@ss@h/", "https://***:***@h/"),  # an unencoded @ in the password
    ("http://[::1]:8080/x?token=t", "http://[::1]:8080/x?token=***"),
    ("HTTPS://U:P@H/", "HTTPS://***:***@H/"),
    ("SASL_SSL://u:p@broker:9094", "SASL_SSL://***:***@broker:9094"),
    ("http://h:notaport/x", "***"),  # cannot be parsed: masked whole
    ("http://[::1/x", "***"),
    ("", ""),
])
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize("url", [
    "https://alice:hunter2@crm.example/hooks?api_key=k3y&team=growth#frag-secret",
    "https://tok3n-as-user@crm.example/",
    "https://crm.example/hooks?bare-token-value",
])
def test_no_secret_survives(url: str) -> None:
    shown = mask_url(url)
    for secret in ("alice", "hunter2", "k3y", "growth", "frag-secret", "tok3n-as-user", "bare-token-value"):
        assert secret not in shown
    assert "crm.example" in shown


def test_urls_inside_text_are_masked_and_the_rest_kept() -> None:
    text = ("gave up: ConnectError for url 'https://u:p@h.example/x?api_key=1' (attempt 3); "
            'also "http://a.example/b?x=2" and <https://t@c.example/>')
    assert mask_urls_in_text(text) == (
        "gave up: ConnectError for url 'https://***:***@h.example/x?api_key=***' (attempt 3); "
        'also "http://a.example/b?x=***" and <https://***@c.example/>')
    assert mask_urls_in_text("no url here: a=1?b=2") == "no url here: a=1?b=2"


def test_bootstrap_servers_lose_their_credentials() -> None:
    assert mask_bootstrap("b1:9092,b2:9092") == "b1:9092,b2:9092"
    assert mask_bootstrap("b1:9092, user:pw@b2:9093,SASL_SSL://u:p@b3:9094") == (
        "b1:9092,***:***@b2:9093,SASL_SSL://***:***@b3:9094")


@pytest.mark.parametrize("json_lines", [False, True])
def test_every_log_line_is_masked(json_lines: bool) -> None:
    formatter = StructuredFormatter(json_lines=json_lines)
    record = logging.makeLogRecord({
        "name": "t", "levelno": logging.WARNING, "levelname": "WARNING",
        "msg": "delivery to %s failed", "args": ("https://u:pw-in-message@h.example/?k=v1",),
        "reason": "HTTP 500 from https://h.example/hook?api_key=field-secret",
    })
    try:
        raise RuntimeError("boom at https://x:exception-secret@h.example/")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    line = formatter.format(record)
    for secret in ("pw-in-message", "v1", "field-secret", "exception-secret"):
        assert secret not in line
    assert "h.example" in line
    if json_lines:
        assert json.loads(line)["reason"] == "HTTP 500 from https://h.example/hook?api_key=***"


def test_a_delivery_endpoint_named_in_reasons_carries_no_credentials() -> None:
    from app.actions.delivery.dispatch import endpoint

    assert endpoint("https://user:pa55@hooks.example:8443/in?api_key=k-1#f") == "https://hooks.example:8443/in"
