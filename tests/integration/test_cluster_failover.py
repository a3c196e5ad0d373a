"""A master of the cluster is SIGKILLed mid-run: its replica takes over; the
writers and the broadcaster carry on; nothing committed is lost or
duplicated; clients end with every change in order; and with
``durable=True`` no entry the producer was told is queued is lost."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from rowcast.contract.entry import Entry
from rowcast.contract.errors import NotQueued, Unavailable
from rowcast.contract.keys import Keys
from rowcast.producers.producer import Producer, make_entry
from tests.integration.checks import check_rows, stored_rows
from tests.integration.cluster_pipeline import (
    SHARDS,
    cluster_client,
    cluster_fixture,  # noqa: F401 - the cluster fixture
    cprefix_fixture,  # noqa: F401 - the cprefix fixture
    rotated,
    wait_applied,
)
from tests.integration.processes import Writers, wait_for
from tests.integration.test_broadcaster_harness import SseClient, WsClient, broadcaster, pg_rows
from tests.integration.test_broadcaster_harness import check_delivery as check_client
from tests.integration.workload import Pushed

SESSIONS = 24
TOTAL = 1800
CHUNK = 20
MAX_CHUNKS = 20 * TOTAL // CHUNK


def pushed(e: Entry) -> Pushed:
    return Pushed({"op": b"append", "session": e.session.encode(), "row": e.row.encode(),
                   "kind": b"user", "body": e.body})  # fmt: skip


def offset_of(db_url: str, stream: str) -> tuple[int, int]:
    with psycopg.connect(db_url) as c:
        row = c.execute(
            "SELECT last_ms, last_seq FROM rowcast.offsets WHERE stream = %s", (stream,)
        ).fetchone()
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


@pytest.mark.timeout(300)
async def test_a_master_killed_mid_run(cluster, cprefix, db_url, tmp_path):
    url = cluster.url
    keys = Keys(cprefix)
    r = cluster_client(url)
    writers = Writers(tmp_path, url, db_url, cprefix)
    victim = cluster.node_for_key(keys.entries(0))
    producer = Producer.from_url(url, prefix=cprefix, shards=SHARDS, durable=True)
    ws = None
    try:
        w1 = writers.start(ROWCAST_SHARDS=str(SHARDS))
        w2 = writers.start(ROWCAST_SHARDS=str(SHARDS))
        wait_for("every shard to be led", lambda: w1.leading() + w2.leading() >= SHARDS, 60)
        sessions = [f"f-s{i}" for i in range(SESSIONS)]
        # Bootstrapped from a node that survives.
        survivor = next(i for i, p in enumerate(cluster.ports) if p != victim)
        async with broadcaster(rotated(cluster, survivor), db_url, cprefix, shards=SHARDS) as b:
            ws = WsClient(b.ws_url)
            await ws.connect()
            for s in sessions:
                await ws.subscribe(s, after=0)
            sse = SseClient(b.base, sessions[0])
            sse_task = asyncio.create_task(sse.read(timeout=250))

            async def drain() -> None:
                while True:
                    await ws.recv()

            ws_task = asyncio.create_task(drain())
            acked: list[Entry] = []
            unsure: list[Entry] = []
            order: list[Entry] = []

            resumed_seen = asyncio.Event()

            async def produce() -> None:
                # At least TOTAL entries, and on until shard 0 commits again: a
                # run that ended before the failover finished would leave shard
                # 0 nothing to resume with. Bounded all the same.
                k = 0
                while k < MAX_CHUNKS and (k < TOTAL // CHUNK or not resumed_seen.is_set()):
                    chunk = [
                        make_entry("append", sessions[n % SESSIONS], f"r{n}", "user", {"n": n})
                        for n in range(k * CHUNK, (k + 1) * CHUNK)
                    ]
                    k += 1
                    order.extend(chunk)
                    try:
                        await producer.push_many(chunk)
                        acked.extend(chunk)
                    except NotQueued as e:
                        for entry, why in zip(chunk, e.errors, strict=True):
                            (unsure if why else acked).append(entry)
                    except Unavailable:
                        unsure.extend(chunk)
                    await asyncio.sleep(0.01)

            production = asyncio.create_task(produce())
            while len(acked) < TOTAL // 3:
                await asyncio.sleep(0.05)
            before = offset_of(db_url, keys.entries(0))
            killed_at = time.monotonic()
            await asyncio.to_thread(cluster.kill_master, victim)
            acked_before_kill = len(acked)
            await asyncio.to_thread(cluster.wait_failover)

            def resumed() -> bool:
                return offset_of(db_url, keys.entries(0)) > before

            await asyncio.to_thread(wait_for, "commits on shard 0 to resume", resumed, 90, 0.02)
            resumed_seen.set()
            gap = time.monotonic() - killed_at
            print(f"failover gap (kill -> shard 0 commits again): {gap:.2f}s")
            await production
            assert len(acked) > acked_before_kill  # the other masters went on acknowledging
            # The promoted master has no replica until the killed node rejoins as
            # one: until then no durable push to its shards can be acknowledged.
            await asyncio.to_thread(cluster.restart_node, victim)
            tail = [
                make_entry("append", sessions[n % SESSIONS], f"r{n}", "user", {"n": n})
                for n in range(len(order), len(order) + 2 * SESSIONS)
            ]
            order.extend(tail)
            await producer.push_many(tail)  # every shard acknowledges again (else NotQueued)
            acked.extend(tail)

            # The writers drain what the streams hold now.
            last = {}
            for n in range(SHARDS):
                newest = r.xrevrange(keys.entries(n), count=1)
                if newest:
                    last[n] = newest[0][0].decode()
            await asyncio.to_thread(wait_applied, db_url, r, cprefix, last, 120, writers)
            got = stored_rows(db_url)
            lost = [(e.session, e.row) for e in acked if (e.session, e.row) not in got]
            assert not lost, f"{len(lost)} acknowledged entries lost, e.g. {lost[:5]}"
            # What PostgreSQL holds is exactly what was produced, each row once,
            # every session dense 0..n-1 in the order of its stream.
            stored = [pushed(e) for e in order if (e.session, e.row) in got]
            check_rows(db_url, stored, tag="f")

            finals = {s: max((c for (ss, _), c in _changes(got).items() if ss == s), default=0)
                      for s in sessions}  # fmt: skip

            def behind() -> bool:
                if any(ws.cursor(s) < finals[s] for s in sessions):
                    return True
                return not sse.changes or sse.changes[-1]["change"] < finals[sessions[0]]

            async with asyncio.timeout(60):
                while behind():
                    await asyncio.sleep(0.05)
            ws_task.cancel()
            sse_task.cancel()
            for s in sessions:
                pg = await pg_rows(db_url, s)
                # Appends only: each row has one change, its own.
                published = {v[2]: row for row, v in pg.items()}
                check_client(ws.changes[s], pg, published)
            pg0 = await pg_rows(db_url, sessions[0])
            check_client(sse.changes, pg0, {v[2]: row for row, v in pg0.items()})
    finally:
        if ws is not None:
            await ws.close()
        await producer.close()
        writers.reap()
        r.close()
        if victim not in cluster.alive_ports:
            await asyncio.to_thread(cluster.restart_node, victim)


def _changes(got: dict[tuple[str, str], dict]) -> dict[tuple[str, str], int]:
    return {k: int(v["change"]) for k, v in got.items()}
