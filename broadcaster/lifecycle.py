"""What every feed connection (an SSE stream, a WebSocket) shares: its
lifecycle around the outbox, and the time limits of a client that stops
reading.

- ``serve_feed`` registers the connection, runs its sender (the outbox) and
  its listener (the client's side) until either ends, and unregisters it.
- A send that does not complete within ``stall`` seconds means the client
  stopped reading altogether (however little waits): the runtime's watchdog
  closes it with ``resync`` (``Outbox.check_stall``), as a slow one is, and
  it resumes from its cursor.
- Telling a client why it is closed takes at most FINISH_TIMEOUT: a stalled
  client never reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from starlette.websockets import WebSocketDisconnect

from rowcast.broadcaster.auth import Grant
from rowcast.broadcaster.outbox import GONE, Outbox, Sink
from rowcast.broadcaster.runtime import Runtime

log = logging.getLogger(__name__)

IDLE = "idle"
"""A WebSocket with no subscription for too long."""
FINISH_TIMEOUT = 5.0
"""Seconds a goodbye (resync, expiry, shutdown) may take to write."""


def new_outbox(rt: Runtime, sink: Sink, grant: Grant, idle: float | None = None) -> Outbox:
    """The outbox of one feed connection, with the process's limits."""
    c = rt.config
    return Outbox(
        sink, rt.metrics, rt.ticker, max_batch=c.max_batch, limit=c.queue_max,
        idle=idle, collapse=c.collapse, expires_at=grant.expires_at, stall=c.stall_s,
    )  # fmt: skip


async def serve_feed(
    rt: Runtime, outbox: Outbox, kind: str, listener: Coroutine[Any, Any, None]
) -> None:
    """Until the client leaves (``listener`` returns) or the outbox closes."""
    rt.outboxes.add(outbox)
    rt.metrics.connections.labels(kind).inc()
    tasks = (
        asyncio.create_task(outbox.run(), name=f"{kind} sender"),
        asyncio.create_task(listener, name=f"{kind} listener"),
    )
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        # The client left, or the sender said goodbye: nothing more goes out.
        outbox.close(GONE)
        for t in tasks:
            if not t.done():
                t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, OSError, WebSocketDisconnect):
                await t
        rt.outboxes.discard(outbox)
        rt.metrics.connections.labels(kind).dec()


@contextlib.asynccontextmanager
async def goodbye() -> AsyncIterator[None]:
    """A bounded goodbye: the client that does not read is left unbidden."""
    with contextlib.suppress(TimeoutError, OSError):
        async with asyncio.timeout(FINISH_TIMEOUT):
            yield
