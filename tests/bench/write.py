"""Write-path benchmark: the real writer beside its baselines, in one run.

    python -m tests.bench.write [--entries 100000] [--sessions 1000] [--naive 5000]
    python -m tests.bench.write --shards 4 --writers 1,2

Needs ROWCAST_REDIS_URL and an admin ROWCAST_DATABASE_URL; it creates (and
drops) its own database and uses its own key prefix. Loopback only, bounded.
Reported as entries/s and as ratios to the naive baseline. With
``--writers 1,2`` the backlog (over ``--shards`` shards) is drained once by
each number of ``rowcast writer`` processes started together, spreading the
shards between them as a fleet does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import statistics
import subprocess
import sys
import time
from typing import Any

import orjson
import psutil
import psycopg
from redis.asyncio import Redis

from rowcast.contract.entry import Entry
from rowcast.contract.keys import GROUP, Keys
from rowcast.ops.schema.migrate import migrate
from rowcast.producers import Producer, make_entry
from rowcast.writer.batch import Valid
from rowcast.writer.store import Store
from tests import databases


def workload(n: int, sessions: int, seed: int = 1) -> list[Entry]:
    rnd = random.Random(seed)
    made = [0] * sessions
    out = []
    for i in range(n):
        s = rnd.randrange(sessions)
        if made[s] and rnd.random() < 0.3:
            op, row = "upsert", f"r{rnd.randrange(made[s])}"
        else:
            op, row = "append", f"r{made[s]}"
            made[s] += 1
        body = {"text": "x" * 240, "i": i, "role": "assistant"}
        out.append(make_entry(op, f"session-{s:05d}", row, "assistant", body))
    return out


async def drained(redis: Redis, keys: Keys, shards: int) -> bool:
    for n in range(shards):
        groups = await redis.xinfo_groups(keys.entries(n))
        g = next((x for x in groups if x["name"] in (GROUP, GROUP.encode())), None)
        if g is None or g["pending"] or g.get("lag") != 0:
            return False
    return True


async def bench_writer(
    redis_url: str,
    db_url: str,
    entries: list[Entry],
    shards: int = 1,
    writers: int = 1,
    latency: bool = True,
) -> dict[str, Any]:
    """Backlog drain: entries pushed first, then the writer processes started
    together and timed until every shard is drained."""
    prefix = f"bench{secrets.token_hex(3)}"
    keys = Keys(prefix)
    redis = Redis.from_url(redis_url)
    producer = Producer(redis, prefix=prefix, shards=shards)
    for i in range(0, len(entries), 2000):
        await producer.push_many(entries[i : i + 2000])
    env = {
        **os.environ,
        "ROWCAST_REDIS_URL": redis_url,
        "ROWCAST_DATABASE_URL": db_url,
        "ROWCAST_PREFIX": prefix,
        "ROWCAST_LOG_LEVEL": "WARNING",
        "ROWCAST_SHARDS": str(shards),
    }
    redis_cpu = await _redis_cpu(redis)
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "rowcast.ops.cli", "writer", "--log-level", "WARNING"], env=env
        )
        for _ in range(writers)
    ]
    lat: list[float] = []
    cpu: dict[str, float] = {}
    try:
        backends: list[psutil.Process] = []
        writer_cpu0 = 0.0  # start-up (imports, schema check) left out
        rss: list[float] = []  # MB, once a second while draining
        next_rss = 0.0
        while not await drained(redis, keys, shards):
            if not backends:
                backends = _writer_backends(db_url)
                writer_cpu0 = sum(_cpu(psutil.Process(p.pid)) for p in procs)
            if backends and time.monotonic() >= next_rss:
                rss.append(sum(psutil.Process(p.pid).memory_info().rss for p in procs) / 1e6)
                next_rss = time.monotonic() + 1.0
            await asyncio.sleep(0.02)
        seconds = time.perf_counter() - started
        # CPU of the drain, per entry: the writer processes (from their first
        # PostgreSQL connection), their PostgreSQL backends and the Redis
        # server (all it did meanwhile: this bench is its only busy client).
        n = len(entries)
        cpu["writer"] = (sum(_cpu(psutil.Process(p.pid)) for p in procs) - writer_cpu0) / n * 1e6
        cpu["postgres"] = sum(_cpu(b) for b in backends) / n * 1e6
        cpu["redis"] = (await _redis_cpu(redis) - redis_cpu) / n * 1e6
        # Receipt latency on the now idle pipeline.
        for i in range(500 if latency else 0):
            t0 = time.perf_counter()
            await producer.append("latency", f"l{i}", "user", {"i": i}, wait=True)
            lat.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.002)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        async for key in redis.scan_iter(match=f"{prefix}:*"):
            await redis.delete(key)
        await redis.aclose()
    out: dict[str, Any] = {"seconds": seconds, "rate": len(entries) / seconds}
    if cpu:
        out["cpu_us_per_entry"] = cpu
    if rss:
        out["writer_rss_mb"] = {"first": rss[0], "max": max(rss), "last": rss[-1]}
    if lat:
        lat.sort()
        out["p50_ms"] = statistics.median(lat)
        out["p99_ms"] = lat[int(len(lat) * 0.99) - 1]
    return out


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


async def _redis_cpu(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _writer_backends(db_url: str) -> list[psutil.Process]:
    """The PostgreSQL server processes serving the writers (same machine)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        pids = conn.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE application_name = 'rowcast-writer' AND datname = current_database()"
        ).fetchall()
    out = []
    for (pid,) in pids:
        try:
            out.append(psutil.Process(pid))
        except psutil.Error:
            continue
    return out


