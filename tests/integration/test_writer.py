"""The real writer against real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor

import orjson
import psycopg
import pytest
from redis.asyncio import Redis

from rowcast.contract.keys import Keys
from rowcast.ops.commands.runner import run_writers
from rowcast.ops.schema.migrate import migrate
from rowcast.ops.settings import Settings
from rowcast.producers import Producer, ReceiptTimeout, Rejected, Unavailable, make_entry, shard_of
from tests.integration.model import Model


@contextlib.asynccontextmanager
async def running_writer(
    redis_url: str, db_url: str, prefix: str, shards: int = 1, **extra: int
) -> AsyncIterator[None]:
    settings = Settings.from_env(
        {},
        redis_url=redis_url,
        database_url=db_url,
        prefix=prefix,
        shards=shards,
        lease_ms=2000,
        **extra,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_writers(settings, list(range(shards)), stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def wait_applied(db_url: str, count: int, timeout: float = 90) -> None:
    """Until `count` rows are stored (bounded)."""
    deadline = time.monotonic() + timeout
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        while True:
            cur = await conn.execute("SELECT count(*) FROM rowcast.rows")
            row = await cur.fetchone()
            assert row is not None
            if row[0] >= count:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"only {row[0]} of {count} rows stored after {timeout}s")
            await asyncio.sleep(0.1)


async def wait_drained(redis: Redis, keys: Keys, shards: int, timeout: float = 90) -> None:
    """Until every entry is acknowledged (nothing pending, nothing unread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = False
        for n in range(shards):
            groups = await redis.xinfo_groups(keys.entries(n))
            g = groups[0] if groups else None
            if g is None or g["pending"] or (g.get("lag") or 0):
                busy = True
        if not busy:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the writer did not drain its streams in time")


def db_rows(db_url: str) -> dict[tuple[str, str], tuple[int, int, int, str, object]]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT session_id, row_id, sequence, revision, change, kind, body FROM rowcast.rows"
        ).fetchall()
    return {(s, r): (seq, rev, chg, k, b) for s, r, seq, rev, chg, k, b in rows}


def workload(seed: int, n: int, sessions: int) -> list[tuple[str, str, str, str, object]]:
    """Appends, upserts of streaming rows, and duplicate appends (retries)."""
    rnd = random.Random(seed)
    out: list[tuple[str, str, str, str, object]] = []
    counters = [0] * sessions
    for i in range(n):
        s = rnd.randrange(sessions)
        session = f"sess-{s}"
        roll = rnd.random()
        if roll < 0.55 or counters[s] == 0:
            row = f"m{counters[s]}"
            counters[s] += 1
            out.append(("append", session, row, "user", {"text": f"message {i}", "pad": "x" * 200}))
        elif roll < 0.9:
            row = f"m{rnd.randrange(counters[s])}"
            out.append(("upsert", session, row, "assistant", {"text": f"stream {i}"}))
        else:
            row = f"m{rnd.randrange(counters[s])}"
            out.append(("append", session, row, "user", {"text": "a retry, ignored"}))
    return out


def expected(entries: Iterable[tuple[str, str, str, str, object]]) -> Model:
    m = Model()
    for e in entries:
        m.apply([(e[0], e[1], e[2], e[3], orjson.dumps(e[4]).decode())])
    return m


def assert_matches(db_url: str, model: Model) -> None:
    got = db_rows(db_url)
    assert len(got) == len(model.rows)
    for key, want in model.rows.items():
        seq, rev, _chg, kind, body = got[key]
        assert (seq, rev, kind, body) == (
            want.sequence,
            want.revision,
            want.kind,
            orjson.loads(want.body),
        ), key
    with psycopg.connect(db_url) as conn:
        bad = conn.execute(
            """SELECT h.session_id FROM rowcast.sessions h
               LEFT JOIN (SELECT session_id, count(*) n, max(sequence) mx, min(sequence) mn,
                                 count(DISTINCT change) dc, max(change) mc
                            FROM rowcast.rows GROUP BY session_id) r USING (session_id)
               WHERE r.n <> h.next_sequence OR r.mx <> r.n - 1 OR r.mn <> 0
                  OR r.dc <> r.n OR r.mc <> h.last_change"""
        ).fetchall()
    assert bad == []


