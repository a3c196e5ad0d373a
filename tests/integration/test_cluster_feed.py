"""The broadcaster's sharded subscriptions on a cluster: one connection per
master; a killed connection and a shard whose slot moves to another master
(its node ends the subscription) are detected, the shard is subscribed again
on its owner, and its sessions are checked against PostgreSQL: clients still
get every change, in order."""

from __future__ import annotations

import asyncio

import pytest

from rowcast.contract.connection import async_client
from rowcast.contract.keys import Keys, shard_of
from rowcast.producers.producer import Producer
from tests.integration.cluster import LocalCluster
from tests.integration.cluster_pipeline import (
    SHARDS,
    cluster_fixture,  # noqa: F401 - the cluster fixture
    cprefix_fixture,  # noqa: F401 - the cprefix fixture
)
from tests.integration.test_broadcaster_harness import (
    WsClient,
    broadcaster,
    check_delivery,
    head,
    pg_rows,
    produce_session,
    stream_changes,
    writer,
)


def kill_feed(cluster: LocalCluster, prefix: str, port: int) -> int:
    """CLIENT KILL this test's broadcaster connections on one node."""
    killed = 0
    admin = cluster.admin(port)
    for c in admin.client_list(_type="pubsub"):
        if f"rowcast-broadcaster:{prefix}:" in c.get("name", ""):
            admin.execute_command("CLIENT", "KILL", "ID", c["id"])
            killed += 1
    return killed


@pytest.mark.timeout(240)
async def test_lost_and_moved_shard_subscriptions_lose_nothing(
    cluster: LocalCluster, cprefix: str, db_url: str
) -> None:
    keys = Keys(cprefix)
    sessions = [f"feed-{i}" for i in range(8)]
    moving = shard_of(sessions[0], SHARDS)
    slot = cluster.admin(cluster.master_ports()[0]).cluster("keyslot", keys.changes(moving))
    home = cluster.node_for_key(keys.changes(moving))
    aredis = async_client(cluster.url)
    try:
        async with (
            writer(cluster.url, db_url, cprefix, shards=SHARDS),
            broadcaster(cluster.url, db_url, cprefix, shards=SHARDS) as b,
        ):
            p = Producer.from_url(cluster.url, prefix=cprefix, shards=SHARDS)
            ws = WsClient(b.ws_url)
            await ws.connect()
            for s in sessions:
                await ws.subscribe(s, after=0)

            async def read() -> None:
                while True:
                    await ws.recv()

            reader = asyncio.create_task(read())
            hub = b.runtime.hub
            async with asyncio.timeout(30):
                while not hub.connected:
                    await asyncio.sleep(0.02)
            production = asyncio.gather(*(produce_session(p, s, 60, updates=2) for s in sessions))
            await asyncio.sleep(0.3)
            assert await asyncio.to_thread(kill_feed, cluster, cprefix, home) == 1
            await asyncio.sleep(0.5)
            # Reshard the moving shard's slot, keys and all, while changes flow.
            dst = next(m for m in cluster.master_ports() if m != home)
            await asyncio.to_thread(cluster.move_slot, slot, dst)
            await production
            for s in sessions:  # a last change of each after everything settled
                await p.upsert(s, "r0", "tool", {"status": "done"}, wait=True)
            finals = {s: await head(db_url, s) for s in sessions}
            async with asyncio.timeout(60):
                while any(ws.cursor(s) < finals[s] for s in sessions):
                    await asyncio.sleep(0.05)
            reader.cancel()
            await ws.close()
            await p.close()
            # Both losses were seen: the kill and the node giving up the slot.
            assert b.runtime.metrics.reconnects._value.get() >= 2
            # Now subscribed at the slot's new owner.
            clients = cluster.admin(dst).client_list(_type="pubsub")
            assert any(f"rowcast-broadcaster:{cprefix}:" in c.get("name", "") for c in clients)
            for s in sessions:
                published = await stream_changes(aredis, cprefix, s, SHARDS)  # type: ignore[arg-type]
                check_delivery(ws.changes[s], await pg_rows(db_url, s), published)
    finally:
        await aredis.aclose()
        if cluster.node_for_key(keys.changes(moving)) != home:
            await asyncio.to_thread(cluster.move_slot, slot, home)
