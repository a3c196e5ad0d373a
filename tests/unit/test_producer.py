"""Producer against fakeredis: routing, receipts, and its errors (no server)."""

from __future__ import annotations

import asyncio

import fakeredis
import orjson
import pytest

from rowcast.contract.keys import Keys
from rowcast.producers import InvalidEntry, Producer, ReceiptTimeout, Rejected, shard_of


@pytest.fixture
def fake() -> fakeredis.FakeAsyncRedis:
    return fakeredis.FakeAsyncRedis()


async def test_entries_go_to_the_sessions_shard(fake: fakeredis.FakeAsyncRedis) -> None:
    p = Producer(fake, prefix="p", shards=4)
    for s in ("alpha", "beta", "gamma", "delta"):
        await p.append(s, "r1", "user", {"text": s})
    keys = Keys("p")
    for n in range(4):
        for _, f in await fake.xrange(keys.entries(n)):
            assert shard_of(f[b"session"].decode(), 4) == n
            assert f[b"body"] == orjson.dumps({"text": f[b"session"].decode()})
            assert f[b"op"] == b"append" and b"reply" not in f


async def fake_writer(fake: fakeredis.FakeAsyncRedis, answer: dict) -> None:
    """Answer the first entry that asks for a receipt, as the writer would."""
    keys = Keys("p")
    while True:
        for _, f in await fake.xrange(keys.entries(0)):
            if b"reply" in f:
                await fake.rpush(keys.reply(0, f[b"reply"].decode()), orjson.dumps(answer))
                return
        await asyncio.sleep(0.01)


async def test_wait_returns_a_typed_receipt(fake: fakeredis.FakeAsyncRedis) -> None:
    p = Producer(fake, prefix="p")
    answer = {
        "ok": True,
        "session": "s",
        "row": "r",
        "sequence": 7,
        "revision": 2,
        "change": 12,
        "duplicate": False,
    }
    task = asyncio.create_task(fake_writer(fake, answer))
    receipt = await p.upsert("s", "r", "assistant", {"t": "x"}, wait=True, timeout=5)
    await task
    assert (receipt.sequence, receipt.revision, receipt.change, receipt.duplicate) == (
        7,
        2,
        12,
        False,
    )


async def test_a_refused_entry_raises_with_the_writers_reason(
    fake: fakeredis.FakeAsyncRedis,
) -> None:
    p = Producer(fake, prefix="p")
    task = asyncio.create_task(fake_writer(fake, {"ok": False, "error": "body is too big"}))
    with pytest.raises(Rejected, match="body is too big"):
        await p.append("s", "r", "user", {}, wait=True, timeout=5)
    await task


async def test_no_receipt_in_time(fake: fakeredis.FakeAsyncRedis) -> None:
    p = Producer(fake, prefix="p")
    with pytest.raises(ReceiptTimeout, match="may still be stored"):
        await p.append("s", "r", "user", {}, wait=True, timeout=0.2)


@pytest.mark.parametrize(
    ("session", "row", "kind", "body", "why"),
    [
        ("", "r", "k", {}, "session is empty"),
        ("s", "r" * 201, "k", {}, "over the limit"),
        ("s", "r", "", {}, "kind is empty"),
        ("s", "r", "k", {1, 2}, "not JSON-serializable"),
        ("s", "r", "k", "x" * (1 << 20), "over the limit"),
    ],
)
async def test_bad_entries_are_refused_before_xadd(
    fake: fakeredis.FakeAsyncRedis, session: str, row: str, kind: str, body: object, why: str
) -> None:
    p = Producer(fake, prefix="p")
    with pytest.raises(InvalidEntry, match=why):
        await p.append(session, row, kind, body)
    assert await fake.xlen(Keys("p").entries(0)) == 0


async def test_extend_sends_an_extend_entry(fake: fakeredis.FakeAsyncRedis) -> None:
    p = Producer(fake, prefix="p")
    await p.extend("s", "answer", "assistant", {"text": " more"})
    [(_, f)] = await fake.xrange(Keys("p").entries(0))
    assert f[b"op"] == b"extend" and orjson.loads(f[b"body"]) == {"text": " more"}
    with pytest.raises(InvalidEntry, match="must be a JSON object"):
        await p.extend("s", "answer", "assistant", [" more"])
    assert await fake.xlen(Keys("p").entries(0)) == 1
