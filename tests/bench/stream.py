"""Streaming-answer benchmark: extend + deltas against full-body upserts.

    python -m tests.bench.stream [--sessions 100] [--clients 10] [--chunks 200]
        [--answer-bytes 4096] [--rate 20] [--workers 2] [--modes extend,upsert,throttled]

Each of ``--sessions`` sessions streams one answer of ``--answer-bytes`` in
``--chunks`` chunks at ``--rate`` chunks/s, watched by ``--clients`` WebSocket
clients per session. Three ways to move it, side by side in one run, on the
same servers and processes:

- ``extend``: one extend entry per chunk (only the new text), clients
  subscribed with ``"deltas": true``;
- ``upsert``: one upsert per chunk carrying the whole text so far;
- ``throttled``: upserts of the whole text at most 4 per second per row (every
  ``rate / 4`` chunks) and one at the end.

Reported per mode: bytes XADDed to the entries stream (field names and
values), bytes sent to clients (WebSocket payloads), CPU of the broadcaster
per delivered chunk (chunks x clients), CPU of the writer and of PostgreSQL
per chunk, WAL bytes per chunk (``pg_current_wal_lsn`` before and after), and
p50/p99 chunk latency: from the moment a chunk exists (its XADD, or for the
throttled mode its generation) to the first change a client receives that
includes it.

It starts its own Valkey and PostgreSQL (embedded, in a temporary folder, on
free ports) so that the WAL and the server CPU it measures are its own, and
one ``rowcast writer`` and one ``rowcast broadcaster`` process. The machine is
shared: compare the modes within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psutil
import psycopg
from redis.asyncio import Redis

from rowcast.ops.embedded import servers
from rowcast.ops.schema.migrate import migrate
from rowcast.producers import Producer, make_entry
from tests.bench.clients import Client, Workers, raise_nofile
from tests.bench.fanout import _free_port, _pct, loop_runner, stop_all, wait_ready

ROWCAST = str(Path(sys.executable).parent / "rowcast")
ROW = "answer"


# ---------------------------------------------------------------- clients


class _Watcher(Client):
    """A lean WebSocket client (fanout's) that logs when each revision of the
    answer row arrives and counts the bytes it is sent."""

    def __init__(self, port: int, session: str, deltas: bool, stats: dict[str, Any]) -> None:
        super().__init__("127.0.0.1", port, session, stats)
        self.deltas = deltas
        self.log: list[tuple[int, float]] = []
        self.bytes = 0

    def _send(self, opcode: int, payload: bytes) -> None:
        if self.deltas and payload.startswith(b'{"type":"subscribe"'):
            payload = payload[:-1] + b',"deltas":true}'
        super()._send(opcode, payload)

    def _message(self, raw: bytes, now: float) -> None:
        self.bytes += len(raw)
        super()._message(raw, now)

    def _rows(self, changes: list[dict[str, Any]], now: float) -> None:
        for c in changes:
            if c["change"] > self.cursor:
                self.cursor = c["change"]
            if c["row"] == ROW:
                self.log.append((c["revision"], now))


async def _worker(config: dict[str, Any]) -> None:
    stats: dict[str, Any] = {"resyncs": 0, "reconnects": 0}
    clients = [_Watcher(config["port"], s, config["deltas"], stats) for s in config["sessions"]]
    tasks = []
    for i, c in enumerate(clients):
        tasks.append(asyncio.create_task(c.run()))
        if i % 50 == 49:
            await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def answer(data: Any) -> None:
        sys.stdout.buffer.write(orjson.dumps(data) + b"\n")
        sys.stdout.flush()

    answer({"ready": True})
    while line := await reader.readline():
        cmd = orjson.loads(line)
        if cmd["cmd"] == "wait":
            targets: dict[str, int] = cmd["targets"]
            while any(c.cursor < targets.get(c.session, 0) for c in clients):
                await asyncio.sleep(0.05)
            answer({"ok": True})
        elif cmd["cmd"] == "reset":
            for c in clients:
                c.log, c.bytes = [], 0
            answer({"ok": True})
        elif cmd["cmd"] == "report":
            answer(
                {
                    **stats,
                    "clients": [
                        {"session": c.session, "log": c.log, "bytes": c.bytes} for c in clients
                    ],
                }
            )
        elif cmd["cmd"] == "quit":
            break
    for t in tasks:
        t.cancel()


class _Workers(Workers):
    """fanout's client processes, running this module's watchers."""

    @classmethod
    async def begin(cls, port: int, sessions: list[str], per: int, n: int, deltas: bool) -> Workers:
        assignment = [s for s in sessions for _ in range(per)]
        return await cls.spawn("tests.bench.stream", port, assignment, n, deltas=deltas)


# ---------------------------------------------------------------- producing


def _answer(size: int, chunks: int) -> list[str]:
    """An answer of ``size`` ASCII bytes in ``chunks`` pieces."""
    words = ("streaming ", "tokens ", "arrive ", "one ", "by ", "one, ", "quickly. ")
    text = "".join(words[i % len(words)] for i in range(size))[:size]
    step = size / chunks
    return [text[round(i * step) : round((i + 1) * step)] for i in range(chunks)]


class _Stream:
    """One session's answer: what was sent, when, and which revision holds which chunks."""

    def __init__(self, session: str, pieces: list[str]) -> None:
        self.session = session
        self.pieces = pieces
        self.born: list[float] = []  # chunk k exists (sent, or generated when throttled)
        self.upto: dict[int, int] = {0: 0}  # revision -> chunks it includes
        self.xadd_bytes = 0


async def _play(p: Producer, st: _Stream, mode: str, rate: float) -> None:
    tick = 1 / rate
    every = max(1, round(rate / 4))  # throttled: 4 upserts per second
    start = time.monotonic()
    revision = 0
    text = ""
    for k, piece in enumerate(st.pieces, 1):
        await asyncio.sleep(max(0.0, start + k * tick - time.monotonic()))
        text += piece
        st.born.append(time.time())
        if mode == "extend":
            entry = make_entry("extend", st.session, ROW, "assistant", {"text": piece})
        elif mode == "upsert" or k % every == 0 or k == len(st.pieces):
            entry = make_entry("upsert", st.session, ROW, "assistant", {"text": text})
        else:
            continue
        revision += 1
        st.upto[revision] = k
        st.xadd_bytes += sum(len(f) + len(v) for f, v in entry.fields().items())
        await p.push_many([entry])


# ---------------------------------------------------------------- measuring


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for pr in procs:
        with contextlib.suppress(psutil.Error):
            t = pr.cpu_times()
            total += t.user + t.system
    return total


def _cluster(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _pg_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each process of the PostgreSQL cluster (backends come and go)."""
    out = {}
    for pr in _cluster(pid):
        with contextlib.suppress(psutil.Error):
            t = pr.cpu_times()
            out[pr.pid] = t.user + t.system
    return out


def _wal(db: str) -> int:
    with psycopg.connect(db, autocommit=True) as c:
        row = c.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint").fetchone()
    assert row is not None
    return int(row[0])


def _latencies(streams: dict[str, _Stream], clients: list[dict[str, Any]]) -> list[float]:
    """For every client and chunk: first arrival of a revision including it, minus its birth."""
    out: list[float] = []
    for c in clients:
        st = streams[c["session"]]
        k = 0  # chunks this client has seen so far
        for revision, at in c["log"]:
            upto = st.upto.get(revision, 0)
            while k < upto:
                out.append(at - st.born[k])
                k += 1
    return out


async def _mode(
    args: argparse.Namespace, mode: str, env: dict[str, str], urls: tuple[str, str], pg_pid: int
) -> dict[str, Any]:
    redis_url, db = urls
    prefix = f"deltas{mode}"
    env = {**env, "ROWCAST_PREFIX": prefix}
    port = _free_port()
    quiet = ["--log-level", "WARNING"]
    writer = subprocess.Popen([ROWCAST, "writer", *quiet], env=env)
    bcast = subprocess.Popen([ROWCAST, "broadcaster", "--port", str(port), *quiet], env=env)
    redis = Redis.from_url(redis_url)
    producer = Producer(redis, prefix=prefix)
    workers: _Workers | None = None
    sessions = [f"{mode}-{i:03d}" for i in range(args.sessions)]
    pieces = _answer(args.answer_bytes, args.chunks)
    try:
        await wait_ready(port)
        workers = await _Workers.begin(port, sessions, args.clients, args.workers, mode == "extend")
        first = await asyncio.gather(
            *(producer.append(s, ROW, "assistant", {"text": ""}, wait=True) for s in sessions)
        )
        await workers.ask(
            {
                "cmd": "wait",
                "targets": {s: int(r.change or 0) for s, r in zip(sessions, first, strict=True)},
            }
        )
        await workers.ask({"cmd": "reset"})
        procs = [psutil.Process(writer.pid), psutil.Process(bcast.pid)]
        cpu0 = [_cpu([pr]) for pr in procs]
        pg0, wal0 = _pg_cpu(pg_pid), _wal(db)
        streams = {s: _Stream(s, pieces) for s in sessions}
        t0 = time.monotonic()
        await asyncio.gather(*(_play(producer, st, mode, args.rate) for st in streams.values()))
        marks = await asyncio.gather(
            *(
                producer.append(s, "mark", "user", {"text": "done"}, wait=True, timeout=120)
                for s in sessions
            )
        )
        await workers.ask(
            {
                "cmd": "wait",
                "targets": {s: int(r.change or 0) for s, r in zip(sessions, marks, strict=True)},
            }
        )
        seconds = time.monotonic() - t0
        cpu1 = [_cpu([pr]) for pr in procs]
        pg1, wal1 = _pg_cpu(pg_pid), _wal(db)
        reports = await workers.ask({"cmd": "report"})
        with psycopg.connect(db) as c:
            n = c.execute(
                "SELECT count(*) FROM rowcast.rows WHERE row_id = %s AND session_id = ANY(%s)"
                " AND body->>'text' = %s",
                (ROW, sessions, "".join(pieces)),
            ).fetchone()
        assert n is not None and n[0] == len(sessions), "an answer is not whole in PostgreSQL"
    finally:
        if workers is not None:
            await workers.stop()
        stop_all([bcast, writer])
        await producer.close()
    clients = [c for r in reports for c in r["clients"]]
    lat = _latencies(streams, clients)
    chunks = args.sessions * args.chunks
    delivered = chunks * args.clients
    pg_cpu = sum(v - pg0.get(pid, 0.0) for pid, v in pg1.items())
    xadd = sum(st.xadd_bytes for st in streams.values())
    sent = sum(c["bytes"] for c in clients)
    return {
        "mode": mode,
        "seconds": round(seconds, 2),
        "xadd_bytes": xadd,
        "client_bytes": sent,
        "broadcaster_cpu_us_per_delivered_chunk": round((cpu1[1] - cpu0[1]) / delivered * 1e6, 2),
        "writer_cpu_us_per_chunk": round((cpu1[0] - cpu0[0]) / chunks * 1e6, 2),
        "postgres_cpu_us_per_chunk": round(pg_cpu / chunks * 1e6, 2),
        "wal_bytes_per_chunk": round((wal1 - wal0) / chunks, 1),
        "latency_p50_ms": round(_pct(lat, 0.5) * 1000, 1),
        "latency_p99_ms": round(_pct(lat, 0.99) * 1000, 1),
        "latency_mean_ms": round(statistics.fmean(lat) * 1000, 1) if lat else None,
        "latency_samples": len(lat),
        "resyncs": sum(r["resyncs"] for r in reports),
    }


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="deltas-bench-") as tmp:
        emb = servers.start(tmp)
        try:
            assert emb.redis is not None and emb.postgres is not None
            redis_url, db = emb.redis.url, emb.postgres.url
            migrate(db)
            env = {k: v for k, v in os.environ.items() if not k.startswith("ROWCAST_")}
            env.update(ROWCAST_REDIS_URL=redis_url, ROWCAST_DATABASE_URL=db)
            out = []
            for mode in args.modes.split(","):
                out.append(await _mode(args, mode, env, (redis_url, db), emb.postgres.pid))
                print(orjson.dumps(out[-1]).decode(), file=sys.stderr)
            return out
        finally:
            emb.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--clients", type=int, default=10, help="WebSocket clients per session")
    ap.add_argument("--chunks", type=int, default=200)
    ap.add_argument("--answer-bytes", type=int, default=4096)
    ap.add_argument("--rate", type=float, default=20.0, help="chunks per second per session")
    ap.add_argument("--workers", type=int, default=2, help="client processes")
    ap.add_argument("--modes", default="extend,upsert,throttled")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    raise_nofile()
    runner = loop_runner()
    if args.worker:
        runner(_worker(orjson.loads(args.worker)))
        return
    for name, low, high in (
        ("sessions", 1, 1000),
        ("clients", 1, 100),
        ("chunks", 1, 10_000),
        ("answer_bytes", 1, 1 << 20),
        ("workers", 1, 16),
    ):
        if not low <= getattr(args, name) <= high:
            ap.error(f"--{name.replace('_', '-')} must be in {low}..{high}")
    if not 0 < args.rate <= 1000:
        ap.error("--rate must be in (0, 1000]")
    if set(args.modes.split(",")) - {"extend", "upsert", "throttled"}:
        ap.error("--modes: extend, upsert, throttled")
    results = runner(run(args))
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    base = {r["mode"]: r for r in results}.get("upsert")
    for r in results:
        ratio = ""
        if base and r is not base:
            ratio = (
                f" | vs upsert: XADD {r['xadd_bytes'] / base['xadd_bytes']:.3f}x,"
                f" to clients {r['client_bytes'] / base['client_bytes']:.3f}x"
            )
        print(
            f"{r['mode']:>9}: XADD {r['xadd_bytes']:,} B, to clients {r['client_bytes']:,} B,"
            f" broadcaster {r['broadcaster_cpu_us_per_delivered_chunk']} us/delivered chunk,"
            f" writer {r['writer_cpu_us_per_chunk']} us/chunk,"
            f" PostgreSQL {r['postgres_cpu_us_per_chunk']} us/chunk,"
            f" WAL {r['wal_bytes_per_chunk']} B/chunk,"
            f" latency p50 {r['latency_p50_ms']} ms p99 {r['latency_p99_ms']} ms{ratio}"
        )


if __name__ == "__main__":
    main()
