"""The outbox: one connection's bounded queue and its sender.

A change to a quiet connection (nothing flushed for a whole window) goes at
once; on a busy one, changes wait here (coalesced, see coalesce.py) until the
process-wide ticker ends the current window or a batch is full, or go at once
when one of them carries ``ack``. The queue is
bounded: a connection that lets more than ``limit`` changes pile up while
its socket is not draining is closed with the reason ``resync``; its subscriber
resumes from its cursor and PostgreSQL fills in what it missed. Catch-up
reads do not count against a slow client: they wait for room instead
(``wait_room``), because PostgreSQL can be read later and pub/sub cannot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import KW_ONLY, InitVar, dataclass, field
from typing import Any, Protocol

from rowcast.broadcaster.coalesce import Pending
from rowcast.broadcaster.item import Item
from rowcast.broadcaster.metrics import Metrics

log = logging.getLogger(__name__)

RESYNC = "resync"
"""Too slow: told to resync, then closed."""
EXPIRED = "expired"
"""Its token expired."""
SHUTDOWN = "shutdown"
"""The broadcaster is stopping."""
GONE = "gone"
"""The client went away (or the connection ended otherwise)."""

DIRECT_MAX_BYTES = 64 * 1024
"""The most change bytes written at once without the sender: a socket's
write buffer starts pushing back at this size (asyncio's and uvloop's
default)."""


class Sink(Protocol):
    """A transport (WebSocket or SSE) as the sender sees it."""

    async def send(self, batches: list[tuple[str, list[Item]]]) -> None: ...

    async def idle(self) -> None:
        """Nothing was sent for a while (SSE sends a heartbeat)."""

    async def finish(self, reason: str) -> None:
        """Tell the client why the connection ends (resync, expiry, shutdown)."""

    def ready(self) -> bool:
        """A write now would go straight to the socket without waiting (the
        transport is not paused): ``send_now`` may be used."""

    def send_now(self, batches: list[tuple[str, list[Item]]]) -> None:
        """``send`` without awaiting (only after ``ready()``)."""


class Ticker:
    """One timer for all the connections of a process: once per window, every
    connection holding changes is told to flush. (A timer per connection per
    frame costs more than many frames do.) Connections that flush on the same
    tick also tend to send their session's changes as identical frames."""

    def __init__(self, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.clock = clock
        self._due: list[Outbox] = []
        self._handle: asyncio.TimerHandle | None = None

    def schedule(self, box: Outbox) -> None:
        self._due.append(box)
        if self._handle is None:
            loop = asyncio.get_running_loop()
            self._handle = loop.call_later(self.window, self._tick)

    def _tick(self) -> None:
        self._handle = None
        due, self._due = self._due, []
        for box in due:
            box.tick()


@dataclass(eq=False)
class Outbox:
    sink: Sink
    metrics: Metrics
    ticker: Ticker
    _: KW_ONLY
    max_batch: int = 256
    limit: int = 10_000
    idle: float | None = None
    """Seconds of silence after which the sink is pinged (None: never)."""
    collapse: InitVar[bool] = False
    expires_at: float | None = None
    stall: float | None = None
    """Seconds one write may take before the client counts as stalled (None:
    no limit); the process's watchdog (``check_stall``) enforces it."""
    reason: str | None = field(default=None, init=False)
    """Why the connection is ending; None while it serves."""
    on_close: Callable[[], None] | None = field(default=None, init=False)

    def __post_init__(self, collapse: bool) -> None:
        self.pending = Pending(collapse)
        self._low = max(1, self.limit // 2)
        self._room = asyncio.Event()
        self._room.set()
        self._waiter: asyncio.Future[object] | None = None
        self._go = False
        self._scheduled = False
        self._sending = False
        self._flushed_at = -1e18
        self._writing_since: float | None = None
        self._stalled = False
        self._task: asyncio.Task[None] | None = None

    def put(self, session: str, items: list[Item]) -> None:
        if self.reason is not None or not items:
            return
        p = self.pending
        if not p.count and len(items) == 1 and self._send_one(session, items[0]):
            return
        fresh = not p.count
        p.add(session, items)
        n = p.count
        self.metrics.observe_queue(n)
        if n > self.limit and self._sending:
            # Only while the socket is not draining: a burst (one large batch
            # of the writer) that the sender is about to take is not slowness.
            log.info("connection too slow (%d changes waiting): resync", n)
            self.metrics.resyncs.inc()
            self.close(RESYNC)
            return
        if n > self._low:
            self._room.clear()
        if p.urgent or n >= self.max_batch:
            self._now(fresh, items)
        elif self._scheduled:
            return  # a window is open: this change joins its frame
        elif self._quiet():
            self._now(fresh, items)
        else:
            self._scheduled = True
            self.ticker.schedule(self)

    def _quiet(self) -> bool:
        """Nothing was flushed for a whole window: this change has nothing to
        share a frame with, so it goes now. A window opens only on a
        connection that is already busy (adaptive coalescing)."""
        return self.ticker.clock() - self._flushed_at >= self.ticker.window

    def _now(self, fresh: bool, items: list[Item]) -> None:
        # What one message brings an idle connection (nothing else waiting)
        # may skip the sender when it is small; anything larger goes through
        # it, so a socket's buffer never holds much it did not ask for (the
        # sender waits for the socket after each frame).
        small = fresh and sum(len(i.json) for i in items) <= DIRECT_MAX_BYTES
        if not (small and self._send_now()):
            self.flush()

    def _send_now(self) -> bool:
        """A change that must go now (to a quiet connection, or an ack), when
        the sender is idle and the socket takes it without waiting: written
        here and now, without waking the sender (a task switch and a chain of
        coroutines per frame, the largest part of a delivery's cost). Anything
        else goes through the sender, which keeps the order: nothing is
        written here while it works or is about to."""
        if not self._can_write_now():
            return False
        self._write_now(self.pending.take(self.max_batch))
        return True

    def _send_one(self, session: str, item: Item) -> bool:
        """``put`` of one change with nothing waiting, when it would go out
        directly anyway (``_now`` then ``_send_now``): the same frame, written
        without queueing it first. This is every delivery to a quiet
        connection, so it is the path that counts at fan-out."""
        if not (item.ack or self.max_batch <= 1 or (not self._scheduled and self._quiet())):
            return False
        if len(item.json) > DIRECT_MAX_BYTES or not self._can_write_now():
            return False
        self.metrics.observe_queue(1)
        self._write_now([(session, [self.pending.one(session, item)])])
        return True

    def _can_write_now(self) -> bool:
        """The sender sleeps (not woken, not writing) and the socket takes a
        write without waiting."""
        w = self._waiter
        if w is None or w.done() or self._go or self._sending:
            return False
        return self.sink.ready()

    def _write_now(self, batches: list[tuple[str, list[Item]]]) -> None:
        self._room.set()
        self._scheduled = False
        self._flushed_at = self.ticker.clock()
        try:
            self.sink.send_now(batches)
        except Exception as e:
            # Rare: a transport that lost its connection drops writes without
            # raising (ready() saw it open). Should one raise, the client
            # resumes from its cursor, as after any other hang-up.
            log.debug("direct write refused (%s): the connection ends", e)
            self.close(GONE)
            return
        m = self.metrics
        m.frames += len(batches)
        m.frames_direct += len(batches)
        m.changes_out += sum(len(b[1]) for b in batches)

    def tick(self) -> None:
        """The window this connection waited for is over (if it still waits:
        an ack or a full batch may have sent everything already)."""
        if self._scheduled:
            self.flush()

    def flush(self) -> None:
        """Send what waits now (the window is over, a batch is full, an ack,
        or the connection was quiet)."""
        self._scheduled = False
        self._flushed_at = self.ticker.clock()
        self._go = True
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def wait_room(self) -> None:
        """Until the queue is at most half full (or the connection ends)."""
        await self._room.wait()

    def close(self, reason: str) -> None:
        if self.reason is not None:
            return
        self.reason = reason
        self.pending.clear()
        self._room.set()
        if self.on_close is not None:
            self.on_close()
        self._wake()

    async def _sleep(self, timeout: float | None) -> bool:
        """Until woken (flush or close); True when the timeout ran out."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[object] = loop.create_future()
        self._waiter = fut
        handle = None if timeout is None else loop.call_later(timeout, _expire, fut)
        try:
            await fut
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()
        return fut.result() is _TIMEOUT

    async def run(self) -> None:
        """The sender: until close(), then tell the client why (``Sink.finish``)."""
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        expiry = None
        if self.expires_at is not None:
            expiry = loop.call_later(max(0.0, self.expires_at - time.time()), self.close, EXPIRED)
        try:
            await self._serve()
            assert self.reason is not None
            await self.sink.finish(self.reason)
        finally:
            if expiry is not None:
                expiry.cancel()

    async def _serve(self) -> None:
        p = self.pending
        while self.reason is None:
            if p.count and (self._go or p.urgent or p.count >= self.max_batch):
                self._go = False
                batches = p.take(self.max_batch)
                self._room.set()
                self._sending = True
                try:
                    if not await self._write(self.sink.send(batches)):
                        return
                finally:
                    self._sending = False
                self.metrics.frames += len(batches)
                self.metrics.changes_out += sum(len(b[1]) for b in batches)
                continue
            # A flush that found nothing to send (a tick after an ack took
            # everything) is spent: only a new one may wake this sender.
            self._go = False
            idle = self.idle if not p.count else None
            quiet = await self._sleep(idle) and not p.count and self.reason is None
            if quiet and not await self._write(self.sink.idle()):
                return

    async def _write(self, write: Coroutine[Any, Any, None]) -> bool:
        """One write to the client; False when the watchdog found it stalled
        (its cancellation is absorbed here: the connection ends with resync)."""
        self._writing_since = time.monotonic()
        try:
            await write
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self._stalled or task is None or task.uncancel() > 0:
                raise
            return False
        finally:
            self._writing_since = None
        return True

    def check_stall(self, now: float) -> bool:
        """Called by the process's watchdog: a write pending for longer than
        ``stall`` means the client stopped reading altogether (however little
        waits). It is closed with ``resync``, as a slow one is, and resumes
        from its cursor. One watchdog instead of a timer around every write,
        which cost more than the write."""
        since = self._writing_since
        if self.stall is None or since is None or self._stalled or now - since <= self.stall:
            return False
        self._stalled = True
        log.info("client stopped reading for %.0f s: resync", self.stall)
        self.metrics.stalls.inc()
        self.metrics.resyncs.inc()
        self.close(RESYNC)
        if self._task is not None:
            self._task.cancel()
        return True


_TIMEOUT = object()


def _expire(fut: asyncio.Future[object]) -> None:
    if not fut.done():
        fut.set_result(_TIMEOUT)
