"""Secrets at the edges: masking credentials inside URLs, API tokens from their settings, and
which bind addresses count as this machine only. Pure: no I/O."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
# Actor of a write when no token is configured (the server then listens on loopback only).
ANONYMOUS_ACTOR = "anonymous"
DEFAULT_TOKEN_NAME = "default"  # noqa: S105 - a name, not a token

# A token's name is an actor: it goes into Kafka headers and log lines, so it stays plain.
_TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
# A scheme followed by `://` and everything up to whitespace, a quote or an angle bracket:
# URLs as they appear in exception messages, reasons and JSON log lines.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+._-]*://[^\s'\"<>`]+")
# Wider than RFC 3986 allows: Kafka's `SASL_SSL://` must count as a scheme too.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+._-]*")


# -- masking ------------------------------------------------------------------------------


def mask_url(url: str) -> str:
    """`url` with every place a credential can hide masked: the whole userinfo (user and
    password: a lone user is often a token), every query value (and a query item without
    `=`, which may be a bare token), the fragment. Scheme, host, port, path and query keys
    stay, so the URL is still recognisable. A URL that cannot be parsed is masked whole."""
    scheme, separator, rest = url.partition("://")
    if not (separator and _SCHEME.fullmatch(scheme)):
        scheme, rest = "", url
    try:
        parts = urlsplit("//" + rest if scheme else rest)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = (f"{MASK}:{MASK}" if ":" in userinfo else MASK) + "@" + hostport
    query = "&".join(_mask_query_item(item) for item in parts.query.split("&")) if parts.query else ""
    fragment = MASK if parts.fragment else ""
    if not scheme:
        return urlunsplit(("", netloc, parts.path, query, fragment))
    return (f"{scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
            + (f"#{fragment}" if fragment else ""))


def _mask_query_item(item: str) -> str:
    if not item:
        return item
    key, equals, _ = item.partition("=")
    return f"{key}={MASK}" if equals else MASK


def mask_urls_in_text(text: str) -> str:
    """`text` with every URL in it masked by mask_url (log lines, error messages)."""
    if "://" not in text:  # most log lines: no regex at all
        return text
    return _URL_IN_TEXT.sub(lambda match: mask_url(match.group(0)), text)


def mask_bootstrap(servers: str) -> str:
    """A broker list (`host:port,...`, entries possibly `user:pass@host:port` or with a
    scheme) with any userinfo or query masked."""
    masked = []
    for entry in servers.split(","):
        stripped = entry.strip()
        if "@" not in stripped and "?" not in stripped and "#" not in stripped:
            masked.append(stripped)
        elif "://" in stripped:
            masked.append(mask_url(stripped))
        else:  # host:port with no scheme: read it as a network location
            masked.append(mask_url("//" + stripped).removeprefix("//"))
    return ",".join(masked)


# -- API tokens -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiToken:
    """A named bearer token; the name is the actor recorded for the writes it makes."""

    name: str
    secret: str

    def __repr__(self) -> str:  # never print the secret, even in a traceback's locals
        return f"ApiToken(name={self.name!r}, secret='{MASK}')"


class TokenSettingError(ValueError):
    """TRIGGERS_API_TOKEN / TRIGGERS_API_TOKENS cannot be used; the message names no secret."""


def parse_api_tokens(single: str | None, named: str | None) -> tuple[ApiToken, ...]:
    """The tokens configured by TRIGGERS_API_TOKEN (named `default`) and TRIGGERS_API_TOKENS
    (`name:token,name:token`). Blank settings count as unset. Raises TokenSettingError for
    an entry without `name:`, an empty or unusable name or token, a name used twice, or one
    token under two names (the actor would be ambiguous)."""
    tokens: list[ApiToken] = []
    if single is not None and single.strip():
        tokens.append(ApiToken(DEFAULT_TOKEN_NAME, _checked_secret(single.strip(), "TRIGGERS_API_TOKEN")))
    if named is not None and named.strip():
        for number, entry in enumerate(named.split(","), start=1):
            tokens.append(_named_token(entry.strip(), number))
    _check_unique(tokens)
    return tuple(tokens)


def _named_token(entry: str, number: int) -> ApiToken:
    where = f"TRIGGERS_API_TOKENS entry {number}"
    if not entry:
        raise TokenSettingError(f"{where} is empty: expected name:token,name:token")
    name, colon, secret = entry.partition(":")
    name = name.strip()
    if not colon:
        raise TokenSettingError(f"{where} has no ':': expected name:token")
    if not name:
        raise TokenSettingError(f"{where} has an empty name: expected name:token")
    if not _TOKEN_NAME.fullmatch(name):
        raise TokenSettingError(f"{where}: the name {name!r} must be 1-64 letters, digits or . _ @ - "
                                "(starting with a letter or digit)")
    return ApiToken(name, _checked_secret(secret.strip(), f"{where} ({name!r})"))


def _checked_secret(secret: str, where: str) -> str:
    if not secret:
        raise TokenSettingError(f"{where}: the token is empty")
    if any(ch.isspace() or not ch.isprintable() for ch in secret):
        raise TokenSettingError(f"{where}: the token contains spaces or control characters")
    return secret


def _check_unique(tokens: list[ApiToken]) -> None:
    names: set[str] = set()
    owners: dict[str, str] = {}
    for token in tokens:
        if token.name in names:
            extra = " (TRIGGERS_API_TOKEN is named 'default')" if token.name == DEFAULT_TOKEN_NAME else ""
            raise TokenSettingError(f"the token name {token.name!r} is used twice{extra}")
        names.add(token.name)
        if token.secret in owners:
            raise TokenSettingError(f"the tokens named {owners[token.secret]!r} and {token.name!r} are "
                                    "the same: each actor needs a token of its own")
        owners[token.secret] = token.name


# -- bind addresses ----------------------------------------------------------------------------


def is_loopback_host(host: str) -> bool:
    """Whether binding `host` listens on this machine only: `localhost` or a loopback
    address. Anything else — `0.0.0.0`, `::`, an empty host (all interfaces), a LAN
    address, any other name (it may resolve to a public address) — is not."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name.split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def bind_refusal(host: str, tokens: tuple[ApiToken, ...]) -> str | None:
    """Why the HTTP server must not start on `host`, or None: without a token it serves
    loopback only, since anyone who can reach it could publish definitions (a webhook
    posting customer rows anywhere), delete them, or read rows through dry runs."""
    if tokens or is_loopback_host(host):
        return None
    shown = host if host.strip() else "(empty: every address)"
    return (f"refusing to serve HTTP on {shown}: without an API token the worker listens on "
            "loopback only. Set TRIGGERS_API_TOKEN (or TRIGGERS_API_TOKENS=name:token,...) to "
            "listen on other addresses, or TRIGGERS_WEB_HOST=127.0.0.1")
