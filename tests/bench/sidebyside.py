"""Fan-out latency side by side, in one sitting: rowcast and encode/broadcaster.

    python -m tests.bench.sidebyside [--clients 1000] [--sessions 100]
        [--rates 10,1000,2000] [--seconds 20] [--workers 2] [--peer] [--pin]
        [--peer-venv /tmp/rowcast-peer-venv]

For each rate in ``--rates`` (entries/s), rowcast and then, with ``--peer``,
encode/broadcaster 0.3.1 (tests/bench/peer.py: Redis pub/sub straight to the
sockets, no persistence) are measured with the same client harness
(fanout.py's worker processes, ``--clients`` over ``--sessions``), the same
steady producer (fanout.py's ``_steady``: each body stamped with the time of
its push) and the same pinning. rowcast gets XADDs through its writer; the
peer gets a PUBLISH of the change rowcast would send, on the session's
channel. Each measurement uses sessions of its own, so no client is sent
another run's history.

``--pin`` puts the server (rowcast's broadcaster, or the peer) on CPU 0 and
the clients and the publisher on CPU 1; rowcast's writer, PostgreSQL and Redis
float. Printed: one table of rate, stack, deliveries/s, p50/p99 of push to
client receipt, the server's CPU per delivery (utime+stime from
/proc/<pid>/stat over the run, divided by the deliveries) and the changes not
delivered within ``--drain`` seconds after the run.

The peer's venv is made on demand outside the repository (peer.py); when it
cannot be made, the peer is skipped with the reason and rowcast's rows are
still printed. Needs ROWCAST_REDIS_URL (one server) and an admin
ROWCAST_DATABASE_URL, as fanout.py. Loopback only; bounded by the arguments
and ``--timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import secrets
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from redis.asyncio import Redis

from rowcast.contract.change import Change
from rowcast.contract.connection import async_client
from rowcast.contract.entry import Entry
from rowcast.producers import make_entry
from tests.bench import clients, fanout, peer


@dataclass
class Server:
    """One stack as the measurement sees it."""

    name: str
    port: int
    pid: int
    """The process whose CPU is counted and pinned to CPU 0."""


class PeerPublisher:
    """PUBLISHes each entry as the change rowcast would send for it (change
    numbers counted per session here), one pipeline per call."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis, self.prefix = redis, prefix
        self.last: dict[str, int] = {}

    async def push_many(self, entries: Sequence[Entry]) -> list[str]:
        pipe = self.redis.pipeline(transaction=False)
        for e in entries:
            n = self.last[e.session] = self.last.get(e.session, 0) + 1
            change = Change(e.session, e.row, n, 1, n, e.kind, e.body)
            pipe.publish(f"{self.prefix}:{e.session}", change.to_json())
        await pipe.execute()
        return []


