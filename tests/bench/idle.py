"""Memory per idle WebSocket: one ``rowcast broadcaster`` process (uvloop, as
deployed) holding many subscribed, quiet sockets.

    python -m tests.bench.idle [--sockets 5000] [--sessions 100]

Each socket does the WebSocket handshake, subscribes to one session (which
holds one row, so every subscription catches up and goes live), and then
stays quiet. The broadcaster's RSS is read (psutil) with one socket open,
with all of them open, after they all closed, and with all of them open
again (a second round: memory kept after closing is reused, not leaked); the
figure is
(RSS with all - RSS with one) / sockets. Prints one JSON object.
Needs ROWCAST_REDIS_URL / ROWCAST_DATABASE_URL (an admin URL), or the
defaults 127.0.0.1:6379 and :5432.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import resource
import secrets
import subprocess
import sys
import time
from typing import Any

import httpx
import orjson
import psutil
from redis.asyncio import Redis

from rowcast.ops.schema.migrate import migrate
from rowcast.producers import Producer
from tests import databases
from tests.bench.fanout import _free_port, stop_all, wait_ready
from tests.integration.churn import ws_frame

ROWCAST = os.path.join(os.path.dirname(sys.executable), "rowcast")


async def _open(port: int, session: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
    msg = {"type": "subscribe", "session": session, "after": 0}
    writer.write(ws_frame(orjson.dumps(msg)))
    await writer.drain()
    # The catch-up frame (the session's one row): the subscription is live.
    await reader.readexactly(2)
    return reader, writer


def _rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    redis_url = os.environ.get("ROWCAST_REDIS_URL", "redis://127.0.0.1:6379/0")
    admin = os.environ.get("ROWCAST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = databases.create(admin, "rowcast_ibench")
    prefix = f"ibench{secrets.token_hex(3)}"
    db = databases.url_for(admin, name)
    migrate(db)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROWCAST_")}
    env.update(ROWCAST_REDIS_URL=redis_url, ROWCAST_DATABASE_URL=db, ROWCAST_PREFIX=prefix)
    env.update(ROWCAST_MAX_CONNECTIONS_PER_CLIENT=str(args.sockets + 100))
    quiet = ["--log-level", "WARNING"]
    procs = [
        subprocess.Popen([ROWCAST, "writer", *quiet], env=env),
        subprocess.Popen([ROWCAST, "broadcaster", "--port", str(port), *quiet], env=env),
    ]
    bpid = procs[1].pid
    redis = Redis.from_url(redis_url)
    producer = Producer(redis, prefix=prefix)
    sessions = [f"idle-{i:03d}" for i in range(args.sessions)]
    out: dict[str, Any] = {"sockets": args.sockets, "sessions": args.sessions}
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        await wait_ready(port)
        async with httpx.AsyncClient() as http:
            for s in sessions:
                await producer.append(s, "r0", "user", {"text": "hello"}, wait=True)
            held.append(await _open(port, sessions[0]))
            await asyncio.sleep(2)
            one = _rss(bpid)
            t0 = time.monotonic()
            for i in range(1, args.sockets, 100):
                batch = [
                    sessions[(i + k) % len(sessions)] for k in range(min(100, args.sockets - i))
                ]
                held.extend(await asyncio.gather(*(_open(port, s) for s in batch)))
            out["open_seconds"] = round(time.monotonic() - t0, 1)
            await asyncio.sleep(5)
            full = _rss(bpid)
            health = (await http.get(f"http://127.0.0.1:{port}/healthz")).json()
            out["connections"] = health["connections"]
            out["subscriptions"] = health["subscriptions"]
            for _, w in held:
                w.close()
            held.clear()
            gc.collect()
            await asyncio.sleep(5)
            after = _rss(bpid)
            # A second round: RSS that stays after closing is reused, not leaked.
            for i in range(1, args.sockets, 100):
                batch = [
                    sessions[(i + k) % len(sessions)] for k in range(min(100, args.sockets - i))
                ]
                held.extend(await asyncio.gather(*(_open(port, s) for s in batch)))
            await asyncio.sleep(5)
            again = _rss(bpid)
            for _, w in held:
                w.close()
            held.clear()
            out["rss_second_round_mb"] = round(again / 2**20, 1)
            out.update(
                rss_one_mb=round(one / 2**20, 1),
                rss_all_mb=round(full / 2**20, 1),
                rss_after_close_mb=round(after / 2**20, 1),
                rss_per_socket_kb=round((full - one) / max(1, args.sockets - 1) / 1024, 1),
            )
    finally:
        for _, w in held:
            w.close()
        stop_all(list(reversed(procs)))
        keys = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await redis.delete(*keys)
        await producer.close()
        databases.drop(admin, name)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--sockets", type=int, default=5000)
    ap.add_argument("--sessions", type=int, default=100)
    args = ap.parse_args()
    print(orjson.dumps(asyncio.run(run(args))).decode())


if __name__ == "__main__":
    main()