@pytest.mark.timeout(300)
async def test_20000_entries_over_200_sessions(
    redis_url: str, db_url: str, prefix: str, aredis: Redis
) -> None:
    entries = workload(seed=20_000, n=20_000, sessions=200)
    keys = Keys(prefix)
    pubsub = aredis.pubsub()
    await pubsub.subscribe(keys.channel)
    published: dict[tuple[str, str], int] = {}

    async def listen() -> None:
        async for msg in pubsub.listen():
            if msg["type"] == "message":
                for c in orjson.loads(msg["data"])["changes"]:
                    key = (c["session"], c["row"])
                    assert c["change"] > published.get(key, 0)
                    published[key] = c["change"]

    listener = asyncio.create_task(listen())
    producer = Producer(aredis, prefix=prefix)
    async with running_writer(redis_url, db_url, prefix):
        for i in range(0, len(entries), 1000):
            await producer.push_many([make_entry(*e) for e in entries[i : i + 1000]])
        await wait_drained(aredis, keys, 1)
    model = expected(entries)
    assert_matches(db_url, model)

    # Every row's final change reached the rows stream and the channel.
    stream: dict[tuple[str, str], int] = {}
    for _, f in await aredis.xrange(keys.rows(0)):
        stream[(f[b"session"].decode(), f[b"row"].decode())] = int(f[b"change"])
    final = {k: v[2] for k, v in db_rows(db_url).items()}
    assert stream == final
    await asyncio.sleep(0.2)
    listener.cancel()
    await pubsub.aclose()
    assert published == final


async def test_receipt_only_after_the_row_is_visible(
    redis_url: str, db_url: str, prefix: str, aredis: Redis
) -> None:
    producer = Producer(aredis, prefix=prefix)
    async with (
        running_writer(redis_url, db_url, prefix),
        await psycopg.AsyncConnection.connect(db_url, autocommit=True) as other,
    ):
        for i in range(100):
            op = "upsert" if i % 3 == 2 else "append"
            row = f"r{i // 3}"
            receipt = (
                await producer.upsert("s", row, "k", {"i": i}, wait=True)
                if op == "upsert"
                else await producer.append("s", row, "k", {"i": i}, wait=True)
            )
            cur = await other.execute(
                "SELECT sequence, revision, change FROM rowcast.rows"
                " WHERE session_id = 's' AND row_id = %s",
                (row,),
            )
            assert await cur.fetchone() == (receipt.sequence, receipt.revision, receipt.change)
    assert (receipt.row, receipt.sequence, receipt.revision) == ("r33", 33, 0)


