"""Writer throughput against shard count and writer processes, on one Redis and
on a local Redis Cluster (3 masters, started here from Debian's redis-server).

    python -m tests.bench.shards [--entries 40000] [--sessions 1000]

A backlog is pushed first, then ``rowcast writer`` processes are started and
timed until every shard is drained (nothing pending, no lag). Needs
ROWCAST_REDIS_URL (one server) and an admin ROWCAST_DATABASE_URL; each run gets
its own database and key prefix. Loopback only, bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import time
from typing import Any

from rowcast.contract.connection import async_client
from rowcast.contract.entry import Entry
from rowcast.contract.keys import GROUP, Keys
from rowcast.ops.schema.migrate import migrate
from rowcast.producers import Producer
from tests import databases
from tests.bench.write import workload
from tests.integration.cluster import LocalCluster


async def drain(
    redis_url: str, db_url: str, entries: list[Entry], shards: int, writers: int
) -> float:
    prefix = f"bench{secrets.token_hex(3)}"
    keys = Keys(prefix)
    redis: Any = async_client(redis_url)
    producer = Producer(redis, prefix=prefix, shards=shards)
    for i in range(0, len(entries), 2000):
        await producer.push_many(entries[i : i + 2000])
    env = {**os.environ, "ROWCAST_REDIS_URL": redis_url, "ROWCAST_DATABASE_URL": db_url,
           "ROWCAST_PREFIX": prefix, "ROWCAST_SHARDS": str(shards)}  # fmt: skip
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "rowcast.ops.cli", "writer", "--log-level", "WARNING"], env=env
        )
        for _ in range(writers)
    ]
    try:
        while True:
            done = 0
            for n in range(shards):
                groups = await redis.xinfo_groups(keys.entries(n))
                g = next((x for x in groups if x["name"] in (GROUP, GROUP.encode())), None)
                done += g is not None and not g["pending"] and g.get("lag") == 0
            if done == shards:
                return time.perf_counter() - started
            await asyncio.sleep(0.02)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        for n in range(shards):
            for key in (keys.entries(n), keys.rows(n), keys.lease(n), keys.fence(n), keys.epoch(n)):
                await redis.delete(key)
        await redis.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=40_000)
    ap.add_argument("--sessions", type=int, default=1000)
    a = ap.parse_args()
    single = os.environ.get("ROWCAST_REDIS_URL", "redis://127.0.0.1:6379/0")
    admin = os.environ.get("ROWCAST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    entries = workload(a.entries, a.sessions)
    print(f"{a.entries} entries over {a.sessions} sessions (backlog drained by the writers)")
    print(f"{'Redis':28} {'shards':>6} {'writers':>7} {'entries/s':>10}")
    with LocalCluster(masters=3, replicas=0) as cluster:
        for where, url, shards, writers in (
            ("one Redis", single, 1, 1),
            ("one Redis", single, 2, 1),
            ("one Redis", single, 4, 1),
            ("one Redis", single, 4, 2),
            ("Redis Cluster (3 masters)", cluster.url, 4, 1),
            ("Redis Cluster (3 masters)", cluster.url, 4, 2),
        ):
            with databases.scratch(admin, "rowcast_bench") as (_, db_url):
                migrate(db_url)
                seconds = asyncio.run(drain(url, db_url, entries, shards, writers))
            print(
                f"{where:28} {shards:>6} {writers:>7} {len(entries) / seconds:>10,.0f}", flush=True
            )


if __name__ == "__main__":
    main()
