"""The write path's idle floor, stage by stage: one entry at a time.

    python -m tests.bench.floor [--entries 200] [--gap-ms 100] [--rate 0]

Runs one shard's writer in this process (the same ``run_writers`` that
``rowcast writer`` runs) with a timer around each of its stages, appends one
entry every ``--gap-ms`` (an idle pipeline: nothing to batch with), and
listens on ``P:rows`` as a broadcaster would. Per entry, from the moment its
XADD is sent:

- wake and read: the writer's blocking XREAD wakes and the lease-guarded
  XREADGROUP script sent with it returns the entry (the XADD's own round
  trip, the wake-up and the read in one);
- commit: ``apply_batch`` and its COMMIT (one statement, one round trip);
- publish: the after-commit script (rows stream, PUBLISH, receipts, XACK);
- seen: the message reaches a subscriber (a process of its own, on uvloop,
  as a broadcaster is).

With ``--screen`` the subscriber is a real broadcaster (tests/bench/screen.py:
``rowcast broadcaster`` with timers wrapped around its hub and its writes)
and a WebSocket client of session ``floor``, each a process of its own: "to
subscriber" then ends when the broadcaster's feed hands the message to the
hub, and three stages follow, "hub and write" (routing, then the frame
written to the socket: at once on a quiet connection, or after a coalescing
window by the connection's sender), "to client" (the client has read it)
and "on screen", XADD to the client in all.

With ``--rate R``, a separate process appends R entries/s to 100 other
sessions (fanout.py's steady producer, 10 ms ticks) while the probe entries
run: the same breakdown under load, where "to commit" is the linger and the
wait behind the batch in flight, and each stage's time is that of the batch
that carried the probe.

Each stage is reported as p50/p99 of its own duration, with the hand-overs
between them ("to commit": from the read to the commit's start, through the
reader's queue; "to subscriber": from the script's answer to the message's
arrival), and "seen" as the total. The timers wrap methods from outside
(this file only), so the writer runs unchanged. Needs ROWCAST_REDIS_URL (one server) and an admin
ROWCAST_DATABASE_URL; its own database and key prefix. Loopback only, bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
from redis.asyncio import Redis

from rowcast.contract.connection import async_client
from rowcast.contract.keys import Keys
from rowcast.ops.commands.loop import run_loop
from rowcast.ops.commands.runner import run_writers
from rowcast.ops.schema.migrate import migrate
from rowcast.ops.settings import Settings
from rowcast.producers import Producer
from rowcast.writer.lease import Lease
from rowcast.writer.publish import Outcome, Publisher
from rowcast.writer.store import Store
from tests import databases
from tests.bench.fanout import _free_port, _steady, wait_ready

STAGES = (
    "wake and read", "to commit", "commit", "to publish", "publish", "to subscriber", "seen",
    "hub and write", "to client", "on screen",
)  # fmt: skip


class Marks:
    """(stage, start, end) of the calls that carried the probe entry in
    flight (its session and row), perf_counter seconds."""

    def __init__(self) -> None:
        self.items: list[tuple[str, float, float]] = []
        self.probe = (b"", b"")

    def timed(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        async def run(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            out = await fn(*args, **kwargs)
            if self.probe in _carried(args, out):
                self.items.append((stage, start, time.perf_counter()))
            return out

        return run


def _carried(args: tuple[Any, ...], out: Any) -> set[tuple[bytes, bytes]]:
    """(session, row) of what a wrapped call read, committed or published."""
    if isinstance(out, list):  # Lease.read*: [(id, fields)]
        return {(f.get(b"session", b""), f.get(b"row", b"")) for _, f in out}
    if len(args) >= 5 and isinstance(args[4], list):  # Store.apply(self, fence, first, last, valid)
        return {(v.fields.get(b"session", b""), v.fields.get(b"row", b"")) for v in args[4]}
    if len(args) >= 2 and isinstance(args[1], Outcome):  # Publisher.publish(self, out)
        return {(c.session.encode(), c.row.encode()) for c in args[1].changes}
    return set()


def _stages(marks: list[tuple[str, float, float]], sent: float, seen: float) -> dict[str, float]:
    """Consecutive segments from the XADD to the subscriber, so they add up
    to "seen": each stage's own time and the hand-over before the next. The
    marks are those of the calls that carried the entry."""
    first: dict[str, tuple[float, float]] = {}
    for stage, start, end in marks:
        if stage not in first:
            first[stage] = (start, end)
    out: dict[str, float] = {}
    at = sent
    for stage in ("wake and read", "commit", "publish"):
        if stage not in first:
            continue
        start, end = first[stage]
        if stage == "publish":
            # The script's PUBLISH may reach the subscriber before its answer
            # reaches the writer: the stage ends with whichever comes first.
            end = min(end, seen)
        if stage != "wake and read":
            out[f"to {stage}"] = max(0.0, start - at)
        out[stage] = end - max(start, at)
        at = end
    out["to subscriber"] = seen - at
    out["seen"] = seen - sent
    return out


async def _listen(channel: str) -> None:
    """The subscriber process: a line when subscribed, then "<perf_counter>
    <row>" for each probe change (session ``floor``) as it arrives."""
    url = os.environ.get("ROWCAST_REDIS_URL", "redis://127.0.0.1:6379/0")
    redis = Redis.from_url(url)
    pubsub = redis.pubsub()
    await pubsub.subscribe(channel)
    await pubsub.get_message(timeout=5)
    print("subscribed", flush=True)
    async for msg in pubsub.listen():
        at = time.perf_counter()
        if msg["type"] != "message":
            continue
        for c in orjson.loads(msg["data"]).get("changes", ()):
            if c.get("session") == "floor":
                print(f"{at:.6f} {c['row']}", flush=True)


