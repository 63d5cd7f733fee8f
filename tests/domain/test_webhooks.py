"""Webhook delivery rules: signatures, headers, retry decisions, refused addresses, payload templates."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.domain.expressions import Scope
from app.domain.webhooks import (
    compile_template,
    delivery_headers,
    parse_retry_after,
    refused_address_reason,
    signature,
    template_errors,
)
from app.errors import ExpressionFailed, InvalidExpression

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def independent_signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.HMAC(secret.encode("utf-8"), digestmod=hashlib.sha256)
    mac.update(f"{message_id}.{timestamp}.".encode())
    mac.update(body)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


# --- signatures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("secret", "message_id", "timestamp", "body"), [
    ("s3cret", "firing-1", 1714564800, b'{"a":1}'),
    ("", "f", 0, b""),
    ("pässwörd-ünïcode", "0b7e6a0c-59a4-4d4e-8f3c-5c1b8a2d7e91", 1, "{\"name\":\"Zoë\"}".encode()),
    ("k", "id.with.dots", 99, b"\x00\xffbinary"),
])
def test_signature_matches_an_independent_hmac(secret, message_id, timestamp, body):
    assert signature(secret, message_id, timestamp, body) == independent_signature(secret, message_id, timestamp, body)


def test_signature_format():
    value = signature("secret", "f1", 1714564800, b"{}")
    assert value.startswith("v1,")
    assert len(base64.b64decode(value[3:], validate=True)) == 32


@pytest.mark.parametrize("change", ["secret", "id", "timestamp", "body"])
def test_signature_depends_on_every_input(change):
    args = {"secret": "secret", "message_id": "f1", "timestamp": 1714564800, "body": b"{}"}
    changed = dict(args)
    changed[{"id": "message_id"}.get(change, change)] = {
        "secret": "other", "id": "f2", "timestamp": 1714564801, "body": b"{ }"}[change]
    assert signature(**args) != signature(**changed)


# --- delivery headers ------------------------------------------------------------------------------


def test_delivery_headers_with_secret():
    body = b'{"x":1}'
    headers = delivery_headers("firing-1", 1714564800, body, "s3cret", {"X-Env": "prod"})
    assert headers == {
        "X-Env": "prod",
        "Content-Type": "application/json",
        "Idempotency-Key": "firing-1",
        "webhook-id": "firing-1",
        "webhook-timestamp": "1714564800",
        "webhook-signature": independent_signature("s3cret", "firing-1", 1714564800, body),
    }


@pytest.mark.parametrize("secret", [None, ""])
def test_delivery_headers_without_secret_carry_no_signature(secret):
    headers = delivery_headers("firing-1", 1714564800, b"{}", secret, {})
    assert "webhook-signature" not in headers
    assert headers["Idempotency-Key"] == headers["webhook-id"] == "firing-1"
    assert headers["webhook-timestamp"] == "1714564800"
    assert headers["Content-Type"] == "application/json"


def test_custom_headers_are_kept_but_cannot_replace_the_delivery_headers():
    custom = {"Authorization": "Bearer t", "X-Trace": "abc", "Idempotency-Key": "forged",
              "webhook-id": "forged", "Content-Type": "text/plain"}
    headers = delivery_headers("firing-1", 5, b"{}", None, custom)
    assert headers["Authorization"] == "Bearer t"
    assert headers["X-Trace"] == "abc"
    assert headers["Idempotency-Key"] == "firing-1"
    assert headers["webhook-id"] == "firing-1"
    assert headers["Content-Type"] == "application/json"
    assert custom["Idempotency-Key"] == "forged"  # the caller's dict is untouched


# --- Retry-After parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "seconds"), [("120", 120.0), ("0", 0.0), (" 5 ", 5.0), ("007", 7.0)])
def test_parse_retry_after_seconds(value, seconds):
    assert parse_retry_after(value, NOW) == seconds


def test_parse_retry_after_http_date_is_relative_to_now():
    now = datetime(2015, 10, 21, 7, 27, 0, tzinfo=UTC)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now) == 60.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now + timedelta(seconds=30)) == 30.0


def test_parse_retry_after_date_in_the_past_is_zero():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", NOW) == 0.0


@pytest.mark.parametrize("value", [None, "", "   ", "soon", "-5", "1.5", "5s", "Wed, 99 Foo 2015", "NaN"])
def test_parse_retry_after_garbage_is_none(value):
    assert parse_retry_after(value, NOW) is None


@pytest.mark.parametrize("value", ["Wed, 21 Oct 2015 07:28:00 -0000", "Wed, 21 Oct 2015 07:28:00", "\u00b2"])
def test_parse_retry_after_odd_values_do_not_raise(value):
    result = parse_retry_after(value, NOW)
    assert result is None or isinstance(result, float)


# --- refused addresses -------------------------------------------------------------------------------


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.254",
    "192.168.1.1", "169.254.169.254", "::1", "fe80::1", "fe80::1%eth0", "fc00::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",
    "0.0.0.0", "::", "100.64.0.1", "100.127.255.254", "224.0.0.1", "ff02::1", "255.255.255.255",
])
def test_refused_addresses(address):
    reason = refused_address_reason(address)
    assert reason is not None
    assert reason.startswith(address)


@pytest.mark.parametrize(("address", "kind"), [
    # (link-local and unspecified addresses are also "private" to Python's ipaddress, checked first.)
    ("127.0.0.1", "loopback"), ("10.0.0.1", "private"), ("169.254.169.254", "private"),
    ("224.0.0.1", "multicast"), ("100.64.0.1", "shared address space"),
    ("::ffff:127.0.0.1", "loopback"),
])
def test_refusal_says_what_kind_of_address(address, kind):
    assert f"a {kind} address" in refused_address_reason(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8",
                                     "172.32.0.1", "100.128.0.1", "1.1.1.1"])
def test_public_addresses_are_allowed(address):
    assert refused_address_reason(address) is None


# --- payload templates ---------------------------------------------------------------------------------


def template_scope(**event: Any) -> Scope:
    return Scope(
        event={"amount": 1500, "channel": "web", "vip": True, "note": None, "name": "Ada", **event},
        customer={"tier": "gold", "address": {"city": "Berlin"}},
        now=NOW,
        extra={"trigger": {"id": "high-value", "priority": 75},
               "firing": {"firingId": "f-1", "customerId": "c-42"}},
    )


def render(source: Any, scope: Scope | None = None) -> Any:
    return compile_template(source).render(scope or template_scope())


@pytest.mark.parametrize(("text", "value"), [
    ("{{ event.amount }}", 1500),
    ("{{event.amount}}", 1500),
    ("  {{ event.amount }}  ", 1500),
    ("{{ event.amount / 2 }}", 750.0),
    ("{{ event.vip }}", True),
    ("{{ event.note }}", None),
    ("{{ customer.missing }}", None),
    ("{{ customer.tier }}", "gold"),
    ("{{ [event.amount, customer.tier] }}", [1500, "gold"]),
    ("{{ customer.address }}", {"city": "Berlin"}),
    ("{{ now }}", "2024-05-01T12:00:00+00:00"),
    ("{{ trigger.id }}", "high-value"),
    ("{{ trigger.priority }}", 75),
    ("{{ firing.firingId }}", "f-1"),
])
def test_whole_string_placeholder_keeps_the_json_type(text, value):
    rendered = render({"v": text})["v"]
    assert rendered == value
    assert type(rendered) is type(value)


@pytest.mark.parametrize(("text", "value"), [
    ("Amount: {{ event.amount }}!", "Amount: 1500!"),
    ("Hello {{ event.name }}", "Hello Ada"),  # strings are interpolated without quotes
    ("note={{ event.note }}", "note=null"),
    ("vip={{ event.vip }}", "vip=true"),
    ("missing={{ customer.nothing }}", "missing=null"),
    ("at {{ now }}", "at 2024-05-01T12:00:00+00:00"),
    ("{{ trigger.id }}/{{ firing.firingId }}/x", "high-value/f-1/x"),
    ("ratio {{ event.amount / 1000 }}", "ratio 1.5"),
    ("city {{ customer.address }}", 'city {"city": "Berlin"}'),
    ("no placeholders", "no placeholders"),
])
def test_placeholders_inside_text_read_as_json(text, value):
    assert render({"v": text})["v"] == value


@pytest.mark.parametrize(("text", "value"), [
    ("{{ event.name }} {{ customer.tier }}", "Ada gold"),
    ("{{ trigger.id }}/{{ firing.firingId }}", "high-value/f-1"),
])
def test_text_that_starts_and_ends_with_placeholders(text, value):
    assert render({"v": text})["v"] == value


def test_nested_lists_and_objects_are_rendered_and_other_values_kept():
    source = {
        "trigger": "{{ trigger.id }}",
        "items": ["{{ event.amount }}", {"deep": ["x-{{ event.channel }}", 3, None, True]}],
        "count": 5,
        "ratio": 0.5,
        "flag": False,
        "nothing": None,
        "{{ event.channel }}": "keys are not templates",
    }
    assert render(source) == {
        "trigger": "high-value",
        "items": [1500, {"deep": ["x-web", 3, None, True]}],
        "count": 5,
        "ratio": 0.5,
        "flag": False,
        "nothing": None,
        "{{ event.channel }}": "keys are not templates",
    }


def test_a_template_that_is_one_string_or_a_list():
    assert render("{{ event.amount }}") == 1500
    assert render(["{{ event.channel }}", "b"]) == ["web", "b"]
    assert render(7) == 7


def test_rendering_does_not_change_the_source():
    source = {"a": ["{{ event.amount }}"]}
    template = compile_template(source)
    template.render(template_scope())
    assert source == {"a": ["{{ event.amount }}"]}


def test_template_renders_again_with_another_scope():
    template = compile_template({"amount": "{{ event.amount }}"})
    assert template.render(template_scope(amount=1)) == {"amount": 1}
    assert template.render(template_scope(amount=2)) == {"amount": 2}


def test_missing_event_field_fails_at_render_time():
    template = compile_template({"v": "{{ event.absent }}"})
    with pytest.raises(ExpressionFailed):
        template.render(template_scope())


@pytest.mark.parametrize("text", ["{{ secret }}", "{{ os.environ }}", "x {{ event.a + }}", "{{ event.__class__ }}",
                                  "{{ open('x') }}"])
def test_compile_template_rejects_bad_placeholders(text):
    with pytest.raises(InvalidExpression):
        compile_template({"nested": [{"v": text}]})


def test_template_errors_lists_every_bad_placeholder():
    source = {"ok": "{{ event.amount }}", "a": "{{ event.amount + }}", "b": ["{{ secret.key }}"],
              "c": {"d": "text {{ trigger.id }} and {{ unknown }}"}}
    errors = template_errors(source)
    assert len(errors) == 3
    assert any("event.amount +" in e for e in errors)
    assert any("secret" in e for e in errors)
    assert any("unknown" in e for e in errors)


def test_template_errors_is_empty_for_a_good_template():
    assert template_errors({"a": "{{ trigger.id }}", "b": ["{{ firing.firingId }}", 1], "c": None}) == []
    assert template_errors("plain text") == []


def test_trigger_and_firing_are_template_names_only():
    from app.domain.expressions import parse_expression

    with pytest.raises(InvalidExpression):
        parse_expression("trigger.id")
    compile_template("{{ trigger.id }}")
