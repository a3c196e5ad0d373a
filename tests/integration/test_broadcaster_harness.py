"""Shared pieces of the broadcaster's integration tests (no tests here): a
writer and a broadcaster running in the test's event loop on a free port of
127.0.0.1, real clients, and the check of what a subscriber received against
PostgreSQL and the ``P:{N}:rows`` stream."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import psycopg
import websockets
from redis.asyncio import Redis

from rowcast.broadcaster import BroadcasterConfig, create_app, serve
from rowcast.contract.keys import Keys, shard_of
from rowcast.ops.commands.runner import run_writers
from rowcast.ops.settings import Settings
from rowcast.producers.producer import Producer

SECRET = "s3cret-for-tests-only-0123456789abcdef"


def free_socket() -> socket.socket:
    sock = socket.create_server(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


@dataclass
class Broadcaster:
    config: BroadcasterConfig
    sock: socket.socket
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    app: Any = None

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def start(self) -> None:
        self.stop = asyncio.Event()
        self.app = create_app(self.config)
        started = asyncio.Event()
        self.task = asyncio.create_task(
            serve(self.app, "127.0.0.1", self.port, self.stop, sock=self.sock, started=started)
        )
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait({self.task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if self.task.done():
            self.task.result()

    async def halt(self) -> None:
        """Stop it; the port is kept for a restart."""
        self.stop.set()
        if self.task is not None:
            await self.task
            self.task = None
        # serve() closed the socket: bind the same port again for a restart.
        port = self.port
        self.sock = socket.create_server(("127.0.0.1", port))
        self.sock.setblocking(False)

    @property
    def runtime(self) -> Any:
        return self.app.state.runtime


@contextlib.asynccontextmanager
async def broadcaster(
    redis_url: str, db_url: str, prefix: str, **overrides: Any
) -> AsyncIterator[Broadcaster]:
    cfg = BroadcasterConfig(redis_url=redis_url, database_url=db_url, prefix=prefix, **overrides)
    b = Broadcaster(cfg, free_socket())
    await b.start()
    try:
        yield b
    finally:
        b.stop.set()
        if b.task is not None:
            await b.task
        b.sock.close()


@contextlib.asynccontextmanager
async def writer(redis_url: str, db_url: str, prefix: str, shards: int = 1) -> AsyncIterator[None]:
    settings = Settings(redis_url=redis_url, database_url=db_url, prefix=prefix, shards=shards)
    stop = asyncio.Event()
    task = asyncio.create_task(run_writers(settings, list(range(shards)), stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def producer(redis_url: str, prefix: str, shards: int = 1) -> AsyncIterator[Producer]:
    p = Producer(Redis.from_url(redis_url), prefix=prefix, shards=shards)
    try:
        yield p
    finally:
        await p.close()


async def until_live(b: Broadcaster, timeout: float = 30) -> None:
    """Until every subscription of the broadcaster has caught up (is live)."""
    async with asyncio.timeout(timeout):
        while True:
            hub = b.runtime.hub
            watches = [w for ws in hub._sessions.values() for w in ws]
            if watches and not any(w.sub.fetching for w in watches):
                return
            await asyncio.sleep(0.02)


async def until_subscriptions(b: Broadcaster, n: int, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while b.runtime.hub.subscriptions != n:
            await asyncio.sleep(0.02)


async def wait_for_head(db_url: str, session: str, last_change: int, timeout: float = 60) -> None:
    """Until PostgreSQL shows the session at ``last_change`` (the writer caught up)."""
    async with asyncio.timeout(timeout):
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            while True:
                cur = await conn.execute(
                    "SELECT last_change FROM rowcast.sessions WHERE session_id = %s", (session,)
                )
                row = await cur.fetchone()
                if row is not None and row[0] >= last_change:
                    return
                await asyncio.sleep(0.05)


async def head(db_url: str, session: str) -> int:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT last_change FROM rowcast.sessions WHERE session_id = %s", (session,)
        )
        row = await cur.fetchone()
        return 0 if row is None else int(row[0])


async def pg_rows(db_url: str, session: str) -> dict[str, tuple[int, int, int, str, Any]]:
    """row -> (sequence, revision, change, kind, body) as PostgreSQL holds it."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT row_id, sequence, revision, change, kind, body::text FROM rowcast.rows"
            " WHERE session_id = %s",
            (session,),
        )
        return {r[0]: (r[1], r[2], r[3], r[4], orjson.loads(r[5])) for r in await cur.fetchall()}


async def stream_changes(
    redis: Redis, prefix: str, session: str, shards: int = 1
) -> dict[int, str]:
    """change number -> row, for every change of the session the writer published."""
    key = Keys(prefix).rows(shard_of(session, shards))
    out: dict[int, str] = {}
    for _, fields in await redis.xrange(key):
        if fields[b"session"].decode() == session:
            out[int(fields[b"change"])] = fields[b"row"].decode()
    return out


