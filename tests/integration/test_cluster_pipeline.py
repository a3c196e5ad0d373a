"""The whole pipeline on a real Redis Cluster (3 masters, 8 shards): two
``rowcast writer`` processes, two broadcasters bootstrapped from different
nodes, WebSocket and SSE clients; then the operator's commands on it."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from rowcast.contract.connection import async_client
from rowcast.contract.keys import Keys, shard_of
from tests.integration.checks import check_rows
from tests.integration.cluster import LocalCluster
from tests.integration.cluster_pipeline import (
    SHARDS,
    cluster_client,
    cluster_fixture,  # noqa: F401 - the cluster fixture
    cprefix_fixture,  # noqa: F401 - the cprefix fixture
    last_ids,
    push,
    rotated,
    rowcast,
    rowcast_env,
    wait_applied,
)
from tests.integration.processes import Writers, holder_pid, wait_for
from tests.integration.test_broadcaster_harness import (
    SseClient,
    WsClient,
    broadcaster,
    check_delivery,
    head,
    pg_rows,
    stream_changes,
)
from tests.integration.workload import Workload, seeded


def feed_connections(cluster: LocalCluster, prefix: str) -> dict[int, int]:
    """master port -> sharded pub/sub connections of this test's broadcasters."""
    out: dict[int, int] = {}
    for port in cluster.master_ports():
        clients = cluster.admin(port).client_list(_type="pubsub")
        out[port] = sum(f"rowcast-broadcaster:{prefix}:" in c.get("name", "") for c in clients)
    return out


