"""The lease's acquisition and the fleet's membership on fakeredis (their Lua
runs there too); status and health naming a shard nobody leads."""

from __future__ import annotations

import asyncio

import fakeredis

from rowcast.contract.keys import Keys
from rowcast.ops.admin.health import ShardHealth, WriterState
from rowcast.ops.admin.status import format_status, unheld, writers_report
from rowcast.writer.fleet import Fleet
from rowcast.writer.lease import Lease

K = Keys("p")


async def test_the_same_acquisition_sent_twice_counts_once() -> None:
    r = fakeredis.FakeAsyncRedis()
    lease = Lease(r, K, 0, "host:1:aa", 1000)
    assert await lease.acquire("attempt-1") == 1
    assert await lease.acquire("attempt-1") == 1  # a client's retry
    assert int(await r.get(K.fence(0))) == 1
    # A new acquisition by the same holder fences out its earlier incarnation.
    assert await lease.acquire("attempt-2") == 2
    assert int(await r.get(K.fence(0))) == 2


async def test_a_retry_after_another_holder_took_over_gets_nothing() -> None:
    r = fakeredis.FakeAsyncRedis()
    a = Lease(r, K, 0, "host:1:aa", 1000)
    b = Lease(r, K, 0, "host:2:bb", 1000)
    assert await a.acquire("x") == 1
    await a.release()
    assert await b.acquire("y") == 2
    assert await a.acquire("x") is None
    await b.release()
    # The lease is free again, but b's acquisition came after a's attempt x:
    # x is no longer the latest, so repeating it takes a new fence.
    assert await a.acquire("x") == 3


async def test_a_failing_fence_leaves_no_lease_behind() -> None:
    r = fakeredis.FakeAsyncRedis()
    await r.rpush(K.fence(0), "not a counter")
    lease = Lease(r, K, 0, "host:1:aa", 1000)
    try:
        await lease.acquire()
    except Exception as e:  # the script's error, whatever its class
        assert "WRONGTYPE" in str(e) or "wrong kind" in str(e).lower()
    else:
        raise AssertionError("acquire succeeded over a broken fence")
    assert await r.get(K.lease(0)) is None


async def test_members_heartbeat_and_plan_the_same_spread() -> None:
    r = fakeredis.FakeAsyncRedis()
    fleets = [Fleet(r, K, f"host:{i}:x", range(6), 1000) for i in range(3)]
    for f in fleets:
        await f.refresh()
    for f in fleets:
        await f.refresh()  # everyone sees everyone now
    assert all(f.members == tuple(sorted(g.holder for g in fleets)) for f in fleets)
    mine = [f.mine for f in fleets]
    assert sorted(len(m) for m in mine) == [2, 2, 2]
    assert set().union(*mine) == set(range(6))
    # Leaving is seen at the next heartbeat of the others.
    await fleets[2].leave()
    for f in fleets[:2]:
        await f.refresh()
    assert sorted(len(f.mine) for f in fleets[:2]) == [3, 3]


async def test_a_silent_member_is_pruned_after_a_lease_period() -> None:
    r = fakeredis.FakeAsyncRedis()
    quick = Fleet(r, K, "host:1:a", range(2), 200)
    await r.zadd(K.writers(), {"host:9:gone": 1})  # heartbeat long ago
    await quick.refresh()
    assert quick.members == ("host:1:a",) and quick.mine == frozenset({0, 1})
    assert await r.zscore(K.writers(), "host:9:gone") is None


async def test_wait_wakes_on_a_change_of_the_plan() -> None:
    r = fakeredis.FakeAsyncRedis()
    f = Fleet(r, K, "host:1:a", range(2), 1000)
    stop = asyncio.Event()
    waiting = asyncio.create_task(f.wait(stop, 30))
    await asyncio.sleep(0)
    await f.refresh()
    await asyncio.wait_for(waiting, 5)


def test_status_names_the_writers_and_the_shard_nobody_leads() -> None:
    shards = [
        {"shard": 0, "lease": {"holder": "h:1:a", "fence": 3}},
        {"shard": 1, "lease": {"holder": None, "fence": 2}},
        {"shard": 2, "lease": {"holder": "h:7:pinned", "fence": 1}},
    ]
    ws = writers_report([("h:1:a", 9_000.0), ("h:2:b", 9_500.0)], 10_000, shards)
    assert ws == [
        {"holder": "h:1:a", "heartbeat_age_ms": 1000, "shards": [0]},
        {"holder": "h:2:b", "heartbeat_age_ms": 500, "shards": []},
        {"holder": "h:7:pinned", "heartbeat_age_ms": None, "shards": [2]},
    ]
    assert unheld(shards) == [1]
    full = [
        {
            **s,
            "length": 0,
            "lag": 0,
            "pending": 0,
            "last_applied": None,
            "dead": 0,
            "rows_length": 0,
        }
        for s in shards
    ]
    text = format_status({"shards": full, "writers": ws, "broadcasters": []})
    assert "no writer leads shard 1" in text
    assert "h:2:b" in text and "(pinned)" in text


def test_health_says_when_writers_are_alive_but_a_shard_is_unserved() -> None:
    shard = ShardHealth(3, 4, None, WriterState.ABSENT, None, None, [], writers_alive=2)
    assert shard.problems(100) == [
        "shard 3: no writer holds the lease (4 entries waiting)"
        " although 2 writers are alive (see their logs)"
    ]