def check_delivery(
    delivered: list[dict[str, Any]],
    pg: dict[str, tuple[int, int, int, str, Any]],
    published: dict[int, str],
) -> None:
    """Every change of the session exactly once, in change order:

    - change numbers strictly increase (no repeat, no reordering);
    - each delivered change is the row the writer published under that number;
    - every published change not delivered was superseded by a later delivered
      change of the same row (catch-up and coalescing send a row's latest);
    - folding the deliveries row by row gives exactly what PostgreSQL holds.
    """
    numbers = [c["change"] for c in delivered]
    assert all(a < b for a, b in itertools.pairwise(numbers)), (
        f"change numbers not strictly increasing: {numbers[:50]}"
    )
    last_of_row: dict[str, int] = {}
    for c in delivered:
        assert published.get(c["change"]) == c["row"], f"unknown change {c['change']}"
        last_of_row[c["row"]] = c["change"]
    got = set(numbers)
    for number, row in published.items():
        if number not in got:
            assert last_of_row.get(row, -1) > number, f"change {number} of {row!r} lost"
    final: dict[str, tuple[int, int, int, str, Any]] = {}
    for c in delivered:
        final[c["row"]] = (c["sequence"], c["revision"], c["change"], c["kind"], c["body"])
    assert final == pg


async def produce_session(
    p: Producer, session: str, n_rows: int, updates: int = 3, ack_every: int = 0
) -> int:
    """Rows of a session: appends, each followed by a few upserts (a streaming
    row). Ends with a receipt, so everything is committed on return; returns
    the session's last change number. (The writer may merge upserts of one row
    in one batch into one change: the count of changes is not fixed.)"""
    for i in range(n_rows):
        row = f"r{i}"
        await p.append(session, row, "user" if i % 2 else "assistant", {"i": i, "text": "x"})
        for u in range(updates):
            wait = bool(ack_every) and (i * updates + u) % ack_every == 0
            if wait:
                await p.upsert(session, row, "assistant", {"i": i, "u": u}, wait=True)
            else:
                await p.upsert(session, row, "assistant", {"i": i, "u": u})
    receipt = await p.upsert(session, "r0", "assistant", {"i": 0, "final": True}, wait=True)
    assert receipt.change is not None
    return receipt.change


class WsClient:
    """A WebSocket subscriber that records every change per session."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url if token is None else f"{url}?token={token}"
        self.changes: dict[str, list[dict[str, Any]]] = {}
        self.messages: list[dict[str, Any]] = []
        self.conn: Any = None

    async def connect(self, **kwargs: Any) -> None:
        self.conn = await websockets.connect(self.url, **kwargs)

    async def subscribe(self, session: str, after: int | None = None) -> None:
        if after is None:
            after = self.cursor(session)
        msg = {"type": "subscribe", "session": session, "after": after}
        await self.conn.send(orjson.dumps(msg).decode())

    def cursor(self, session: str) -> int:
        got = self.changes.get(session)
        return got[-1]["change"] if got else 0

    async def recv(self) -> dict[str, Any]:
        msg: dict[str, Any] = orjson.loads(await self.conn.recv())
        self.messages.append(msg)
        if msg["type"] == "rows":
            self.changes.setdefault(msg["session"], []).extend(msg["changes"])
        return msg

    async def until(self, session: str, last_change: int, timeout: float = 60) -> None:
        async with asyncio.timeout(timeout):
            while self.cursor(session) < last_change:
                await self.recv()

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


class SseClient:
    """An SSE subscriber (httpx streaming) that records change events."""

    def __init__(self, base: str, session: str, token: str | None = None) -> None:
        self.base = base
        self.session = session
        self.token = token
        self.changes: list[dict[str, Any]] = []
        self.events: list[tuple[str, str]] = []
        self.last_id: str | None = None

    async def read(
        self,
        until_change: int | None = None,
        max_events: int | None = None,
        after: int | None = None,
        timeout: float = 60,
    ) -> str:
        """Read one connection's events until a change number, a count, or the
        end of the stream; returns why it stopped ('change', 'count', 'end')."""
        if until_change is not None and self.changes and self.changes[-1]["change"] >= until_change:
            return "change"
        headers = {}
        if self.last_id is not None:
            headers["last-event-id"] = self.last_id
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        params = {} if after is None else {"after": str(after)}
        n = 0
        async with asyncio.timeout(timeout), httpx.AsyncClient(timeout=None) as http:
            url = f"{self.base}/api/sessions/{self.session}/events"
            async with http.stream("GET", url, headers=headers, params=params) as resp:
                assert resp.status_code == 200, resp.status_code
                event, data, ident = "message", "", None
                async for line in resp.aiter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data = line[5:].strip()
                    elif line.startswith("id:"):
                        ident = line[3:].strip()
                    elif line == "":
                        if data:
                            self.events.append((event, data))
                            if ident is not None:
                                self.last_id = ident
                            if event == "change":
                                change = orjson.loads(data)
                                self.changes.append(change)
                                n += 1
                                if until_change is not None and change["change"] >= until_change:
                                    return "change"
                                if max_events is not None and n >= max_events:
                                    return "count"
                        event, data, ident = "message", "", None
        return "end"


def by_change(changes: Iterable[dict[str, Any]]) -> list[int]:
    return [c["change"] for c in changes]
