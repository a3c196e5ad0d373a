"""The after-commit script on fakeredis (its Lua runs there too): everything a
committed batch tells Redis, in one call."""

from __future__ import annotations

import fakeredis
import orjson

from rowcast.contract.change import Change, from_stream_fields
from rowcast.contract.keys import GROUP, Keys
from rowcast.writer.batch import Dead, Reply, ok_receipt
from rowcast.writer.publish import Outcome, Publisher


async def test_one_script_carries_rows_message_receipts_dead_letters_and_acks() -> None:
    r = fakeredis.FakeAsyncRedis()
    keys = Keys("p")
    ids = [await r.xadd(keys.entries(0), {"n": str(i)}) for i in range(3)]
    await r.xgroup_create(keys.entries(0), GROUP, id="0")
    await r.xreadgroup(GROUP, "active", {keys.entries(0): ">"})
    pubsub = r.pubsub()
    await pubsub.subscribe(keys.channel)
    await pubsub.get_message(timeout=1)

    changes = [
        Change("s", "a", 0, 0, 1, "user", b'{"t": "hi",  "x": [1]}', True),
        Change("s", "b", 1, 2, 2, "tool", b'"done"', False),
    ]
    dead = Dead(ids[2], {b"op": b"bogus", b"body": b"\xff"}, "unknown op", "tok-dead")
    out = Outcome(
        ids=ids,
        changes=changes,
        dead=[dead],
        receipts=[Reply("tok-a", ok_receipt("s", "a", 0, 0, 1, False))],
    )
    await Publisher(r, keys, 0, rows_maxlen=100, receipt_ttl_ms=60_000).publish(out)

    rows = await r.xrange(keys.rows(0))
    assert [from_stream_fields(f) for _, f in rows] == changes
    assert rows[0][1][b"ack"] == b"1" and rows[1][1][b"ack"] == b"0"
    msg = await pubsub.get_message(timeout=1)
    assert msg is not None and orjson.loads(msg["data"])["changes"][1]["body"] == "done"
    assert orjson.loads(msg["data"])["shard"] == 0
    assert orjson.loads((await r.lrange(keys.reply(0, "tok-a"), 0, -1))[0])["sequence"] == 0
    assert orjson.loads((await r.lrange(keys.reply(0, "tok-dead"), 0, -1))[0]) == {
        "ok": False,
        "error": "unknown op",
    }
    assert 0 < await r.pttl(keys.reply(0, "tok-a")) <= 60_000
    ((_, fields),) = await r.xrange(keys.dead(0))
    assert fields == {b"op": b"bogus", b"body": b"\xff", b"error": b"unknown op", b"source": ids[2]}
    assert (await r.xpending(keys.entries(0), GROUP))["pending"] == 0
    await pubsub.aclose()


async def test_nothing_to_say_sends_nothing() -> None:
    r = fakeredis.FakeAsyncRedis()
    await Publisher(r, Keys("p"), 0, 10, 1000).publish(Outcome())
    assert await r.keys("*") == []


async def test_a_change_with_a_delta_keeps_it_in_the_rows_stream() -> None:
    r = fakeredis.FakeAsyncRedis()
    keys = Keys("p")
    changes = [
        Change("s", "a", 0, 3, 5, "assistant", b'{"text": "hello"}', False, b'{"text":"lo"}', 2),
        Change("s", "b", 1, 0, 6, "user", b"{}"),
        Change("s", "c", 2, 1, 7, "assistant", b'{"text":"x","n":1}', False, b'{"text":"x"}'),
    ]
    await Publisher(r, keys, 0, rows_maxlen=100, receipt_ttl_ms=1000).publish(
        Outcome(changes=changes)
    )
    rows = await r.xrange(keys.rows(0))
    assert rows[0][1][b"extend"] == b'{"text":"lo"}' and rows[0][1][b"base_revision"] == b"2"
    assert b"extend" not in rows[1][1]
    # Strings appended beside another change: extend without base_revision.
    assert rows[2][1][b"extend"] == b'{"text":"x"}' and b"base_revision" not in rows[2][1]
    assert [from_stream_fields(f) for _, f in rows] == changes
