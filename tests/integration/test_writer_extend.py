"""The real writer on extend entries: poison inside an extend is dead-lettered
with its reason while the rest of its batch commits, and every change an
extend made carries a delta that turns the row's previous published body
into its new one."""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

from rowcast.contract.keys import Keys
from tests.integration.test_writer import db_rows, running_writer, wait_drained


def apply_delta(body: dict[str, Any], extend: dict[str, str]) -> dict[str, Any]:
    out = dict(body)
    for k, v in extend.items():
        old = out.get(k)
        out[k] = (old if isinstance(old, str) else "") + v
    return out


async def test_poison_inside_extends_is_dead_lettered_and_the_rest_commits(
    redis_url: str, db_url: str, prefix: str, aredis: Redis
) -> None:
    keys = Keys(prefix)
    stream = keys.entries(0)

    def entry(op: str, row: str, body: Any, **extra: str) -> dict[str, str]:
        return {"op": op, "session": "s", "row": row, "kind": "assistant", "body": body, **extra}

    async with running_writer(redis_url, db_url, prefix, max_body=200):
        await aredis.xadd(stream, entry("append", "a", '{"text": "x", "n": 1}', reply="t0"))
        assert await aredis.blpop([keys.reply(0, "t0")], timeout=30)
    sent = [
        entry("extend", "a", '{"text": "y"}', reply="t1"),
        entry("extend", "a", "[1]", reply="t2"),  # not an object: refused by the writer
        entry("upsert", "b", '"plain text"'),
        entry("extend", "b", '{"text": "z"}'),  # the row is not an object: PostgreSQL refuses
        entry("extend", "a", orjson.dumps({"text": "w" * 190}).decode()),  # too large
        entry("extend", "a", '{"text": "w", "n": 2}'),
        entry("extend", "a", '{"text": "!"}', reply="t3"),
        entry("append", "c", "{}"),
    ]
    ids = [await aredis.xadd(stream, f) for f in sent]  # type: ignore[arg-type]
    async with running_writer(redis_url, db_url, prefix, max_body=200, linger_ms=300):
        await wait_drained(aredis, keys, 1)

    rows = db_rows(db_url)
    _, revision, _, kind, body = rows[("s", "a")]
    assert (revision, kind, body) == (3, "assistant", {"text": "xyw!", "n": 2})
    assert rows[("s", "b")][1] == 0 and rows[("s", "b")][4] == "plain text"
    assert ("s", "c") in rows

    dead = await aredis.xrange(keys.dead(0))
    reasons = {f[b"source"]: f[b"error"].decode() for _, f in dead}
    assert set(reasons) == {ids[1], ids[3], ids[4]}
    assert reasons[ids[1]] == "an extend's body must be a JSON object, not an array"
    assert "not a JSON object" in reasons[ids[3]] and "PostgreSQL refused" in reasons[ids[3]]
    assert "over the limit of 200" in reasons[ids[4]]
    bad = orjson.loads((await aredis.lrange(keys.reply(0, "t2"), 0, -1))[0])
    assert bad["ok"] is False
    last = orjson.loads((await aredis.lrange(keys.reply(0, "t3"), 0, -1))[0])
    assert (last["ok"], last["revision"], last["duplicate"]) == (True, 3, False)

    # Every published change of "a" is whole; the ones made by extends carry
    # what they appended, and those of strings only also the revision it
    # applies to (a delta).
    held: dict[str, Any] | None = None
    revision, deltas = -1, 0
    for _, f in await aredis.xrange(keys.rows(0)):
        if f[b"row"] != b"a":
            continue
        body = orjson.loads(f[b"body"])
        if b"base_revision" in f:
            assert held is not None and int(f[b"base_revision"]) == revision
            assert apply_delta(held, orjson.loads(f[b"extend"])) == body
            deltas += 1
        elif b"extend" in f:  # strings appended beside other values: no delta
            for k, v in orjson.loads(f[b"extend"]).items():
                assert body[k].endswith(v)
        held, revision = body, int(f[b"revision"])
    assert held == {"text": "xyw!", "n": 2} and revision == 3 and deltas >= 1