@pytest.mark.timeout(300)
async def test_pipeline_and_operations_on_a_cluster(cluster, cprefix, db_url, tmp_path):
    url = cluster.url
    keys = Keys(cprefix)
    r = cluster_client(url)
    aredis = async_client(url)
    writers = Writers(tmp_path, url, db_url, cprefix)
    env = rowcast_env(url, db_url, cprefix)
    ws1 = ws2 = None
    try:
        w1 = writers.start(ROWCAST_SHARDS=str(SHARDS))
        w2 = writers.start(ROWCAST_SHARDS=str(SHARDS))
        wait_for(
            "every shard to be led",
            lambda: sum(w.leading() for w in (w1, w2)) >= SHARDS,
            60,
        )
        with seeded("cluster pipeline") as rng:
            load = Workload(rng, "c", sessions=40, receipt_share=0.02)
            first = load.entries(600)
            # (Not the entry refused for its reply token: a replay drops the
            # token, and then it is a valid append.)
            poison = [p for p in load.poison() if p.reply != "not a token!"]
            second = load.entries(900)
        sessions = sorted({it.key[0] for it in first + second})
        owners = {cluster.node_for_key(keys.changes(n)) for n in range(SHARDS)}
        async with (
            broadcaster(rotated(cluster, 0), db_url, cprefix, shards=SHARDS) as b1,
            broadcaster(rotated(cluster, 1), db_url, cprefix, shards=SHARDS) as b2,
        ):
            # Each broadcaster holds one sharded subscription per master
            # owning shards: two per such master, none elsewhere.
            await asyncio.to_thread(
                wait_for,
                "the broadcasters' sharded subscriptions",
                lambda: (
                    feed_connections(cluster, cprefix)
                    == {p: 2 if p in owners else 0 for p in cluster.master_ports()}
                ),
                30,
            )
            ws1, ws2 = WsClient(b1.ws_url), WsClient(b2.ws_url)
            await ws1.connect()
            await ws2.connect()
            half = len(sessions) // 2
            for s in sessions[:half]:
                await ws1.subscribe(s, after=0)
            for s in sessions[half:]:
                await ws2.subscribe(s, after=0)
            sse1, sse2 = SseClient(b1.base, sessions[-1]), SseClient(b2.base, sessions[0])
            readers = [
                asyncio.create_task(sse1.read(timeout=240)),
                asyncio.create_task(sse2.read(timeout=240)),
            ]

            async def drain(ws: WsClient) -> None:
                while True:
                    await ws.recv()

            draining = [asyncio.create_task(drain(ws1)), asyncio.create_task(drain(ws2))]
            push(r, cprefix, first + poison)
            await asyncio.sleep(0.5)
            push(r, cprefix, second)
            items = first + poison + second
            await asyncio.to_thread(wait_applied, db_url, r, cprefix, last_ids(items), 120, writers)
            got = check_rows(db_url, items, tag="c")
            finals = {s: await head(db_url, s) for s in sessions}

            def behind() -> list[str]:
                late = [s for s in sessions[:half] if ws1.cursor(s) < finals[s]]
                late += [s for s in sessions[half:] if ws2.cursor(s) < finals[s]]
                for sse, s in ((sse1, sessions[-1]), (sse2, sessions[0])):
                    if not sse.changes or sse.changes[-1]["change"] < finals[s]:
                        late.append(f"sse {s}")
                return late

            async with asyncio.timeout(60):
                while behind():
                    await asyncio.sleep(0.05)
            for t in draining + readers:
                t.cancel()
            for s in sessions:
                ws = ws1 if s in sessions[:half] else ws2
                published = await stream_changes(aredis, cprefix, s, SHARDS)  # type: ignore[arg-type]
                check_delivery(ws.changes[s], await pg_rows(db_url, s), published)
            for sse, s in ((sse1, sessions[-1]), (sse2, sessions[0])):
                published = await stream_changes(aredis, cprefix, s, SHARDS)  # type: ignore[arg-type]
                check_delivery(sse.changes, await pg_rows(db_url, s), published)

        # --- the operator's commands, on the cluster ---------------------------
        out = rowcast(env, "status", "--json")
        assert out.returncode == 0, out.stderr
        report = orjson.loads(out.stdout)
        pids = {w1.pid, w2.pid}
        assert [s["shard"] for s in report["shards"]] == list(range(SHARDS))
        for s in report["shards"]:
            assert holder_pid(s["lease"]["holder"]) in pids, s
            assert (s["lag"], s["pending"]) == (0, 0), s
            assert s["last_applied"] is not None and s["length"] > 0, s
        assert sum(s["dead"] for s in report["shards"]) == len(poison)
        assert len(report["broadcasters"]) == 0  # both stopped and cleared their heartbeats

        out = rowcast(env, "verify")
        assert out.returncode == 0, out.stderr + out.stdout

        out = rowcast(env, "dlq", "list", "--json", "--count", "1000")
        assert out.returncode == 0, out.stderr
        letters = orjson.loads(out.stdout)
        assert sum(letters["totals"].values()) == len(poison)
        assert sorted(d["source"] for d in letters["dead"]) == sorted(it.id for it in poison)
        one = (
            next(d for d in letters["dead"] if d["error"] == "unknown op 'delete'")
            if any(d["error"] == "unknown op 'delete'" for d in letters["dead"])
            else letters["dead"][0]
        )
        out = rowcast(env, "dlq", "retry", one["id"], "--shard", str(one["shard"]))
        assert out.returncode == 0 and b"retried" in out.stdout, out.stderr
        # The writer refuses it again, with the same reason: back in the letters.
        wait_for(
            "the retried letter to be refused again",
            lambda: sum(int(r.xlen(keys.dead(n))) for n in range(SHARDS)) == len(poison),
            60,
        )

        lengths = {n: int(r.xlen(keys.entries(n))) for n in range(SHARDS)}
        out = rowcast(env, "replay", "--from", "0")
        assert out.returncode == 0, out.stderr
        lines = out.stdout.decode().splitlines()
        for n in range(SHARDS):
            # Every entry of every shard, wherever its node: never a silent zero.
            assert f"shard {n}: re-fed {lengths[n]} entries" in lines[n], lines[n]
        replayed = {n: r.xrevrange(keys.entries(n), count=1)[0][0].decode() for n in range(SHARDS)}
        await asyncio.to_thread(wait_applied, db_url, r, cprefix, replayed, 120, writers)
        assert check_rows(db_url, items, tag="c") == got  # replaying stored history changes nothing

        lines_in = b"".join(
            orjson.dumps({"op": "append", "session": f"p-{i}", "row": "r", "kind": "user",
                          "body": {"i": i}}) + b"\n"
            for i in range(6)
        )  # fmt: skip
        out = rowcast(env, "produce", "--wait", "--durable", stdin=lines_in)
        assert out.returncode == 0, out.stderr
        receipts = [orjson.loads(x) for x in out.stdout.splitlines()]
        assert [(x["ok"], x["session"], x["sequence"]) for x in receipts] == [
            (True, f"p-{i}", 0) for i in range(6)
        ]
        assert len({shard_of(f"p-{i}", SHARDS) for i in range(6)}) > 1
    finally:
        for ws in (ws1, ws2):
            if ws is not None:
                await ws.close()
        writers.reap()
        await aredis.aclose()
        r.close()
