"""The broadcaster's ASGI app: the HTTP routes of the contract and the web UI.

``create_app(config)`` builds it; the runtime (pool, hub, heartbeat) starts
and stops with the app's lifespan, so any ASGI server can run it (``serve``
in server.py runs it on uvicorn).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from rowcast.broadcaster import ws
from rowcast.broadcaster.auth import Denied, Grant, authorize, token_from
from rowcast.broadcaster.config import BroadcasterConfig
from rowcast.broadcaster.guard import Guard
from rowcast.broadcaster.runtime import Runtime
from rowcast.broadcaster.sse import EventStream
from rowcast.contract.entry import check_id
from rowcast.contract.errors import BadRequest, InvalidEntry, Unavailable

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
_ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
_INT = re.compile(r"[0-9]{1,30}")
MAX_INT = 2**63 - 1
"""The largest bigint: every sequence and change number PostgreSQL can hold."""
UI_HEADERS = {
    "cache-control": "no-cache",
    # The UI is one script and one stylesheet of its own, talking to its own
    # origin (fetch, WebSocket): nothing inline, nothing from elsewhere, never framed.
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    # The page may carry ?token=T: never hand it to another site.
    "referrer-policy": "no-referrer",
}


class _Json(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _rt(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def _grant(request: Request, session: str | None = None, everything: bool = False) -> Grant:
    rt = _rt(request)
    return authorize(
        rt.secret,
        token_from(request.headers, request.query_params),
        session,
        everything=everything,
    )


def _int_param(raw: str | None, name: str, low: int = 0, high: int = MAX_INT) -> int | None:
    if raw is None or raw == "":
        return None
    if not _INT.fullmatch(raw) or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be an integer in {low}..{high}, got {raw[:40]!r}")
    return int(raw)


def _session(request: Request) -> str:
    session: str = request.path_params["session"]
    try:
        return check_id("session", session)
    except InvalidEntry as e:
        raise BadRequest(str(e)) from None


# Routes


async def healthz(request: Request) -> Response:
    rt = _rt(request)
    out: dict[str, Any] = {"instance": rt.instance}
    ok = True
    try:
        async with asyncio.timeout(3):
            await rt.redis.ping()
        out["redis"] = "ok"
    except (RedisError, OSError, TimeoutError) as e:
        ok, out["redis"] = False, f"error: {e}"
    try:
        await rt.store.ping()
        out["postgres"] = "ok"
    except Unavailable as e:
        ok, out["postgres"] = False, f"error: {e}"
    out["pubsub"] = "subscribed" if rt.hub.connected else "reconnecting"
    out["connections"] = len(rt.outboxes)
    out["subscriptions"] = rt.hub.subscriptions
    out["status"] = "ok" if ok else "unavailable"
    return _Json(out, status_code=200 if ok else 503)


async def metrics(request: Request) -> Response:
    _grant(request, everything=True)
    rt = _rt(request)
    # The app's own registry, then the process-wide one (process stats, and the
    # writer's metrics when it runs in the same process, as under `rowcast up`).
    body = generate_latest(rt.metrics.registry) + generate_latest(REGISTRY)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def sessions(request: Request) -> Response:
    grant = _grant(request)
    rt = _rt(request)
    limit = _int_param(request.query_params.get("limit"), "limit", 1, 1000)
    found = await rt.store.sessions(
        None if grant.everything else grant.sessions, limit or rt.config.sessions_limit
    )
    return _Json(
        {
            "sessions": [
                {
                    "session": s.session,
                    "row_count": s.row_count,
                    "last_change": s.last_change,
                    "updated_at": s.updated_at.isoformat(),
                }
                for s in found
            ]
        }
    )


async def rows(request: Request) -> Response:
    session = _session(request)
    _grant(request, session)
    q = request.query_params
    before = _int_param(q.get("before"), "before")
    after = _int_param(q.get("after"), "after")
    if before is not None and after is not None:
        raise BadRequest("give before or after, not both")
    limit = _int_param(q.get("limit"), "limit", 1, 500)
    page = await _rt(request).store.page(session, before, after, 50 if limit is None else limit)
    if page is None:
        raise BadRequest(f"no session {session!r}", status=404)
    return _Json(
        {
            "rows": [c.as_dict() for c in page.rows],
            "has_more_before": page.has_more_before,
            "has_more_after": page.has_more_after,
            "row_count": page.row_count,
            "last_change": page.last_change,
        }
    )


async def events(request: Request) -> Response:
    session = _session(request)
    grant = _grant(request, session)
    last_id = request.headers.get("last-event-id")
    if last_id is not None and last_id.strip():
        after = _int_param(last_id.strip(), "Last-Event-ID")
    else:
        after = _int_param(request.query_params.get("after"), "after")
    deltas = _deltas_param(request.query_params.get("deltas"))
    stream = EventStream(_rt(request), session, after or 0, grant, deltas=deltas)
    return stream  # type: ignore[return-value]  # an ASGI response


def _deltas_param(value: str | None) -> bool:
    """``?deltas=1`` asks for extends as deltas (``0`` or absent: whole changes)."""
    if value is None or value in ("0", "false"):
        return False
    if value in ("1", "true"):
        return True
    raise BadRequest("deltas must be 1 or 0")


def _page(token: str | None) -> bytes:
    html = (STATIC / "index.html").read_bytes()
    if token:
        # Assets sit behind the same token as every route: hand it to them.
        q = b"?token=" + quote(token, safe="").encode()
        for name in _ASSETS:
            html = html.replace(f'"static/{name}"'.encode(), f'"static/{name}'.encode() + q + b'"')
    return html


async def index(request: Request) -> Response:
    _grant(request)
    token = token_from(request.headers, request.query_params) if _rt(request).secret else None
    return Response(
        _page(token),
        media_type="text/html; charset=utf-8",
        headers=UI_HEADERS,
    )


async def asset(request: Request) -> Response:
    _grant(request)
    name = request.path_params["name"]
    media = _ASSETS.get(name)
    if media is None:
        raise BadRequest("not found", status=404)
    return Response((STATIC / name).read_bytes(), media_type=media, headers=UI_HEADERS)


async def _denied(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Denied)
    headers = {"www-authenticate": "Bearer"} if exc.status == 401 else None
    return _Json({"error": exc.reason}, status_code=exc.status, headers=headers)


async def _bad(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BadRequest)
    return _Json({"error": exc.why}, status_code=exc.status)


async def _unavailable(request: Request, exc: Exception) -> Response:
    return _Json({"error": str(exc)}, status_code=503)


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _Json({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def create_app(config: BroadcasterConfig | None = None, **kwargs: Any) -> Starlette:
    """The broadcaster app, from a config or its fields as keyword arguments
    (``redis_url``, ``database_url``, ``prefix``, ``secret``, ``window_ms``,
    ``queue_max``, ...; see BroadcasterConfig)."""
    if config is None:
        config = BroadcasterConfig(**kwargs)
    elif kwargs:
        raise TypeError("give a config or keyword arguments, not both")
    runtime = Runtime(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/metrics", metrics),
            Route("/api/sessions", sessions),
            Route("/api/sessions/{session:path}/rows", rows),
            Route("/api/sessions/{session:path}/events", events),
            WebSocketRoute("/ws", ws.endpoint),
            Route("/", index),
            Route("/static/{name}", asset),
        ],
        exception_handlers={
            Denied: _denied,
            BadRequest: _bad,
            Unavailable: _unavailable,
            HTTPException: _http,
        },
        middleware=[
            Middleware(
                Guard,
                secret=config.secret is not None,
                origins=config.allowed_origins,
                max_connections=config.max_connections,
                max_per_client=config.max_per_client,
            )
        ],
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    return app
