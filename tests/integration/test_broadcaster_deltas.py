"""Streaming an answer with extend, end to end: WebSocket and SSE clients with
deltas on, with deltas off, one that subscribes halfway through the answer,
and ones that disconnect and resume mid-answer all hold, after every change
they receive, exactly the body the writer published for that change (as
PostgreSQL printed it), and end with PostgreSQL's rows."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import psycopg
import websockets

from rowcast.contract.keys import Keys, shard_of
from tests.integration.test_broadcaster_harness import (
    broadcaster,
    check_delivery,
    pg_rows,
    producer,
    writer,
)

# Chunks with what JSON escapes and what jsonb normalises: quotes,
# backslashes, newlines, non-ASCII, astral characters.
CHUNKS = [f'w{i} "q" \\ é\n😀 ' if i % 7 == 0 else f"word{i} " for i in range(200)]


class Replica:
    """What one client holds of each row, built only from what it was sent;
    it refuses a delta on a base it does not hold."""

    def __init__(self, published: dict[int, Any]) -> None:
        self.published = published
        self.rows: dict[str, dict[str, Any]] = {}
        self.received: list[dict[str, Any]] = []
        self.deltas = 0

    def apply(self, c: dict[str, Any]) -> None:
        if "body" not in c:
            held = self.rows.get(c["row"])
            assert held is not None, f"a delta for a row never received: {c}"
            assert held["revision"] == c["base_revision"], (held["revision"], c)
            body = dict(held["body"])
            for k, v in c["extend"].items():
                old = body.get(k)
                body[k] = (old if isinstance(old, str) else "") + v
            c = {k: v for k, v in c.items() if k not in ("extend", "base_revision")}
            c["body"] = body
            self.deltas += 1
        self.rows[c["row"]] = c
        self.received.append(c)

    def check_against(self, published: dict[int, dict[str, Any]]) -> None:
        """After every change: the body held equals the one published with it."""
        for c in self.received:
            want = published[c["change"]]
            assert (c["row"], c["revision"], c["body"]) == (
                want["row"],
                want["revision"],
                want["body"],
            ), c["change"]


class Ws:
    def __init__(self, url: str, session: str, deltas: bool) -> None:
        self.url, self.session, self.deltas = url, session, deltas
        self.replica = Replica({})
        self.conn: Any = None

    @property
    def cursor(self) -> int:
        got = self.replica.received
        return got[-1]["change"] if got else 0

    async def connect(self) -> None:
        self.conn = await websockets.connect(self.url)
        msg = {"type": "subscribe", "session": self.session, "after": self.cursor}
        if self.deltas:
            msg["deltas"] = True
        await self.conn.send(orjson.dumps(msg).decode())

    async def until(self, change: int) -> None:
        async with asyncio.timeout(60):
            while self.cursor < change:
                msg = orjson.loads(await self.conn.recv())
                assert msg["type"] == "rows", msg
                for c in msg["changes"]:
                    self.replica.apply(c)

    async def close(self) -> None:
        await self.conn.close()


class Sse:
    def __init__(self, base: str, session: str, deltas: bool) -> None:
        self.url = f"{base}/api/sessions/{session}/events"
        self.deltas = deltas
        self.replica = Replica({})
        self.last_id: str | None = None

    async def read(self, until_change: int | None = None, max_events: int | None = None) -> None:
        """One connection (resuming with Last-Event-ID), until a change or a count."""
        headers = {} if self.last_id is None else {"last-event-id": self.last_id}
        params = {"deltas": "1"} if self.deltas else {}
        n = 0
        async with (
            asyncio.timeout(60),
            httpx.AsyncClient(timeout=None) as http,
            http.stream("GET", self.url, headers=headers, params=params) as resp,
        ):
            assert resp.status_code == 200
            data, ident = "", None
            async for line in resp.aiter_lines():
                if line.startswith("data:"):
                    data = line[5:].strip()
                elif line.startswith("id:"):
                    ident = line[3:].strip()
                elif line == "" and data and ident is not None:
                    c = orjson.loads(data)
                    self.replica.apply(c)
                    self.last_id = ident
                    n += 1
                    data, ident = "", None
                    if until_change is not None and c["change"] >= until_change:
                        return
                    if max_events is not None and n >= max_events:
                        return


async def until_revision(db_url: str, session: str, row: str, revision: int) -> int:
    """Until PostgreSQL holds ``row`` at ``revision`` or later; its change number."""
    async with asyncio.timeout(60):
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            while True:
                cur = await conn.execute(
                    "SELECT revision, change FROM rowcast.rows"
                    " WHERE session_id = %s AND row_id = %s",
                    (session, row),
                )
                got = await cur.fetchone()
                if got is not None and got[0] >= revision:
                    return int(got[1])
                await asyncio.sleep(0.02)


async def published(aredis: Any, prefix: str, session: str) -> dict[int, dict[str, Any]]:
    """change number -> the change as P:{N}:rows holds it (body parsed)."""
    out = {}
    for _, f in await aredis.xrange(Keys(prefix).rows(shard_of(session, 1))):
        if f[b"session"].decode() == session:
            out[int(f[b"change"])] = {
                "row": f[b"row"].decode(),
                "revision": int(f[b"revision"]),
                "body": orjson.loads(f[b"body"]),
                "extend": f.get(b"extend"),
            }
    return out


async def test_streamed_answer_reaches_every_kind_of_client_byte_equal(
    redis_url, db_url, prefix, aredis
):
    session = "s-deltas"
    async with (
        writer(redis_url, db_url, prefix),
        broadcaster(redis_url, db_url, prefix) as b,
        producer(redis_url, prefix) as p,
    ):
        await p.append(session, "q", "user", {"text": "a question"})
        await p.append(session, "a", "assistant", {"text": "", "done": False}, wait=True)
        on, off = Ws(b.ws_url, session, True), Ws(b.ws_url, session, False)
        resuming = Ws(b.ws_url, session, True)
        sse_on, sse_off = Sse(b.base, session, True), Sse(b.base, session, False)
        for c in (on, off, resuming):
            await c.connect()
        halfway = Ws(b.ws_url, session, True)
        sse_halfway = Sse(b.base, session, True)

        async def stream() -> int:
            for chunk in CHUNKS:
                await p.extend(session, "a", "assistant", {"text": chunk})
                await asyncio.sleep(0.005)  # a model's pace, roughly
            await p.extend(session, "a", "assistant", {"done": True})
            receipt = await p.append(session, "end", "user", {"text": "thanks"}, wait=True)
            assert receipt.change is not None
            return receipt.change

        producing = asyncio.create_task(stream())
        sse_task = asyncio.create_task(sse_on.read(max_events=40))
        # Halfway through the answer: a new subscriber (it catches up whole).
        await until_revision(db_url, session, "a", 100)
        await halfway.connect()
        sse_half_task = asyncio.create_task(sse_halfway.read(max_events=20))
        # Mid-answer the resuming client drops its connection and comes back.
        for revision in (110, 140, 170):
            target = await until_revision(db_url, session, "a", revision)
            await resuming.until(target)
            await resuming.close()
            await resuming.connect()
        await sse_task
        await sse_half_task
        final = await producing
        await asyncio.gather(
            *(c.until(final) for c in (on, off, resuming, halfway)),
            sse_on.read(until_change=final),
            sse_off.read(until_change=final),
            sse_halfway.read(until_change=final),
        )
        for c in (on, off, resuming, halfway):
            await c.close()

        pg = await pg_rows(db_url, session)
        pub = await published(aredis, prefix, session)
        assert any(c["extend"] is not None for c in pub.values())
        # PostgreSQL's answer is the chunks joined.
        assert pg["a"][4] == {"text": "".join(CHUNKS), "done": True}
        assert pg["a"][1] == len(CHUNKS) + 1
        rows_of = {n: c["row"] for n, c in pub.items()}
        clients = {
            "ws deltas": on.replica,
            "ws whole": off.replica,
            "ws resuming": resuming.replica,
            "ws halfway": halfway.replica,
            "sse deltas": sse_on.replica,
            "sse whole": sse_off.replica,
            "sse halfway": sse_halfway.replica,
        }
        for name, replica in clients.items():
            replica.check_against(pub)
            check_delivery(replica.received, pg, rows_of)
            if name.endswith("whole"):
                assert replica.deltas == 0, name
        assert on.replica.deltas > 0 and sse_on.replica.deltas > 0