async def bench_store(db_url: str, entries: list[Entry], batch: int = 1000) -> dict[str, Any]:
    """The set-based SQL alone (no Redis): the ceiling PostgreSQL sets."""
    store = await Store.connect(db_url, "bench:store", 60_000)
    await store.claim(1)
    started = time.perf_counter()
    for b in range(0, len(entries), batch):
        chunk = entries[b : b + batch]
        valid = [Valid(f"{b + 1}-{i}".encode(), e, {}) for i, e in enumerate(chunk)]
        await store.apply(1, (b + 1, 0), (b + 1, len(chunk) - 1), valid)
    seconds = time.perf_counter() - started
    await store.close()
    return {"seconds": seconds, "rate": len(entries) / seconds}


def bench_naive(db_url: str, entries: list[Entry]) -> dict[str, Any]:
    """The baseline: one INSERT per entry, MAX(sequence)+1, a commit each."""
    started = time.perf_counter()
    with psycopg.connect(db_url) as conn:
        for e in entries:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (e.session,))
                conn.execute(
                    """INSERT INTO rowcast.rows (session_id, row_id, sequence, change, kind, body)
                       SELECT %(s)s, %(r)s, coalesce(max(sequence) + 1, 0),
                              coalesce(max(change) + 1, 1), %(k)s, %(b)s::jsonb
                         FROM rowcast.rows WHERE session_id = %(s)s
                       ON CONFLICT (session_id, row_id) DO UPDATE
                         SET body = EXCLUDED.body, kind = EXCLUDED.kind,
                             revision = rowcast.rows.revision + 1
                       WHERE %(op)s = 'upsert'""",
                    {
                        "s": "naive-" + e.session,
                        "r": e.row,
                        "k": e.kind,
                        "b": e.body.decode(),
                        "op": e.op,
                    },
                )
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rate": len(entries) / seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--naive", type=int, default=5000, help="entries for the naive baseline")
    ap.add_argument("--shards", type=int, default=1, help="ROWCAST_SHARDS of the writer runs")
    ap.add_argument("--writers", default="", help="comma-separated writer process counts, e.g. 1,2")
    a = ap.parse_args()
    if not 1 <= a.entries <= 2_000_000 or not 1 <= a.naive <= a.entries:
        ap.error("--entries must be in 1..2000000 and --naive in 1..--entries")
    if a.writers:
        counts = [int(x) for x in a.writers.split(",")]
        return fleet_main(a.entries, a.sessions, a.shards, counts)
    redis_url = os.environ.get("ROWCAST_REDIS_URL", "redis://127.0.0.1:6379/0")
    admin = os.environ.get("ROWCAST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    entries = workload(a.entries, a.sessions)
    body = sum(len(e.body) for e in entries) / len(entries)
    print(f"{a.entries} entries over {a.sessions} sessions, mean body {body:.0f} bytes")
    results: dict[str, dict[str, Any]] = {}
    for name, run in (
        ("naive per-entry INSERT+COMMIT", lambda url: bench_naive(url, entries[: a.naive])),
        ("set-based SQL alone (no Redis)", lambda url: asyncio.run(bench_store(url, entries))),
        (
            "rowcast writer end to end",
            lambda url: asyncio.run(bench_writer(redis_url, url, entries)),
        ),
    ):
        with databases.scratch(admin, "rowcast_bench") as (_, url):
            migrate(url)
            results[name] = run(url)
    base = results["naive per-entry INSERT+COMMIT"]["rate"]
    print(f"{'scenario':34} {'entries/s':>10} {'ratio':>7}")
    for name, r in results.items():
        print(f"{name:34} {r['rate']:>10,.0f} {r['rate'] / base:>6.1f}x")
    w = results["rowcast writer end to end"]
    if "writer_rss_mb" in w:
        m = w["writer_rss_mb"]
        print(
            f"writer RSS while draining (once a second): first {m['first']:.1f} MB,"
            f" most {m['max']:.1f} MB, last {m['last']:.1f} MB"
        )
    c = w["cpu_us_per_entry"]
    print(
        f"CPU per entry of the writer run: writer {c['writer']:.1f} us, its PostgreSQL"
        f" backend {c['postgres']:.1f} us, Redis {c['redis']:.1f} us"
    )
    print(
        f"receipt latency on an idle pipeline (500 sequential waits): "
        f"p50 {w['p50_ms']:.2f} ms, p99 {w['p99_ms']:.2f} ms"
    )
    print(orjson.dumps(results).decode())


def fleet_main(n: int, sessions: int, shards: int, counts: list[int]) -> None:
    """The same backlog drained by each number of writer processes."""
    redis_url = os.environ.get("ROWCAST_REDIS_URL", "redis://127.0.0.1:6379/0")
    admin = os.environ.get("ROWCAST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    entries = workload(n, sessions)
    print(f"{n} entries over {sessions} sessions and {shards} shards")
    print(f"{'writer processes':>16} {'entries/s':>10} {'seconds':>8}")
    results = {}
    for w in counts:
        with databases.scratch(admin, "rowcast_bench") as (_, url):
            migrate(url)
            r = asyncio.run(bench_writer(redis_url, url, entries, shards, w, latency=False))
        results[w] = r
        print(f"{w:>16} {r['rate']:>10,.0f} {r['seconds']:>8.2f}")
    print(orjson.dumps({str(k): v for k, v in results.items()}).decode())


if __name__ == "__main__":
    main()
