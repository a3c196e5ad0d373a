"""``/ws``: several session feeds on one WebSocket.

Client: ``{"type":"subscribe","session":S,"after":C}`` (with ``"deltas":true``
for extends as deltas) and
``{"type":"unsubscribe","session":S}``. Server: ``{"type":"rows",...}``,
``{"type":"error","error":why}`` for a message it cannot act on (the socket
stays open), and ``{"type":"resync","session":S}`` for each session before it
closes a socket that fell too far behind (close code 1013).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.protocol import OPEN as WS_OPEN

from rowcast.broadcaster import frames
from rowcast.broadcaster.auth import Denied, Grant, authorize, token_from
from rowcast.broadcaster.guard import RAW_SEND
from rowcast.broadcaster.hub import Watch
from rowcast.broadcaster.item import Item
from rowcast.broadcaster.lifecycle import IDLE, goodbye, new_outbox, serve_feed
from rowcast.broadcaster.outbox import EXPIRED, GONE, RESYNC, SHUTDOWN
from rowcast.broadcaster.runtime import Runtime
from rowcast.contract.entry import check_id
from rowcast.contract.errors import BadRequest, InvalidEntry

log = logging.getLogger(__name__)

MAX_MESSAGE = 64 * 1024
"""Largest client message the app reads (a subscribe is ~100 bytes); larger
ones get an error. The server refuses frames over ``WS_MAX_SIZE`` outright
(close 1009)."""

CLOSE_TOO_SLOW = 1013  # "try again later": resume from your cursor
CLOSE_POLICY = 1008  # the token expired
CLOSE_RESTART = 1012  # the broadcaster is stopping


def parse_message(text: str) -> dict[str, Any]:
    """A client message, checked; raises BadRequest with the reason."""
    if len(text) > MAX_MESSAGE:
        raise BadRequest(f"message too large ({len(text)} characters, at most {MAX_MESSAGE})")
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"not JSON: {e}") from None
    if not isinstance(data, dict):
        raise BadRequest("a message is a JSON object with a 'type'")
    kind = data.get("type")
    if kind not in ("subscribe", "unsubscribe"):
        raise BadRequest(f"unknown message type {kind!r} (subscribe, unsubscribe)")
    session = data.get("session")
    if not isinstance(session, str):
        raise BadRequest("'session' must be a string")
    try:
        check_id("session", session)
    except InvalidEntry as e:
        raise BadRequest(str(e), session=session) from None
    if kind == "subscribe":
        after = data.get("after", 0)
        if after is None:
            after = 0
        if not isinstance(after, int) or isinstance(after, bool) or not 0 <= after < 2**63:
            raise BadRequest("'after' must be a change number (an integer, 0 or more)")
        data["after"] = after
        deltas = data.get("deltas", False)
        if not isinstance(deltas, bool):
            raise BadRequest("'deltas' must be true or false")
        data["deltas"] = deltas
    return data


def _utf8(data: bytes) -> str:
    if len(data) > MAX_MESSAGE:
        raise BadRequest(f"message too large ({len(data)} bytes, at most {MAX_MESSAGE})")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise BadRequest("a message is JSON text in UTF-8") from None


class Direct:
    """Writing whole text frames without awaiting, on uvicorn's
    websockets-sansio protocol (the server this broadcaster runs): what its
    ``send`` does for ``websocket.send`` once it need not wait, with the frame
    serialized once for every connection that sends it (frames.ws_rows_wire)."""

    __slots__ = ("proto",)
    _PROTOCOL = (
        "conn", "transport", "writable", "close_sent", "disconnected", "handshake_complete",
    )  # fmt: skip
    _CONNECTION = ("state", "extensions", "expect_continuation_frame")

    def __init__(self, proto: Any) -> None:
        self.proto = proto

    @classmethod
    def of(cls, send: Any) -> Direct | None:
        """On the protocol behind ``send`` when it has what ``ready`` reads."""
        proto: Any = getattr(send, "__self__", None)
        if not all(hasattr(proto, a) for a in cls._PROTOCOL):
            return None
        if not all(hasattr(proto.conn, a) for a in cls._CONNECTION):
            return None
        return cls(proto)

    def ready(self) -> bool:
        p = self.proto
        c = p.conn
        return (
            p.handshake_complete
            and not p.close_sent
            and not p.disconnected
            and p.writable.is_set()
            and not p.transport.is_closing()
            # A frame serialized for all is only right on an open connection
            # without extensions (permessage-deflate is off) or a fragment.
            and c.state is WS_OPEN
            and not c.extensions
            and not c.expect_continuation_frame
        )

    def write(self, wire: bytes) -> None:
        self.proto.transport.write(wire)


class WsConnection:
    def __init__(self, rt: Runtime, ws: WebSocket, grant: Grant) -> None:
        self.rt = rt
        self.ws = ws
        self.grant = grant
        self.watches: dict[str, Watch] = {}
        self.outbox = new_outbox(rt, self, grant)
        self.outbox.on_close = self._detach
        self._closing_sessions: list[str] = []
        self._direct = Direct.of(ws.scope.get(RAW_SEND))

    def _detach(self) -> None:
        self._closing_sessions = list(self.watches)
        for w in self.watches.values():
            self.rt.hub.unwatch(w)
        self.watches.clear()

    async def _send(self, data: bytes) -> None:
        await self.ws.send({"type": "websocket.send", "text": data.decode()})

    # Sink

    async def send(self, batches: list[tuple[str, list[Item]]]) -> None:
        for session, items in batches:
            await self._send(frames.ws_rows(session, items))
            if self.outbox.reason is not None:
                return

    async def idle(self) -> None:
        pass

    def ready(self) -> bool:
        d = self._direct
        return d is not None and d.ready()

    def send_now(self, batches: list[tuple[str, list[Item]]]) -> None:
        assert self._direct is not None
        for session, items in batches:
            self._direct.write(frames.ws_rows_wire(session, items))

    async def finish(self, reason: str) -> None:
        if reason == GONE:
            return
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            async with goodbye():
                if reason == RESYNC:
                    for session in self._closing_sessions:
                        await self._send(frames.ws_resync(session))
                    await self.ws.close(CLOSE_TOO_SLOW, "too slow: resubscribe from your cursor")
                elif reason == EXPIRED:
                    await self._send(frames.ws_error("token expired", code=401))
                    await self.ws.close(CLOSE_POLICY, "token expired")
                elif reason == SHUTDOWN:
                    await self.ws.close(CLOSE_RESTART, "broadcaster stopping")
                elif reason == IDLE:
                    await self.ws.close(1000, "idle: no subscription")

    # The connection

    async def serve(self) -> None:
        await serve_feed(self.rt, self.outbox, "ws", self._receive())

    async def _receive(self) -> None:
        idle = self.rt.config.ws_idle_s
        while True:
            try:
                # Only a socket with no subscription is idle: a quiet session is not.
                async with asyncio.timeout(None if self.watches else idle):
                    message = await self.ws.receive()
            except TimeoutError:
                self.rt.metrics.idle_closed.inc()
                self.outbox.close(IDLE)
                await asyncio.Event().wait()  # the sender closes the socket and ends this
                return
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            try:
                if text is None:
                    # A binary frame is accepted when it is UTF-8 JSON.
                    text = _utf8(message.get("bytes") or b"")
                self._handle(parse_message(text))
            except BadRequest as e:
                await self._send(frames.ws_error(e.why, **e.extra))

    def _handle(self, msg: dict[str, Any]) -> None:
        session: str = msg["session"]
        if msg["type"] == "unsubscribe":
            w = self.watches.pop(session, None)
            if w is None:
                raise BadRequest("not subscribed", session=session)
            self.rt.hub.unwatch(w)
            # A frame already being written may still arrive; nothing after it.
            self.outbox.pending.discard(session)
            return
        if self.outbox.reason is not None:
            return
        if not self.grant.allows(session):
            raise BadRequest("the token does not grant this session", session=session, code=403)
        if session in self.watches:
            raise BadRequest("already subscribed (unsubscribe first)", session=session)
        if len(self.watches) >= self.rt.config.max_subscriptions:
            raise BadRequest(
                f"at most {self.rt.config.max_subscriptions} subscriptions per socket",
                session=session,
            )
        self.outbox.pending.track(session, msg["deltas"])
        self.watches[session] = self.rt.hub.watch(session, msg["after"], self.outbox)


async def endpoint(ws: WebSocket) -> None:
    rt: Runtime = ws.app.state.runtime
    try:
        grant = authorize(rt.secret, token_from(ws.headers, ws.query_params))
    except Denied as e:
        await ws.send_denial_response(JSONResponse({"error": e.reason}, status_code=e.status))
        return
    await ws.accept()
    await WsConnection(rt, ws, grant).serve()
