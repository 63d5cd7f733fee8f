"""Who is calling: the bearer token of a request checked against every configured token, and
the matching token's name as the actor of a write."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from app.domain.secrets import ANONYMOUS_ACTOR, ApiToken


class Unauthorized(Exception):
    """The request carries no usable bearer token; the message names no token."""


def authenticate(authorization: str | None, tokens: Sequence[ApiToken]) -> str:
    """The actor of a request: the name of the token in `Authorization: Bearer <token>`,
    or `anonymous` when no token is configured. Raises Unauthorized otherwise."""
    if not tokens:
        return ANONYMOUS_ACTOR
    if not authorization or not authorization.strip():
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    scheme, _, presented = authorization.strip().partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    actor = matching_name(presented, tokens)
    if actor is None:
        raise Unauthorized("invalid bearer token")
    return actor


def matching_name(presented: str, tokens: Sequence[ApiToken]) -> str | None:
    """The name of the token equal to `presented`, comparing in constant time against every
    token (no early exit), over digests so neither a token's length nor its content leaks."""
    offered = _digest(presented)
    found: str | None = None
    for token in tokens:
        if hmac.compare_digest(offered, _digest(token.secret)):
            found = token.name
    return found


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
