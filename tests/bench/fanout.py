"""Broadcaster benchmark: fan-out to many WebSocket clients, and latency.

    python -m tests.bench.fanout [--clients 1000] [--sessions 100]
        [--entries 50000] [--rate 2000] [--seconds 10] [--workers 2]

Runs the real pipeline on this machine: ``rowcast writer`` and one
``rowcast broadcaster`` process, and client worker processes holding the
WebSocket clients (``--clients`` spread evenly over ``--sessions``; a client
that is told to resync reconnects from its cursor, as any client would).

1. Fan-out: ``--entries`` entries (70% appends, 30% upserts of a recent row)
   are pushed as fast as possible; reported: changes delivered per second to
   all clients together, from the first delivery to the last.
2. Latency: appends at a steady ``--rate`` entries/s for ``--seconds``; each
   body carries the time of its XADD, each client notes the time it received
   the change: p50/p99 of the difference (one clock: same machine).

Needs ROWCAST_REDIS_URL and an admin ROWCAST_DATABASE_URL; it creates (and
drops) its own database and uses its own key prefix. Loopback only; bounded in
count (the arguments) and time (``--timeout``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import httpx
import orjson
from redis.asyncio import Redis

from rowcast.contract.connection import async_client
from rowcast.contract.entry import Entry
from rowcast.contract.keys import Keys
from rowcast.ops.schema.migrate import migrate
from rowcast.producers import Producer, make_entry
from tests import databases
from tests.bench.clients import Workers, raise_nofile, worker

ROWCAST = str(Path(sys.executable).parent / "rowcast")


# ---------------------------------------------------------------- the run


def loop_runner() -> Any:
    """uvloop's run when it is installed (uvicorn's standard extra), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run
    return uvloop.run


async def wait_ready(port: int) -> None:
    """Until the broadcaster on ``port`` answers /healthz with its feed subscribed."""
    async with httpx.AsyncClient() as http:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                r = await http.get(f"http://127.0.0.1:{port}/healthz")
                if r.status_code == 200 and r.json().get("pubsub") == "subscribed":
                    return
            await asyncio.sleep(0.1)


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process in turn, then SIGKILL one that has not ended in 30 s."""
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _finals(p: Producer, sessions: list[str]) -> dict[str, int]:
    """One receipt per session: once it is back, everything before it is
    committed, and its change is the session's last."""
    receipts = await asyncio.gather(
        *(p.upsert(s, "mark", "user", {"text": "mark"}, wait=True, timeout=120) for s in sessions)
    )
    return {s: int(r.change or 0) for s, r in zip(sessions, receipts, strict=True)}


async def _fanout(p: Producer, sessions: list[str], entries: int) -> None:
    rnd = random.Random(7)
    made = dict.fromkeys(sessions, 0)
    batch = []
    for i in range(entries):
        s = sessions[rnd.randrange(len(sessions))]
        if made[s] and rnd.random() < 0.3:
            op, row = "upsert", f"r{max(0, made[s] - 1 - rnd.randrange(3))}"
        else:
            op, row = "append", f"r{made[s]}"
            made[s] += 1
        batch.append(make_entry(op, s, row, "assistant", {"text": "x" * 200, "i": i}))
        if len(batch) == 1000:
            await p.push_many(batch)
            batch = []
    if batch:
        await p.push_many(batch)


class Pusher(Protocol):
    """What ``_steady`` pushes through: a Producer, or the peer's publisher."""

    async def push_many(self, entries: Sequence[Entry]) -> list[str]: ...


async def _steady(p: Pusher, sessions: list[str], rate: int, seconds: float) -> int:
    """Appends at ``rate`` per second, in 10 ms ticks on an absolute schedule
    (without the publisher's own garbage collections, as the clients')."""
    gc.collect()
    gc.disable()
    try:
        return await _ticks(p, sessions, rate, seconds)
    finally:
        gc.enable()