async def _load(rate: int, prefix: str, seconds: float) -> None:
    url = os.environ.get("ROWCAST_REDIS_URL", "redis://127.0.0.1:6379/0")
    producer = Producer(async_client(url), prefix=prefix, shards=1)
    try:
        await _steady(producer, [f"load-{i:03d}" for i in range(100)], rate, seconds)
    finally:
        await producer.close()


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


class Screen:
    """The broadcaster and the client of ``--screen``, each a process."""

    def __init__(self, redis_url: str, db: str, prefix: str) -> None:
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROWCAST_")}
        env.update(ROWCAST_REDIS_URL=redis_url, ROWCAST_DATABASE_URL=db, ROWCAST_PREFIX=prefix)
        env.update(ROWCAST_SHARDS="1")
        self.env = env
        self.marks: dict[tuple[str, str], float] = {}
        self.direct = 0
        """Probe changes written at once by the hub (the rest: by a sender)."""

    async def start(self) -> None:
        module = [sys.executable, "-m", "tests.bench.screen"]
        pipe = asyncio.subprocess.PIPE
        self.server = await asyncio.create_subprocess_exec(
            *module, "--serve", str(self.port), env=self.env, stdout=pipe
        )
        await asyncio.wait_for(wait_ready(self.port), 30)
        self.client = await asyncio.create_subprocess_exec(
            *module, "--client", str(self.port), stdout=pipe
        )
        assert self.client.stdout is not None
        await asyncio.wait_for(self.client.stdout.readline(), 30)  # subscribed

    async def seen(self, row: str) -> tuple[float, float, float]:
        """(hub, write, client) times of the probe change ``row``."""
        assert self.client.stdout is not None and self.server.stdout is not None
        while True:
            at, got = (await asyncio.wait_for(self.client.stdout.readline(), 30)).split()
            if got.decode() == row:
                break
        while ("hub", row) not in self.marks or ("write", row) not in self.marks:
            line = (await asyncio.wait_for(self.server.stdout.readline(), 30)).split()
            self.marks[(line[0].decode(), line[2].decode())] = float(line[1])
            self.direct += line[0] == b"write" and line[3] == b"direct"
        return self.marks.pop(("hub", row)), self.marks.pop(("write", row)), float(at)

    async def stop(self) -> None:
        for proc in (self.client, self.server):
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()


