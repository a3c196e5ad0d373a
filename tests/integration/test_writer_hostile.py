"""What a careless producer, or another program sharing the Redis, can do to
a shard, against the real writer: each case ends with every entry either
stored or dead-lettered once, every change announced once, and the shard
going on."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
import psycopg
import pytest
from redis.asyncio import Redis

from rowcast.contract.keys import Keys
from rowcast.writer.store import Store
from tests.integration.test_writer import db_rows, running_writer, wait_drained

# The raw fields of every entry of a stream, as Redis holds them (redis-py's
# XRANGE reply is a dict, which would fold a repeated name).
_RAW = "return redis.call('XRANGE', KEYS[1], '-', '+')"


async def raw_entries(redis: Redis, key: str) -> list[list[bytes]]:
    return [flat for _, flat in await redis.eval(_RAW, 1, key)]  # type: ignore[misc]


async def receipt(redis: Redis, key: str) -> dict[str, Any]:
    got = await redis.blpop([key], timeout=30)
    assert got is not None, f"no receipt on {key}"
    return orjson.loads(got[1])  # type: ignore[no-any-return]


async def test_a_reply_key_of_another_type_is_replaced(
    redis_url: str, db_url: str, prefix: str, aredis: Redis
) -> None:
    keys = Keys(prefix)
    await aredis.set(keys.reply(0, "clash"), "someone else's string")
    entry = {"op": "append", "session": "s", "kind": "user", "body": "{}"}
    await aredis.xadd(keys.entries(0), {**entry, "row": "w1", "reply": "clash"})
    await aredis.xadd(keys.entries(0), {**entry, "row": "w2", "reply": "after"})
    async with running_writer(redis_url, db_url, prefix):
        assert (await receipt(aredis, keys.reply(0, "after")))["sequence"] == 1
        assert (await receipt(aredis, keys.reply(0, "clash")))["row"] == "w1"
        await wait_drained(aredis, keys, 1)
    rows = await aredis.xrange(keys.rows(0))
    assert [f[b"row"] for _, f in rows] == [b"w1", b"w2"]  # each change once


async def test_a_clobbered_stream_key_stops_the_shard_without_repeats(
    redis_url: str, db_url: str, prefix: str, aredis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """The publish script writes nothing when a stream it writes to holds
    another type, so nothing is announced twice while it waits."""
    keys = Keys(prefix)
    await aredis.set(keys.dead(0), "not a stream")
    entry = {"op": "append", "session": "s", "kind": "user", "body": "{}"}
    await aredis.xadd(keys.entries(0), {**entry, "row": "ok", "reply": "ok"})
    await aredis.xadd(keys.entries(0), {**entry, "row": "bad", "body": "{not json"})
    caplog.set_level(logging.WARNING)
    async with running_writer(redis_url, db_url, prefix):
        deadline = time.monotonic() + 30
        while "holds a string, not a stream" not in caplog.text:
            assert time.monotonic() < deadline, "the writer did not say why it stopped"
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)  # a few retries
        assert await aredis.xlen(keys.rows(0)) == 0
        assert await aredis.llen(keys.reply(0, "ok")) == 0
        await aredis.delete(keys.dead(0))
        assert (await receipt(aredis, keys.reply(0, "ok")))["sequence"] == 0
        await wait_drained(aredis, keys, 1)
    assert [f[b"row"] for _, f in await aredis.xrange(keys.rows(0))] == [b"ok"]
    dead = await aredis.xrange(keys.dead(0))
    assert [f[b"row"] for _, f in dead] == [b"bad"]
    assert sorted(k[1] for k in db_rows(db_url)) == ["ok"]


async def test_a_dead_letter_of_thousands_of_fields_does_not_stop_the_shard(
    redis_url: str, db_url: str, prefix: str, aredis: Redis
) -> None:
    keys = Keys(prefix)
    many: dict[str, str] = {f"f{i}": "v" for i in range(5000)}
    # No body: dead. Its letter must still fit one XADD in the publish script.
    await aredis.xadd(
        keys.entries(0),
        {"op": "append", "session": "s", "row": "many", "kind": "k", "reply": "many", **many},
    )
    # One name given 5,000 times counts 5,000 times.
    head = ["op", "append", "session", "s", "row", "twice", "body", "{}"]
    await aredis.execute_command("XADD", keys.entries(0), "*", *head, *["kind", "k"] * 5000)
    good = {"op": "append", "session": "s", "kind": "k", "body": "{}"}
    await aredis.xadd(keys.entries(0), {**good, "row": "after", "reply": "after"})
    async with running_writer(redis_url, db_url, prefix):
        assert (await receipt(aredis, keys.reply(0, "after")))["sequence"] == 0
        bad = await receipt(aredis, keys.reply(0, "many"))
        await wait_drained(aredis, keys, 1)
    assert bad["ok"] is False and bad["error"] == "missing field body"
    [(_, letter), (_, repeated)] = await aredis.xrange(keys.dead(0))
    for name in (b"op", b"session", b"row", b"kind", b"reply"):
        assert name in letter
    assert b"fields not kept" in letter[b"error"]
    assert repeated[b"row"] == b"twice" and b"kind appears more than once" in repeated[b"error"]
    assert await aredis.xlen(keys.rows(0)) == 1  # "after", once


async def test_repeated_field_names(
    redis_url: str, db_url: str, prefix: str, aredis: Redis
) -> None:
    keys = Keys(prefix)
    stream = keys.entries(0)
    twice = ["op", "append", "session", "s", "row", "d1", "kind", "a", "kind", "b", "body", "{}"]
    await aredis.execute_command("XADD", stream, "*", *twice)
    unknown = ["op", "append", "session", "s", "row", "ok", "kind", "k", "body", "{}"]
    await aredis.execute_command("XADD", stream, "*", *unknown, "x", "1", "x", "2")
    async with running_writer(redis_url, db_url, prefix):
        await wait_drained(aredis, keys, 1)
    assert sorted(k[1] for k in db_rows(db_url)) == ["ok"]
    [letter] = await raw_entries(aredis, keys.dead(0))
    assert letter[: len(twice)] == [x.encode() for x in twice]  # byte for byte, both kinds
    assert letter[len(twice)] == b"error" and b"kind appears more than once" in letter[-3]


async def test_fields_the_contract_does_not_name_change_nothing(
    redis_url: str, db_url: str, prefix: str, aredis: Redis
) -> None:
    """A producer's own ``origin`` (``rowcast replay`` marks its entries with
    ``rowcast.origin``), a kind with a tab, a number beyond a double."""
    keys = Keys(prefix)
    stream = keys.entries(0)
    base = {"session": "s", "kind": "user"}
    big = '{"n": ' + "9" * 5000 + "}"
    await aredis.xadd(stream, {**base, "op": "append", "row": "a", "body": '{"v": 1}'})
    await aredis.xadd(
        stream, {**base, "op": "upsert", "row": "a", "body": '{"v": 2}', "origin": "1-0"}
    )
    await aredis.xadd(
        stream, {**base, "op": "append", "row": "b", "body": "{}", "origin": "claude-code"}
    )
    await aredis.xadd(stream, {**base, "op": "append", "row": "c", "body": "{}", "kind": "t\tu"})
    await aredis.xadd(stream, {**base, "op": "append", "row": "d", "body": big})
    # Deep and beyond a double: before, checking it overflowed Python's stack
    # in the writer, which then retried the batch forever.
    deep = "[" * 700 + "1e999" + "]" * 700
    await aredis.xadd(stream, {**base, "op": "append", "row": "e", "body": deep})
    async with running_writer(redis_url, db_url, prefix):
        await wait_drained(aredis, keys, 1)
    assert await aredis.xlen(keys.dead(0)) == 0
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT row_id, sequence, revision, kind, body::text"
            " FROM rowcast.rows WHERE row_id <> 'e' ORDER BY sequence"
        ).fetchall()
        depth = conn.execute(
            "SELECT sequence, length(body::text) - length(replace(body::text, '[', ''))"
            " FROM rowcast.rows WHERE row_id = 'e'"
        ).fetchone()
    assert depth == (4, 700)
    assert rows == [
        ("a", 0, 1, "user", '{"v": 2}'),  # the upsert applied
        ("b", 1, 0, "user", "{}"),
        ("c", 2, 0, "t\tu", "{}"),
        ("d", 3, 0, "user", big),
    ]


async def test_a_leader_that_lost_its_lease_after_committing_announces_nothing(
    redis_url: str,
    db_url: str,
    prefix: str,
    aredis: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Paused between its COMMIT and its publish past its lease: the new
    holder announces the batch (from the tracking record), the old one must
    not, or its late changes would follow newer ones on ``P:{N}:rows``."""
    keys = Keys(prefix)
    taken = asyncio.Event()
    apply = Store.apply

    async def apply_then_lose_the_lease(self: Store, *args: Any, **kw: Any) -> Any:
        out = await apply(self, *args, **kw)
        if not taken.is_set():
            taken.set()
            await aredis.set(keys.lease(0), "another writer", px=3000)
        return out

    monkeypatch.setattr(Store, "apply", apply_then_lose_the_lease)
    await aredis.xadd(
        keys.entries(0), {"op": "append", "session": "s", "row": "r", "kind": "k", "body": "{}"}
    )
    async with running_writer(redis_url, db_url, prefix):
        await asyncio.wait_for(taken.wait(), 30)
        await asyncio.sleep(1)  # the old leader's publish, had it gone ahead
        assert await aredis.xlen(keys.rows(0)) == 0
        assert sorted(k[1] for k in db_rows(db_url)) == ["r"]  # committed all the same
        # The lease lapses; whoever leads next announces the batch, once.
        await wait_drained(aredis, keys, 1)
    assert [f[b"row"] for _, f in await aredis.xrange(keys.rows(0))] == [b"r"]