async def _ticks(p: Pusher, sessions: list[str], rate: int, seconds: float) -> int:
    tick = 0.01
    start = time.monotonic()
    n = 0
    ticks = 0
    while time.monotonic() - start < seconds:
        ticks += 1
        due = int(rate * tick * ticks) - n
        now = time.time()
        batch = [
            make_entry(
                "append",
                sessions[(n + k) % len(sessions)],
                f"l{n + k}",
                "assistant",
                {"t": now, "text": "x" * 100},
            )
            for k in range(due)
        ]
        if batch:
            await p.push_many(batch)
            n += len(batch)
        await asyncio.sleep(max(0.0, start + ticks * tick - time.monotonic()))
    return n


async def _published(redis_url: str, channel: str, into: list[float]) -> None:
    """The write path's share: for each change published on ``channel``
    (``P:rows``, one server only) the time from its body's XADD stamp to its
    arrival here, one loopback hop after PUBLISH as a broadcaster sees it."""
    listener = cast(Redis, async_client(redis_url))
    pubsub = listener.pubsub()
    await pubsub.subscribe(channel)
    try:
        async for msg in pubsub.listen():
            now = time.time()
            if msg.get("type") != "message":
                continue
            for c in orjson.loads(msg["data"]).get("changes", ()):
                t = (c.get("body") or {}).get("t") if isinstance(c.get("body"), dict) else None
                if isinstance(t, float):
                    into.append(now - t)
    finally:
        await pubsub.aclose()
        await listener.aclose()


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


@dataclass
class Pipeline:
    """A running ``rowcast writer`` and ``rowcast broadcaster`` on ``port``."""

    port: int
    writer: subprocess.Popen[bytes]
    broadcaster: subprocess.Popen[bytes]
    producer: Producer
    redis_url: str
    prefix: str