async def test_a_redis_that_forgot_its_scripts_while_the_writer_waits(
    redis_url: str, db_url: str, prefix: str, aredis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """The idle writer waits with a blocking XREAD sent together with its
    guarded read (one round trip). A server that lost its scripts meanwhile
    (a restart, a promoted replica) answers that read with NOSCRIPT: the
    entry is still read at once, without an error or a restart of the shard."""
    producer = Producer(aredis, prefix=prefix)
    async with running_writer(redis_url, db_url, prefix):
        first = await producer.append("s", "a", "user", {"n": 1}, wait=True)
        await asyncio.sleep(0.3)  # the writer is waiting for the next entry
        await aredis.script_flush()
        second = await producer.append("s", "b", "user", {"n": 2}, wait=True, timeout=5)
        third = await producer.append("s", "c", "user", {"n": 3}, wait=True, timeout=5)
    assert [r.sequence for r in (first, second, third)] == [0, 1, 2]
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not errors, [r.getMessage() for r in errors]


async def test_duplicate_append_receipt_carries_existing_sequence(
    redis_url: str, db_url: str, prefix: str, aredis: Redis
) -> None:
    producer = Producer(aredis, prefix=prefix)
    async with running_writer(redis_url, db_url, prefix):
        first = await producer.append("s", "a", "user", {"n": 1}, wait=True)
        await producer.append("s", "b", "user", {"n": 2}, wait=True)
        again = await producer.append("s", "a", "user", {"n": 3}, wait=True)
    assert (first.sequence, first.duplicate) == (0, False)
    assert (again.sequence, again.duplicate, again.change) == (0, True, first.change)
    assert db_rows(db_url)[("s", "a")][4] == {"n": 1}


async def test_poison_is_dead_lettered_and_the_rest_stored_in_order(
    redis_url: str, db_url: str, prefix: str, aredis: Redis
) -> None:
    keys = Keys(prefix)
    stream = keys.entries(0)
    good = {"op": "append", "session": "s", "kind": "user", "body": "{}"}
    sent = [
        {**good, "row": "g0"},
        {**good, "row": "p0", "body": "{not json"},
        {**good, "row": "g1"},
        {**good, "row": "p1", "op": "delete"},
        {"op": "append", "session": "s", "row": "p2", "kind": "user"},
        {**good, "row": "p3", "body": '"\\u0000"', "reply": "tok-p3"},
        {**good, "row": "g2"},
        {**good, "row": "p4", "session": "x" * 201},
        {**good, "row": "p5", "reply": "not a token!"},
        {**good, "row": "g3", "reply": "tok-g3"},
    ]
    ids = [await aredis.xadd(stream, f) for f in sent]  # type: ignore[arg-type]
    async with running_writer(redis_url, db_url, prefix):
        receipt = await aredis.blpop([keys.reply(0, "tok-g3")], timeout=30)
        bad = await aredis.blpop([keys.reply(0, "tok-p3")], timeout=30)
    assert receipt is not None and orjson.loads(receipt[1])["sequence"] == 3
    assert bad is not None and orjson.loads(bad[1]) == {
        "ok": False,
        "error": "body is not valid for jsonb: \\u0000 is not allowed",
    }
    rows = db_rows(db_url)
    assert sorted((v[0], k[1]) for k, v in rows.items()) == [
        (0, "g0"),
        (1, "g1"),
        (2, "g2"),
        (3, "g3"),
    ]
    dead = await aredis.xrange(keys.dead(0))
    assert [f[b"source"] for _, f in dead] == [ids[i] for i in (1, 3, 4, 5, 7, 8)]
    assert all(f[b"error"] for _, f in dead)
    # The original fields, byte for byte.
    assert dead[0][1][b"body"] == b"{not json"
    assert dead[3][1][b"reply"] == b"tok-p3"
    groups = await aredis.xinfo_groups(stream)
    assert groups[0]["pending"] == 0


async def test_a_body_postgres_refuses_is_isolated(
    redis_url: str, db_url: str, prefix: str, aredis: Redis
) -> None:
    """The pre-check lets jsonb judge what orjson cannot parse; if PostgreSQL
    refuses it, the batch is split and only that entry is dead-lettered."""
    keys = Keys(prefix)
    stream = keys.entries(0)
    nested = "[" * 1000 + "]" * 1000
    with psycopg.connect(db_url) as conn:
        # Make PostgreSQL refuse deep nesting, as a server with a small stack would.
        conn.execute(
            "ALTER DATABASE "
            + psycopg.sql.Identifier(  # type: ignore[attr-defined]
                conn.info.dbname
            ).as_string(conn)
            + " SET max_stack_depth = '100kB'"
        )
        conn.commit()
    for i in range(5):
        await aredis.xadd(
            stream,
            {
                "op": "append",
                "session": "s",
                "row": f"r{i}",
                "kind": "k",
                "body": nested if i == 2 else "{}",
            },
        )
    async with running_writer(redis_url, db_url, prefix, linger_ms=200):
        await wait_drained(aredis, keys, 1)
    rows = db_rows(db_url)
    assert sorted((v[0], k[1]) for k, v in rows.items()) == [
        (0, "r0"),
        (1, "r1"),
        (2, "r3"),
        (3, "r4"),
    ]
    dead = await aredis.xrange(keys.dead(0))
    assert len(dead) == 1 and b"PostgreSQL refused" in dead[0][1][b"error"]


async def test_sessions_go_to_their_crc32_shard(
    redis_url: str, db_url: str, prefix: str, aredis: Redis
) -> None:
    producer = Producer(aredis, prefix=prefix, shards=3)
    sessions = [f"s{i}" for i in range(12)]
    async with running_writer(redis_url, db_url, prefix, shards=3):
        for s in sessions:
            await producer.append(s, "r", "k", {}, wait=True, timeout=30)
    keys = Keys(prefix)
    for n in range(3):
        got = {f[b"session"].decode() for _, f in await aredis.xrange(keys.entries(n))}
        assert got == {s for s in sessions if shard_of(s, 3) == n}


async def test_producer_errors_are_clear(
    redis_url: str, db_url: str, prefix: str, aredis: Redis
) -> None:
    producer = Producer(aredis, prefix=prefix)
    with pytest.raises(ReceiptTimeout, match="no receipt for row 'r'"):
        await producer.append("s", "r", "k", {}, wait=True, timeout=0.3)
    async with running_writer(redis_url, db_url, prefix, max_body=64):
        with pytest.raises(Rejected, match="over the limit of 64"):
            # The producer allows 1 MiB; this writer only 64 bytes.
            await producer.upsert("s", "big", "k", {"x": "y" * 100}, wait=True, timeout=30)
    dead = Producer(Redis.from_url("redis://127.0.0.1:1/0"), prefix=prefix)
    with pytest.raises(Unavailable):
        await dead.append("s", "r", "k", {})
    await dead.close()


def test_migrate_twice_and_concurrently(empty_db_url: str) -> None:
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(migrate, [empty_db_url] * 4))
    assert sorted(len(r) for r in results)[-1] > 0
    assert sum(len(r) for r in results) == len(results[-1]) or sum(map(len, results)) == max(
        map(len, results)
    )
    assert migrate(empty_db_url) == []
    # And from separate processes.
    procs = [
        subprocess.run(
            [sys.executable, "-m", "rowcast.ops.cli", "migrate"],
            capture_output=True,
            text=True,
            env={
                **os.environ,
                "ROWCAST_DATABASE_URL": empty_db_url,
                "ROWCAST_REDIS_URL": "redis://127.0.0.1:6379/0",
            },
            timeout=60,
        )
        for _ in range(2)
    ]
    assert [p.returncode for p in procs] == [0, 0], [p.stderr for p in procs]


