"""Webhook delivery rules: payload templates, signatures, retry decisions, refused addresses."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from app.domain.expressions import TRIGGER_SCOPE_NAMES, Budget, Expression, Record, Scope, parse_expression
from app.errors import InvalidExpression

TEMPLATE_NAMES = TRIGGER_SCOPE_NAMES | {"trigger", "firing"}
def _segments(text: str) -> list[tuple[bool, str]]:
    """Split text into (is_placeholder, content) runs with two find() scans per placeholder,
    linear in the text (a regex for this backtracks quadratically on "{{{{{{...")."""
    parts: list[tuple[bool, str]] = []
    position = 0
    while True:
        start = text.find("{{", position)
        end = text.find("}}", start + 2) if start >= 0 else -1
        if start < 0 or end < 0:
            parts.append((False, text[position:]))
            return [p for p in parts if p[1]]
        parts.append((False, text[position:start]))
        parts.append((True, text[start + 2:end].strip()))
        position = end + 2

# --- payload templates ------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """A JSON payload whose strings may hold `{{ expression }}` placeholders. A string that is
    one placeholder and nothing else takes the expression's value with its JSON type."""

    source: Any
    expressions: dict[str, Expression]

    def render(self, scope: Scope) -> Any:
        # Every placeholder of one payload shares one evaluation budget.
        return self._render(self.source, scope, Budget())

    def _render(self, node: Any, scope: Scope, budget: Budget) -> Any:
        if isinstance(node, dict):
            return {key: self._render(value, scope, budget) for key, value in node.items()}
        if isinstance(node, list):
            return [self._render(value, scope, budget) for value in node]
        if not isinstance(node, str):
            return node
        parts = _segments(node.strip())
        if len(parts) == 1 and parts[0][0]:
            return _plain(self.expressions[parts[0][1]].evaluate(scope, budget))
        return "".join(_text(_plain(self.expressions[content].evaluate(scope, budget))) if is_expr else content
                       for is_expr, content in _segments(node))


def compile_template(source: Any) -> Template:
    """Parse every placeholder once; InvalidExpression for the first bad one."""
    expressions: dict[str, Expression] = {}
    for text in _placeholders(source):
        expressions[text] = parse_expression(text, TEMPLATE_NAMES)
    return Template(source, expressions)


def template_errors(source: Any, parsed: list[Expression] | None = None) -> list[str]:
    """Why the template's placeholders are invalid; those that parse are added to `parsed`."""
    errors = []
    for text in _placeholders(source):
        try:
            expression = parse_expression(text, TEMPLATE_NAMES)
        except InvalidExpression as exc:
            errors.append(str(exc))
        else:
            if parsed is not None:
                parsed.append(expression)
    return errors


def _placeholders(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [p for value in node.values() for p in _placeholders(value)]
    if isinstance(node, list):
        return [p for value in node for p in _placeholders(value)]
    if isinstance(node, str):
        return [content for is_expr, content in _segments(node) if is_expr]
    return []


def _text(value: Any) -> str:
    """Interpolated values read as JSON would spell them (null, true), strings as they are."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _plain(value: Any) -> Any:
    """Expression results as JSON: Records back to objects, times as ISO 8601."""
    if isinstance(value, Record):
        return dict(value._data)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


# --- signatures (Standard Webhooks) --------------------------------------------------------


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed by the secret's UTF-8 bytes."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def delivery_headers(firing_id: str, timestamp: int, body: bytes, secret: str | None,
                     custom: dict[str, str]) -> dict[str, str]:
    headers = {**custom,
               "Content-Type": "application/json",
               "Idempotency-Key": firing_id,
               "webhook-id": firing_id,
               "webhook-timestamp": str(timestamp)}
    if secret:
        headers["webhook-signature"] = signature(secret, firing_id, timestamp, body)
    return headers


# --- Retry-After -------------------------------------------------------------------------------


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=now.tzinfo)  # RFC 9110 dates are GMT
    return max(0.0, (moment - now).total_seconds())


# --- outbound address safety ---------------------------------------------------------------

_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")


def refused_address_reason(address: str) -> str | None:
    """Why an outbound connection to `address` is refused (loopback, private, link-local...)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.is_site_local:
            return f"{address} is a site-local address"
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:  # the IPv4 address a tunnel or mapping really reaches
            ip = embedded
    checks = (("loopback", ip.is_loopback), ("private", ip.is_private),
              ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
              ("unspecified", ip.is_unspecified), ("reserved", ip.is_reserved),
              ("shared address space", isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED_ADDRESS_SPACE))
    for name, matched in checks:
        if matched:
            return f"{address} is a {name} address"
    return None
