"""Authorization: signed client tokens naming the sessions they grant.

A token is a JWT signed with HS256 and ROWCAST_SECRET, with two claims that
matter: ``sessions`` (a list of session ids, or ``["*"]`` for all) and
``exp`` (required). Anyone holding the secret can mint one in any language.

The decisions are pure functions: 401 when no valid token is presented, 403
when the token does not name the session asked for.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import jwt

from rowcast.contract.errors import ConfigError, RowcastError, one_line

ALL = "*"
ALGORITHM = "HS256"
MAX_TOKEN = 8192
"""Longest token read; a longer one is refused before it is decoded."""
LATEST_EXP = 253402300799
"""9999-12-31T23:59:59Z: an ``exp`` beyond it (or not finite) is refused."""
MIN_SECRET_BYTES = 32
"""RFC 7518 (3.2): an HS256 key must be at least as long as the hash, 256 bits."""


class Denied(RowcastError):
    """A request without the right to what it asked; ``status`` is 401 or 403."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Grant:
    sessions: frozenset[str]
    expires_at: float | None = None

    @property
    def everything(self) -> bool:
        return ALL in self.sessions

    def allows(self, session: str) -> bool:
        return self.everything or session in self.sessions


OPEN = Grant(frozenset({ALL}))
"""What every caller may do when no secret is set (loopback only)."""


def check_secret(secret: str) -> bytes:
    key = secret.encode()
    if len(key) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"ROWCAST_SECRET must be at least {MIN_SECRET_BYTES} bytes"
            f" (HS256 needs a 256-bit key); it is {len(key)}"
        )
    return key


def mint(secret: str, sessions: Iterable[str], ttl: int, now: float | None = None) -> str:
    """A token granting ``sessions`` for ``ttl`` seconds."""
    names = sorted(set(sessions))
    if not names or any(not s for s in names):
        raise ConfigError("a token must name at least one session (or '*')")
    if ttl < 1:
        raise ConfigError("--ttl must be at least 1 second")
    issued = int(time.time() if now is None else now)
    if issued + ttl > LATEST_EXP:
        raise ConfigError("--ttl reaches beyond the year 9999")
    claims = {"sessions": names, "iat": issued, "exp": issued + ttl}
    return jwt.encode(claims, check_secret(secret), algorithm=ALGORITHM)


def verify(secret: str, token: str, now: float | None = None) -> Grant:
    """The grant a token carries, or Denied(401) saying why it is refused."""
    if len(token) > MAX_TOKEN:
        raise Denied(401, f"token too long ({len(token)} characters, at most {MAX_TOKEN})")
    try:
        # exp is checked below against the caller's clock (tests pass their own).
        claims = jwt.decode(
            token,
            check_secret(secret),
            algorithms=[ALGORITHM],
            options={"require": ["exp"], "verify_exp": False, "verify_iat": False},
        )
    except jwt.InvalidSignatureError:
        raise Denied(401, "token signature is not valid") from None
    except jwt.InvalidTokenError as e:
        raise Denied(401, f"invalid token: {one_line(e)[:200]}") from None
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        # PyJWT lets a few malformed claims through as plain errors.
        raise Denied(401, f"invalid token: {one_line(e)[:200]}") from None
    if not isinstance(claims, dict):
        raise Denied(401, "invalid token: the claims are not a JSON object")
    exp = claims["exp"]
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise Denied(401, "invalid token: exp is not a number")
    if not exp <= LATEST_EXP:
        # 1e999 reads as infinity (and NaN compares false): a token that would
        # never expire. Compared as is: a 400-digit integer has no float.
        raise Denied(401, "invalid token: exp is not a time before the year 10000")
    if exp <= (time.time() if now is None else now):
        raise Denied(401, "token expired")
    sessions = claims.get("sessions")
    if (
        not isinstance(sessions, list)
        or not sessions
        or not all(isinstance(s, str) and s for s in sessions)
    ):
        raise Denied(401, "token has no 'sessions' claim (a list of session ids or '*')")
    return Grant(frozenset(sessions), float(exp))


def token_from(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """``Authorization: Bearer T`` wins; ``?token=T`` is for browsers (EventSource,
    WebSocket, page loads) that cannot set headers."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    token = query.get("token")
    return token or None


def authorize(
    secret: str | None,
    token: str | None,
    session: str | None = None,
    *,
    everything: bool = False,
    now: float | None = None,
) -> Grant:
    """The decision for one request: a Grant, or Denied(401/403).

    ``session``: the route names this session; ``everything``: the route shows
    all sessions' data at once (metrics) and needs a ``*`` token.
    """
    if secret is None:
        return OPEN
    if not token:
        raise Denied(401, "a token is required (Authorization: Bearer T, or ?token=T)")
    grant = verify(secret, token, now)
    if session is not None and not grant.allows(session):
        raise Denied(403, f"the token does not grant session {session!r}")
    if everything and not grant.everything:
        raise Denied(403, "this route needs a token for all sessions ('*')")
    return grant
