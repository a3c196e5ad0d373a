"""``/api/sessions/{S}/events``: one session's feed as Server-Sent Events.

Each change is one ``change`` event whose ``id:`` is its change number, so an
EventSource that reconnects resumes by itself (Last-Event-ID). A stream that
falls too far behind gets ``event: resync`` and ends; the client reconnects
from the last id it saw and loses nothing.
"""

from __future__ import annotations

import logging
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from rowcast.broadcaster import frames
from rowcast.broadcaster.auth import Grant
from rowcast.broadcaster.guard import RAW_SEND
from rowcast.broadcaster.item import Item
from rowcast.broadcaster.lifecycle import goodbye, new_outbox, serve_feed
from rowcast.broadcaster.outbox import EXPIRED, RESYNC, Outbox
from rowcast.broadcaster.runtime import Runtime

log = logging.getLogger(__name__)

_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # Proxies such as nginx would otherwise buffer the stream.
    (b"x-accel-buffering", b"no"),
]


class Chunks:
    """The response cycle of uvicorn's httptools protocol, found behind the
    ASGI send the server leaves in the scope (server.py): a body written here
    goes out as one HTTP/1.1 chunk, the bytes that send would write, without
    its coroutine and the middleware around it."""

    __slots__ = ("cycle",)

    _CYCLE = (
        "transport",
        "flow",
        "chunked_encoding",
        "response_started",
        "response_complete",
        "disconnected",
    )

    def __init__(self, cycle: Any) -> None:
        self.cycle = cycle

    @classmethod
    def of(cls, send: Any) -> Chunks | None:
        """On the cycle behind ``send`` when it has what ``ready`` reads."""
        cycle: Any = getattr(send, "__self__", None)
        if not all(hasattr(cycle, a) for a in cls._CYCLE):
            return None
        if not hasattr(cycle.flow, "write_paused"):
            return None
        return cls(cycle)

    def ready(self) -> bool:
        c = self.cycle
        return (
            c.response_started
            and c.chunked_encoding is True
            and not c.response_complete
            and not c.disconnected
            and not c.flow.write_paused
            and not c.transport.is_closing()
        )

    def write(self, body: bytes) -> None:
        self.cycle.transport.write(b"%x\r\n%s\r\n" % (len(body), body))


@dataclass(eq=False)
class EventStream:
    """An ASGI response serving one subscription until the client leaves."""

    rt: Runtime
    session: str
    after: int
    grant: Grant
    _: KW_ONLY
    deltas: bool = False
    _send: Send | None = field(default=None, init=False)
    _direct: Chunks | None = field(default=None, init=False)
    outbox: Outbox | None = field(default=None, init=False)

    async def _write(self, body: bytes) -> None:
        assert self._send is not None
        await self._send({"type": "http.response.body", "body": body, "more_body": True})

    # Sink

    async def send(self, batches: list[tuple[str, list[Item]]]) -> None:
        await self._write(b"".join(frames.sse_events(items) for _, items in batches))

    def ready(self) -> bool:
        d = self._direct
        return d is not None and d.ready()

    def send_now(self, batches: list[tuple[str, list[Item]]]) -> None:
        assert self._direct is not None
        self._direct.write(b"".join(frames.sse_events(items) for _, items in batches))

    async def idle(self) -> None:
        await self._write(frames.SSE_PING)

    async def finish(self, reason: str) -> None:
        async with goodbye():
            if reason == RESYNC:
                await self._write(frames.sse_resync(self.session))
            elif reason == EXPIRED:
                await self._write(b'event: error\ndata: {"error":"token expired"}\n\n')

    # The response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rt, c = self.rt, self.rt.config
        self._send = send
        self._direct = Chunks.of(scope.get(RAW_SEND))
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        await self._write(frames.sse_retry(c.sse_retry_ms))
        outbox = self.outbox = new_outbox(rt, self, self.grant, idle=c.sse_heartbeat_s)
        outbox.pending.track(self.session, self.deltas)
        watch = rt.hub.watch(self.session, self.after, outbox)
        outbox.on_close = lambda: rt.hub.unwatch(watch)
        await serve_feed(rt, outbox, "sse", _until_disconnect(receive))
        async with goodbye():
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return