async def run(
    entries: int, gap: float, rate: int, screen: bool = False
) -> dict[str, tuple[float, float]]:
    redis_url = os.environ.get("ROWCAST_REDIS_URL", "redis://127.0.0.1:6379/0")
    admin = os.environ.get("ROWCAST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = databases.create(admin, "rowcast_floor")
    db = databases.url_for(admin, name)
    migrate(db)
    prefix = f"floor{secrets.token_hex(3)}"
    settings = Settings.from_env(
        {"ROWCAST_REDIS_URL": redis_url, "ROWCAST_DATABASE_URL": db, "ROWCAST_PREFIX": prefix,
         "ROWCAST_SHARDS": "1"}
    )  # fmt: skip
    marks = Marks()
    originals = {
        (Lease, "read"): Lease.read,
        (Store, "apply"): Store.apply,
        (Publisher, "publish"): Publisher.publish,
        (Lease, "read_when_added"): Lease.read_when_added,
    }
    stage_of = {
        "read": "wake and read", "read_when_added": "wake and read", "apply": "commit",
        "publish": "publish",
    }  # fmt: skip
    for (cls, attr), fn in originals.items():
        setattr(cls, attr, marks.timed(stage_of[attr], fn))
    stop = asyncio.Event()
    writer = asyncio.create_task(run_writers(settings, [0], stop, spread=False))
    redis = Redis.from_url(redis_url)
    producer = Producer(async_client(redis_url), prefix=prefix, shards=1)
    got: dict[str, list[float]] = {s: [] for s in STAGES}
    load: subprocess.Popen[bytes] | None = None
    try:
        await producer.append("warm", "w", "user", {"text": "warm"}, wait=True, timeout=60)
        if rate:
            seconds = entries * gap + 5
            cmd = [sys.executable, "-m", "tests.bench.floor", "--load", str(rate)]
            cmd += ["--load-prefix", prefix, "--load-seconds", str(seconds)]
            load = subprocess.Popen(cmd)
            await asyncio.sleep(2)  # the load runs before the first probe
        # The subscriber is a process of its own, as a broadcaster is: it
        # prints when each probe's change arrived (perf_counter is the
        # machine's monotonic clock, the same in every process).
        if screen:
            shown = Screen(redis_url, db, prefix)
            await shown.start()
            await producer.append("floor", "warm", "user", {"i": -1})
            await shown.seen("warm")  # the client's subscription is live
        else:
            listener = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.bench.floor", "--listen", Keys(prefix).channel,
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert listener.stdout is not None
            await asyncio.wait_for(listener.stdout.readline(), 30)  # subscribed
        for i in range(entries):
            await asyncio.sleep(gap)
            marks.items.clear()
            marks.probe = (b"floor", f"r{i}".encode())
            sent = time.perf_counter()
            await producer.append("floor", f"r{i}", "user", {"i": i})
            if screen:
                hub, written, shown_at = await shown.seen(f"r{i}")
                extra = {
                    "hub and write": written - hub,
                    "to client": shown_at - written,
                    "on screen": shown_at - sent,
                }
                stages = {**_stages(marks.items, sent, hub), **extra}
            else:
                while True:
                    line = await asyncio.wait_for(listener.stdout.readline(), 10)
                    at, row = line.split()
                    if row == b"r%d" % i:
                        break
                stages = _stages(marks.items, sent, float(at))
            for stage, value in stages.items():
                got[stage].append(value)
        if screen:
            await shown.stop()
            print(f"written at once by the hub: {shown.direct - 1} of {entries}")  # - warm-up
        else:
            listener.terminate()
            await listener.wait()
    finally:
        if load is not None:
            load.terminate()
            load.wait()
        stop.set()
        await writer
        for (cls, attr), fn in originals.items():
            setattr(cls, attr, fn)
        keys = [k async for k in redis.scan_iter(match=f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        await producer.close()
        databases.drop(admin, name)
    return {s: (_pct(v, 0.5), _pct(v, 0.99)) for s, v in got.items() if v}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--entries", type=int, default=200)
    ap.add_argument("--gap-ms", type=float, default=100.0)
    ap.add_argument("--rate", type=int, default=0, help="entries/s of load beside the probes")
    ap.add_argument("--screen", action="store_true", help="through a broadcaster to a client")
    ap.add_argument("--load", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--load-prefix", help=argparse.SUPPRESS)
    ap.add_argument("--load-seconds", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--listen", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.listen is not None:  # the subscriber process
        run_loop(_listen(args.listen))
        return
    if args.load is not None:  # the load process of --rate
        asyncio.run(_load(args.load, args.load_prefix, args.load_seconds))
        return
    if not 1 <= args.entries <= 10_000 or not 0 <= args.gap_ms <= 10_000:
        ap.error("--entries must be in 1..10000 and --gap-ms in 0..10000")
    if not 0 <= args.rate <= 50_000:
        ap.error("--rate must be in 0..50000")
    result: dict[str, tuple[float, float]] = {}

    async def main() -> None:
        result.update(await run(args.entries, args.gap_ms / 1000, args.rate, args.screen))

    run_loop(main())  # the writer's own loop (uvloop)
    load = f", beside {args.rate} entries/s" if args.rate else ""
    print(f"{args.entries} entries, one every {args.gap_ms:g} ms{load} (ms, p50 / p99):")
    for stage in STAGES:
        if stage in result:
            p50, p99 = result[stage]
            print(f"  {stage:16} {p50:7.2f} / {p99:7.2f}")


if __name__ == "__main__":
    main()
