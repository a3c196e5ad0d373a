"""Every Lua script and every pipeline rowcast sends touches the keys of one
shard only (hash tag ``{N}``: one cluster slot), checked two ways: the keys
(and the shard's channel) each script declares share one slot, and each runs
on the real cluster, which refuses anything else (CROSSSLOT, or "a non local
key" from inside a script), for shards owned by every master."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from rowcast.contract.change import Change
from rowcast.contract.connection import async_client
from rowcast.contract.keys import GROUP, Keys
from rowcast.writer.batch import Dead, Reply, ok_receipt
from rowcast.writer.lease import _RAISE_FENCE, Lease
from rowcast.writer.publish import Outcome, Publisher
from tests.integration.cluster import LocalCluster
from tests.integration.cluster_pipeline import (
    SHARDS,
    cluster_fixture,  # noqa: F401 - the cluster fixture
    cprefix_fixture,  # noqa: F401 - the cprefix fixture
)


def slot(key: str | bytes) -> int:
    return key_slot(key.encode() if isinstance(key, str) else key)


def outcome(shard: int, ids: list[bytes]) -> Outcome:
    changes = [Change(f"s{shard}", "a", 0, 0, 1, "user", b'{"t": 1}', True)]
    dead = [Dead(ids[1], {b"op": b"bogus"}, "unknown op", f"tok-dead-{shard}")]
    receipts = [Reply(f"tok-{shard}", ok_receipt(f"s{shard}", "a", 0, 0, 1, False))]
    return Outcome(ids=ids, changes=changes, dead=dead, receipts=receipts)


async def test_declared_keys_and_channel_of_each_script_share_one_slot() -> None:
    keys = Keys("p")
    fake: object = type("R", (), {"register_script": lambda self, s: None})()
    for n in range(SHARDS):
        pub = Publisher(fake, keys, n, 100, 1000)  # type: ignore[arg-type]
        declared, argv = pub.script_args(outcome(n, [b"1-0", b"1-1"]))
        assert {slot(k) for k in declared} == {slot(keys.changes(n))}
        assert keys.changes(n) in argv
        lease = Lease(fake, keys, n, "me", 1000)  # type: ignore[arg-type]
        assert {slot(k) for k in (lease._lease, lease._fence, lease._entries)} == {
            slot(keys.entries(n))
        }
        assert len({slot(k) for k in (keys.rows(n), keys.dead(n), keys.epoch(n))}) == 1
    # Different shards do spread over slots (else a cluster would not help).
    assert len({slot(keys.entries(n)) for n in range(SHARDS)}) == SHARDS


@pytest.mark.timeout(120)
async def test_every_script_runs_on_the_cluster_for_every_shard(
    cluster: LocalCluster, cprefix: str
) -> None:
    keys = Keys(cprefix)
    r = async_client(cluster.url)
    assert isinstance(r, RedisCluster)
    owners = {cluster.node_for_key(keys.entries(n)) for n in range(SHARDS)}
    assert len(owners) == 3, "the shards should spread over all three masters"
    try:
        for n in range(SHARDS):
            stream = keys.entries(n)
            await r.xgroup_create(stream, GROUP, id="0", mkstream=True)
            ids = [await r.xadd(stream, {"n": str(i)}) for i in range(2)]
            lease = Lease(r, keys, n, "writer-a", 5000)  # type: ignore[arg-type]
            fence = await lease.acquire()
            assert fence == 1
            assert await lease.renew()
            assert [i for i, _ in await lease.read(10)] == ids
            raised = await r.eval(_RAISE_FENCE, 2, keys.lease(n), keys.fence(n), "writer-a", 41)  # type: ignore[misc]
            assert int(raised) == 42

            # The after-commit script, heard on the shard's channel at its owner.
            host, port = "127.0.0.1", cluster.node_for_key(keys.changes(n))
            sub = Redis(host=host, port=port)
            pubsub = sub.pubsub()
            await pubsub.ssubscribe(keys.changes(n))
            assert (await pubsub.get_message(timeout=5))["type"] == "ssubscribe"  # type: ignore[index]
            pub = Publisher(r, keys, n, 100, 60_000, holder="writer-a")  # type: ignore[arg-type]
            assert pub.everywhere == ""  # no P:rows on a cluster
            await pub.publish(outcome(n, ids))
            msg = await pubsub.get_message(timeout=5)
            assert msg is not None and msg["type"] == "smessage"
            assert orjson.loads(msg["data"])["shard"] == n
            await pubsub.aclose()
            await sub.aclose()
            assert await r.xlen(keys.rows(n)) == 1
            assert await r.xlen(keys.dead(n)) == 1
            assert await r.llen(keys.reply(n, f"tok-{n}")) == 1
            assert (await r.xpending(stream, GROUP))["pending"] == 0
            await lease.release()
            assert await r.get(keys.lease(n)) is None
    finally:
        await r.aclose()


@pytest.mark.timeout(60)
async def test_a_script_across_shards_is_refused_by_the_cluster(
    cluster: LocalCluster, cprefix: str
) -> None:
    """The test above could not pass with a script spanning shards: the
    cluster really refuses one (so the check is not vacuous)."""
    keys = Keys(cprefix)
    r = async_client(cluster.url)
    try:
        a = keys.entries(0)
        b = next(
            keys.entries(n)
            for n in range(1, SHARDS)
            if cluster.node_for_key(keys.entries(n)) != cluster.node_for_key(a)
        )
        with pytest.raises(Exception, match=r"same (key )?slot|non local key|CROSSSLOT"):
            await r.eval("return redis.call('GET', KEYS[1])", 2, a, b)  # type: ignore[misc]
        with pytest.raises(Exception, match=r"non local key|MOVED|slot"):
            await r.eval(f"return redis.call('GET', '{b}')", 1, a)  # type: ignore[misc]
    finally:
        await asyncio.shield(r.aclose())