def test_sigterm_finishes_and_exits_zero(redis_url: str, db_url: str, prefix: str) -> None:
    env = {
        **os.environ,
        "ROWCAST_REDIS_URL": redis_url,
        "ROWCAST_DATABASE_URL": db_url,
        "ROWCAST_PREFIX": prefix,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "rowcast.ops.cli", "writer"], env=env, stderr=subprocess.DEVNULL
    )
    try:
        import redis as redis_sync

        r = redis_sync.Redis.from_url(redis_url)
        deadline = time.monotonic() + 30
        while r.get(Keys(prefix).lease(0)) is None:
            assert time.monotonic() < deadline, "the writer never took its lease"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert r.get(Keys(prefix).lease(0)) is None  # released for a standby
        r.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_a_lost_stream_whose_new_ids_fall_below_the_offset_is_applied(
    redis_url: str, db_url: str, prefix: str, aredis: Redis
) -> None:
    """Redis restarted empty and its clock went back: the new stream's ids sit
    below the stored offset, yet every one of its entries is new."""
    keys = Keys(prefix)
    producer = Producer(aredis, prefix=prefix)
    async with running_writer(redis_url, db_url, prefix):
        for row in ("a", "b", "c"):
            await producer.append("s", row, "user", {"row": row}, wait=True)
    async for key in aredis.scan_iter(match=f"{prefix}:*"):
        await aredis.delete(key)
    base = {"session": "s", "kind": "user"}
    await aredis.xadd(
        keys.entries(0), {**base, "op": "append", "row": "d", "body": "1"}, id="1000-1"
    )
    await aredis.xadd(
        keys.entries(0), {**base, "op": "upsert", "row": "a", "body": "2"}, id="1000-2"
    )
    async with running_writer(redis_url, db_url, prefix):
        await wait_drained(aredis, keys, 1)
    rows = db_rows(db_url)
    assert rows[("s", "d")][:2] == (3, 0)
    assert rows[("s", "a")][1] == 1 and rows[("s", "a")][4] == 2
    assert await aredis.xlen(keys.dead(0)) == 0