@contextlib.asynccontextmanager
async def pipeline(clients: int) -> AsyncIterator[Pipeline]:
    """The real pipeline on its own database and key prefix, sized for
    ``clients`` WebSocket clients; stopped and cleaned up afterwards. Wait for
    it with ``wait_ready(pipe.port)``."""
    redis_url = os.environ.get("ROWCAST_REDIS_URL", "redis://127.0.0.1:6379/0")
    admin = os.environ.get("ROWCAST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = databases.create(admin, "rowcast_bbench")
    prefix = f"bbench{secrets.token_hex(3)}"
    db = databases.url_for(admin, name)
    migrate(db)
    port = _free_port()
    # The pipeline's own servers and prefix; tuning knobs (the linger, the
    # coalescing window) pass through, so they can be compared.
    kept = ("ROWCAST_LINGER_MS", "ROWCAST_BATCH_MAX", "ROWCAST_COALESCE_MS")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROWCAST_") or k in kept}
    env.update(ROWCAST_REDIS_URL=redis_url, ROWCAST_DATABASE_URL=db, ROWCAST_PREFIX=prefix)
    # Every client comes from 127.0.0.1: lift the per-address cap above them.
    env["ROWCAST_MAX_CONNECTIONS_PER_CLIENT"] = str(clients + 100)
    quiet = ["--log-level", "WARNING"]
    procs = [
        subprocess.Popen([ROWCAST, "writer", *quiet], env=env),
        subprocess.Popen([ROWCAST, "broadcaster", "--port", str(port), *quiet], env=env),
    ]
    redis = cast(Redis, async_client(redis_url))  # one server or a cluster
    producer = Producer(redis, prefix=prefix)
    try:
        yield Pipeline(port, procs[0], procs[1], producer, redis_url, prefix)
    finally:
        stop_all(list(reversed(procs)))
        keys = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await redis.delete(*keys)
        await producer.close()
        databases.drop(admin, name)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with pipeline(args.clients) as pipe:
        return await _measure(args, pipe)


async def _measure(args: argparse.Namespace, pipe: Pipeline) -> dict[str, Any]:
    producer, port, redis_url, prefix = pipe.producer, pipe.port, pipe.redis_url, pipe.prefix
    workers: Workers | None = None
    sessions = [f"bench-{i:03d}" for i in range(args.sessions)]
    out: dict[str, Any] = {"clients": args.clients, "sessions": args.sessions}
    try:
        async with asyncio.timeout(args.timeout):
            await wait_ready(port)
            workers = await Workers.start(port, sessions, args.clients, args.workers)
            await _finals(producer, sessions)  # every session exists, writer warm
            # Let every client catch up on the marks before measuring.
            await workers.ask({"cmd": "wait", "targets": dict.fromkeys(sessions, 1)})

            # 1. Fan-out.
            await workers.ask({"cmd": "reset"})
            t0 = time.time()
            await _fanout(producer, sessions, args.entries)
            finals = await _finals(producer, sessions)
            stats = await workers.ask({"cmd": "wait", "targets": finals})
            delivered = sum(s["count"] for s in stats)
            first = min(s["first"] for s in stats if s["first"])
            last = max(s["last"] for s in stats if s["last"])
            out["fanout"] = {
                "entries": args.entries,
                "changes_delivered": delivered,
                "seconds": round(last - first, 3),
                "delivered_per_s": round(delivered / max(last - first, 1e-9)),
                "entries_per_s_in": round(args.entries / max(last - t0, 1e-9)),
                "resyncs": sum(s["resyncs"] for s in stats),
            }

            # 2. Latency at a steady rate (and the write path's share of it).
            await workers.ask({"cmd": "reset"})
            written: list[float] = []
            listening = None
            if "+cluster" not in redis_url and "," not in redis_url:
                listening = asyncio.create_task(
                    _published(redis_url, Keys(prefix).channel, written)
                )
                await asyncio.sleep(0.2)  # subscribed before the first entry
            sent = await _steady(producer, sessions, args.rate, args.seconds)
            finals = await _finals(producer, sessions)
            stats = await workers.ask({"cmd": "wait", "targets": finals})
            if listening is not None:
                listening.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listening
            lat = [x for s in stats for x in s["latencies"]]
            out["latency"] = {
                "rate": args.rate,
                "entries": sent,
                "samples": len(lat),
                "p50_ms": round(_pct(lat, 0.50) * 1000, 2),
                "p99_ms": round(_pct(lat, 0.99) * 1000, 2),
                "mean_ms": round(statistics.fmean(lat) * 1000, 2) if lat else None,
                "resyncs": sum(s["resyncs"] for s in stats),
            }
            if written:
                out["latency"]["write_path_p50_ms"] = round(_pct(written, 0.50) * 1000, 2)
                out["latency"]["write_path_p99_ms"] = round(_pct(written, 0.99) * 1000, 2)
    finally:
        if workers is not None:
            await workers.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--entries", type=int, default=50_000, help="entries of the fan-out run")
    ap.add_argument("--rate", type=int, default=2000, help="entries/s of the latency run")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the latency run")
    ap.add_argument("--workers", type=int, default=2, help="client processes")
    ap.add_argument("--timeout", type=float, default=600.0, help="give up after this long")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    raise_nofile()
    runner = loop_runner()
    if args.worker:
        runner(worker(orjson.loads(args.worker)))
        return
    for name, low, high in (
        ("clients", 1, 20_000),
        ("sessions", 1, 10_000),
        ("entries", 1, 1_000_000),
        ("rate", 1, 100_000),
        ("workers", 1, 16),
    ):
        if not low <= getattr(args, name) <= high:
            ap.error(f"--{name} must be in {low}..{high}")
    if not 0 < args.seconds <= 300:
        ap.error("--seconds must be in (0, 300]")
    result = runner(run(args))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    f, lat = result["fanout"], result["latency"]
    print(
        f"fan-out: {f['delivered_per_s']:,} changes/s delivered to {args.clients} WebSocket"
        f" clients over {args.sessions} sessions ({f['changes_delivered']:,} in {f['seconds']} s,"
        f" {f['resyncs']} resyncs)"
    )
    print(
        f"latency at {args.rate} entries/s: p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms"
        f" (XADD to client receipt, {lat['samples']:,} samples)"
    )
    if "write_path_p50_ms" in lat:
        print(
            f"  of which the write path (XADD to PUBLISH, as a subscriber sees it):"
            f" p50 {lat['write_path_p50_ms']} ms, p99 {lat['write_path_p99_ms']} ms"
        )


if __name__ == "__main__":
    main()
