"""The guard: what every request and WebSocket handshake passes before a route
sees it, as one ASGI middleware so HTTP and WebSocket share one rule.

- **Origin.** A browser names the page that opened a request in ``Origin``;
  one that is neither the broadcaster's own origin nor listed in
  ROWCAST_ORIGINS is refused (403): another site's page cannot read sessions
  over a WebSocket or ``fetch`` (cross-site WebSocket hijacking). A request
  without ``Origin`` is not from a browser page and is served.
- **Host.** Without ROWCAST_SECRET the broadcaster is open to whoever reaches
  it, so it answers only a ``Host`` that is a loopback name or address: a page
  on a domain that resolves to 127.0.0.1 (DNS rebinding) gets 403.
- **Connections.** At most ``max_connections`` requests and sockets at once
  per process and ``max_per_client`` per client address; beyond them 503 and
  429 (a WebSocket handshake is refused with the same status).
- **nosniff** on every HTTP response.

The decisions are pure functions (``origin_key``, ``host_allowed``, ...);
``Guard`` applies them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import KW_ONLY, dataclass, field
from urllib.parse import urlsplit

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rowcast.contract.errors import ConfigError

OriginKey = tuple[str, str, int]
"""(scheme, host, port) of an origin, lower-cased, with the default port filled in."""

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_HOST = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[^\[\]:/@\s]+))(?::(?P<port>[0-9]{1,5}))?"
)


def origin_key(text: str) -> OriginKey | None:
    """An ``Origin`` (or a ROWCAST_ORIGINS item) as a key; None when it is not
    a ``scheme://host[:port]`` of http or https (``null`` included)."""
    try:
        u = urlsplit(text.strip())
        port = u.port
    except ValueError:
        return None
    scheme = u.scheme.lower()
    if scheme not in ("http", "https") or not u.hostname or u.path not in ("", "/"):
        return None
    if u.query or u.fragment or u.username is not None:
        return None
    return (scheme, u.hostname.lower(), port or _DEFAULT_PORTS[scheme])


def parse_origins(items: Iterable[str]) -> frozenset[OriginKey]:
    """ROWCAST_ORIGINS, checked: every item must be an origin."""
    keys = set()
    for item in items:
        if not item.strip():
            continue
        key = origin_key(item)
        if key is None:
            raise ConfigError(
                f"ROWCAST_ORIGINS: {item.strip()[:80]!r} is not an origin"
                " (scheme://host[:port], http or https)"
            )
        keys.add(key)
    return frozenset(keys)


def split_host(host: str) -> tuple[str, int | None] | None:
    """A ``Host`` header as (host, port); None when it is not one."""
    m = _HOST.fullmatch(host.strip())
    if m is None:
        return None
    name = (m["v6"] or m["name"]).lower().rstrip(".")
    port = int(m["port"]) if m["port"] else None
    if port is not None and port > 65535:
        return None
    return name, port


def is_loopback_name(host: str) -> bool:
    """``localhost``, a name under ``.localhost`` (RFC 6761: always loopback,
    browsers never ask DNS for it), or a loopback address."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_allowed(host_header: str | None, secret: bool) -> bool:
    """With a secret, tokens protect every route: any Host. Without one, only
    loopback (a request without Host cannot come from a browser)."""
    if secret or host_header is None:
        return True
    parsed = split_host(host_header)
    return parsed is not None and is_loopback_name(parsed[0])


def is_own_origin(key: OriginKey, host_header: str | None) -> bool:
    """Whether an origin is the one this request was addressed to (its
    ``Host``). The scheme is not compared: behind a TLS-terminating proxy the
    request arrives as http while the page is https; a Host without a port
    matches the origin's default port."""
    if host_header is None:
        return False
    parsed = split_host(host_header)
    if parsed is None:
        return False
    name, port = parsed
    scheme, origin_host, origin_port = key
    if origin_host != name:
        return False
    return origin_port == (port if port is not None else _DEFAULT_PORTS[scheme])


def origin_allowed(
    origin: str | None, host_header: str | None, allowed: frozenset[OriginKey]
) -> bool:
    if origin is None:
        return True
    key = origin_key(origin)
    if key is None:
        return False
    return key in allowed or is_own_origin(key, host_header)


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return str(v.decode("latin-1"))
    return None


RAW_SEND = "rowcast.raw_send"
"""Scope key holding the ASGI send as the server gave it, before any middleware
wraps it: the broadcaster writes quiet connections' changes on it (ws.py,
sse.py). The guard sets it for a WebSocket; for HTTP, where Starlette's error
middleware wraps send before the guard sees it, the server does (server.py)."""


@dataclass(eq=False)
class Guard:
    app: ASGIApp
    _: KW_ONLY
    secret: bool
    origins: frozenset[OriginKey] = frozenset()
    max_connections: int = 20_000
    max_per_client: int = 2_000
    open: int = field(default=0, init=False)
    per_client: dict[str, int] = field(default_factory=dict, init=False)

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        host = _header(scope, b"host")
        if not host_allowed(host, self.secret):
            return 403, "this broadcaster answers only loopback Host names without ROWCAST_SECRET"
        origin = _header(scope, b"origin")
        if not origin_allowed(origin, host, self.origins):
            return 403, "Origin not allowed (add it to ROWCAST_ORIGINS)"
        if self.open >= self.max_connections:
            return 503, "too many connections to this broadcaster"
        client = _client(scope)
        if self.per_client.get(client, 0) >= self.max_per_client:
            return 429, "too many connections from this address"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refused = self.refusal(scope)
        if refused is not None:
            await _refuse(kind, send, *refused)
            return
        client = _client(scope)
        self.open += 1
        self.per_client[client] = self.per_client.get(client, 0) + 1
        try:
            if kind == "http":
                send = _nosniff(send)
            else:
                scope[RAW_SEND] = send
            await self.app(scope, receive, send)
        finally:
            self.open -= 1
            left = self.per_client[client] - 1
            if left:
                self.per_client[client] = left
            else:
                del self.per_client[client]


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


def _nosniff(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {
                **message,
                "headers": [*message.get("headers", ()), (b"x-content-type-options", b"nosniff")],
            }
        await send(message)

    return wrapped


async def _refuse(kind: str, send: Send, status: int, why: str) -> None:
    body = orjson.dumps({"error": why})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff"),
    ]
    if status in (429, 503):
        headers.append((b"retry-after", b"5"))
    prefix = "http" if kind == "http" else "websocket.http"
    # uvicorn offers the WebSocket denial response extension, so a refused
    # handshake gets a real status, not just a dropped connection.
    await send({"type": f"{prefix}.response.start", "status": status, "headers": headers})
    await send({"type": f"{prefix}.response.body", "body": body})