def _cpu(pid: int) -> float:
    """utime + stime of ``pid`` in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pin(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` onto ``cpus`` (threads started later inherit)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), cpus)


async def _warm_peer(pub: PeerPublisher, workers: clients.Workers, sessions: list[str]) -> None:
    """Pub/sub keeps nothing: publish marks until every client has one."""
    waiting = asyncio.ensure_future(
        workers.ask({"cmd": "wait", "targets": dict.fromkeys(sessions, 1), "timeout": 60})
    )
    marks = [make_entry("upsert", s, "mark", "user", {"text": "mark"}) for s in sessions]
    while not waiting.done():
        await pub.push_many(marks)
        await asyncio.wait([waiting], timeout=0.2)
    if behind := sum(s["behind"] for s in waiting.result()):
        raise RuntimeError(f"peer: {behind} clients got no mark in 60 s")


_runs = itertools.count()


async def _measure(
    args: argparse.Namespace,
    server: Server,
    rate: int,
    push: fanout.Pusher,
    pipe: fanout.Pipeline | None,
) -> dict[str, Any]:
    run = next(_runs)  # a rate may be asked for twice: each run its own sessions
    sessions = [f"{server.name}{rate}-{run}-{i:03d}" for i in range(args.sessions)]
    workers = await clients.Workers.start(server.port, sessions, args.clients, args.workers)
    try:
        if args.pin:
            for p in workers.procs:
                _pin(p.pid, {1})
        if pipe is not None:
            await fanout._finals(pipe.producer, sessions)
            await workers.ask({"cmd": "wait", "targets": dict.fromkeys(sessions, 1)})
        else:
            await _warm_peer(cast(PeerPublisher, push), workers, sessions)
        await workers.ask({"cmd": "reset"})
        cpu = _cpu(server.pid)
        sent = await fanout._steady(push, sessions, rate, args.seconds)
        if pipe is not None:
            targets = await fanout._finals(pipe.producer, sessions)
        else:
            targets = dict(cast(PeerPublisher, push).last)
        wait = {"cmd": "wait", "targets": targets, "timeout": args.drain}
        stats = await workers.ask(wait)
        cpu = _cpu(server.pid) - cpu
    finally:
        await workers.stop()
    lat = [x for s in stats for x in s["latencies"]]
    watching = Counter(sessions[i % len(sessions)] for i in range(args.clients))
    expected = sum(watching[sessions[k % len(sessions)]] for k in range(sent))
    firsts = [s["first"] for s in stats if s["first"]]
    span = max((s["last"] for s in stats if s["last"]), default=0.0) - min(firsts, default=0.0)
    return {
        "rate": rate,
        "stack": server.name,
        "entries": sent,
        "deliveries": len(lat),
        "deliveries_per_s": round(len(lat) / span) if span > 0 else 0,
        "p50_ms": round(fanout._pct(lat, 0.50) * 1000, 2),
        "p99_ms": round(fanout._pct(lat, 0.99) * 1000, 2),
        "cpu_us_per_delivery": round(cpu / len(lat) * 1e6, 1) if lat else None,
        "missed": expected - len(lat),
        "resyncs": sum(s["resyncs"] for s in stats),
    }


@contextlib.asynccontextmanager
async def _peer_server(python: Path, redis_url: str) -> Any:
    """The peer on a free loopback port: (Server, its publisher)."""
    prefix = f"peerbench{secrets.token_hex(3)}"
    port = fanout._free_port()
    proc = subprocess.Popen(peer.command(python, port, redis_url, prefix))
    redis = cast(Redis, async_client(redis_url))
    try:
        async with asyncio.timeout(30):
            await fanout.wait_ready(port)
        yield Server("bc", port, proc.pid), PeerPublisher(redis, prefix)
    finally:
        fanout.stop_all([proc])
        await redis.aclose()


async def run(
    args: argparse.Namespace, peer_python: Path | None
) -> tuple[list[dict[str, Any]], str | None]:
    """The rows, and why the peer was skipped once its venv was there."""
    rows: list[dict[str, Any]] = []
    skipped = None
    everywhere = os.sched_getaffinity(0)
    async with contextlib.AsyncExitStack() as stack:
        pipe = await stack.enter_async_context(fanout.pipeline(args.clients))
        async with asyncio.timeout(args.timeout):
            await fanout.wait_ready(pipe.port)
            rowcast = Server("rowcast", pipe.port, pipe.broadcaster.pid)
            stacks: list[tuple[Server, fanout.Pusher, fanout.Pipeline | None]] = [
                (rowcast, pipe.producer, pipe)
            ]
            if peer_python is not None:
                try:
                    server, pub = await stack.enter_async_context(
                        _peer_server(peer_python, pipe.redis_url)
                    )
                    stacks.append((server, pub, None))
                except (TimeoutError, OSError) as e:
                    skipped = f"the peer did not start ({e!r})"
                    print(f"peer: {skipped}", file=sys.stderr, flush=True)
            if args.pin:
                _pin(pipe.writer.pid, everywhere)
                for server, _, _ in stacks:
                    _pin(server.pid, {0})
                _pin(os.getpid(), {1})  # the publisher; client workers inherit it
            for rate in args.rates:
                for server, push, p in stacks:
                    row = await _measure(args, server, rate, push, p)
                    rows.append(row)
                    print(_line(row), file=sys.stderr, flush=True)
    return rows, skipped


def _line(r: dict[str, Any]) -> str:
    cpu = "-" if r["cpu_us_per_delivery"] is None else f"{r['cpu_us_per_delivery']:.1f}"
    return (
        f"| {r['rate']:,} | {r['stack']} | {r['deliveries_per_s']:,} | {r['p50_ms']:.2f}"
        f" | {r['p99_ms']:.1f} | {cpu} | {r['missed']:,} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--rates", default="10,1000,2000", help="entries/s, comma-separated")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each run")
    ap.add_argument("--workers", type=int, default=2, help="client processes")
    ap.add_argument("--peer", action="store_true", help="measure encode/broadcaster too")
    ap.add_argument("--peer-venv", type=Path, default=peer.VENV)
    ap.add_argument("--pin", action="store_true", help="server on CPU 0, load on CPU 1")
    ap.add_argument("--drain", type=float, default=30.0, help="wait this long for stragglers")
    ap.add_argument("--timeout", type=float, default=900.0, help="give up after this long")
    args = ap.parse_args()
    try:
        args.rates = [int(r) for r in args.rates.split(",")]
    except ValueError:
        ap.error("--rates takes integers separated by commas")
    for name, value, low, high in (
        ("clients", args.clients, 1, 20_000),
        ("sessions", args.sessions, 1, 10_000),
        ("workers", args.workers, 1, 16),
        ("rates", len(args.rates), 1, 10),
        *(("rates", r, 1, 100_000) for r in args.rates),
    ):
        if not low <= value <= high:
            ap.error(f"--{name} must be in {low}..{high}")
    if not 0 < args.seconds <= 300 or not 0 < args.drain <= 600:
        ap.error("--seconds must be in (0, 300] and --drain in (0, 600]")
    if args.pin and not {0, 1} <= os.sched_getaffinity(0):
        ap.error("--pin needs CPUs 0 and 1")
    peer_python, why = None, "not asked for (--peer)"
    if args.peer:
        print(f"peer venv: {args.peer_venv} ...", file=sys.stderr, flush=True)
        peer_python, why = peer.ensure_venv(args.peer_venv)
        print(f"peer venv: {why}", file=sys.stderr, flush=True)
    clients.raise_nofile()
    rows, skipped = fanout.loop_runner()(run(args, peer_python))
    why = skipped or why
    print(
        f"\n{args.clients} clients over {args.sessions} sessions, {args.seconds:g} s per run,"
        f" pinned: {'server CPU 0, clients and publisher CPU 1' if args.pin else 'no'}\n"
    )
    print("| events/s | stack | deliveries/s | p50 ms | p99 ms | server µs CPU / delivery"
          " | missed |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(_line(r))
    if peer_python is None or skipped:
        print(f"\nencode/broadcaster skipped: {why}")
    else:
        print("\nbc: encode/broadcaster 0.3.1 (Redis pub/sub to the sockets, no persistence)")


if __name__ == "__main__":
    main()
