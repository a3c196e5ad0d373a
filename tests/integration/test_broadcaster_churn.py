"""Hang-ups (issue 10, point 2): thousands of SSE and WebSocket clients that
drop their connections (FIN and RST) during catch-up and live delivery leave
the broadcaster whole: /healthz 200, every pool connection back, no
connection or subscription left behind, and a new subscriber served."""

from __future__ import annotations

import asyncio
import os
import random

import httpx

from tests.integration.churn import hang_up
from tests.integration.test_broadcaster_harness import (
    WsClient,
    broadcaster,
    producer,
    wait_for_head,
    writer,
)

ROUNDS = int(os.environ.get("ROWCAST_CHURN_ROUNDS", "10"))
PER_ROUND = 200


def pool_stats(metrics: str) -> dict[str, float]:
    out = {}
    for line in metrics.splitlines():
        if line.startswith("rowcast_broadcaster_db_"):
            name, value = line.split()
            out[name.removeprefix("rowcast_broadcaster_db_")] = float(value)
    return out


async def test_hang_ups_during_catch_up_and_live_leave_the_broadcaster_whole(
    redis_url, db_url, prefix
):
    sessions = [f"s{i}" for i in range(8)]
    rng = random.Random(10)
    async with (
        writer(redis_url, db_url, prefix),
        producer(redis_url, prefix) as p,
        # Small pages and a small pool: every catch-up takes several reads and
        # waits for a connection, so hang-ups land in every phase.
        broadcaster(redis_url, db_url, prefix, pool_max=3, page=100, queue_max=2000) as b,
        httpx.AsyncClient(base_url=b.base, timeout=30) as http,
    ):
        for s in sessions:
            for i in range(0, 200, 100):
                await asyncio.gather(
                    *(p.append(s, f"r{j}", "user", {"text": "x" * 100}) for j in range(i, i + 100))
                )
        await wait_for_head(db_url, sessions[-1], 200)
        stop = asyncio.Event()

        async def live() -> None:
            n = 0
            while not stop.is_set():
                await p.upsert(rng.choice(sessions), f"r{n % 50}", "assistant", {"n": n})
                n += 1
                await asyncio.sleep(0.002)

        feeder = asyncio.create_task(live())
        try:
            for _ in range(ROUNDS):
                await asyncio.gather(
                    *(
                        hang_up(
                            b.port,
                            "sse" if i % 2 else "ws",
                            rng.choice(sessions),
                            rst=rng.random() < 0.5,
                            read=rng.choice([0, 1, 300, 5000]),
                        )
                        for i in range(PER_ROUND)
                    )
                )
                health = await http.get("/healthz")
                assert health.status_code == 200, health.text
        finally:
            stop.set()
            await feeder
        async with asyncio.timeout(60):
            while True:
                health = (await http.get("/healthz")).json()
                stats = pool_stats((await http.get("/metrics")).text)
                if (
                    health["connections"] == 0
                    and health["subscriptions"] == 0
                    and stats["pool_available"] == stats["pool_size"]
                ):
                    break
                await asyncio.sleep(0.1)
        assert health["status"] == "ok" and stats["requests_waiting"] == 0
        assert stats["pool_size"] >= 1
        # And it still serves: a new subscriber catches up in full.
        last = (await http.get(f"/api/sessions/{sessions[0]}/rows?limit=1")).json()["last_change"]
        ws = WsClient(b.ws_url)
        await ws.connect()
        await ws.subscribe(sessions[0], 0)
        await ws.until(sessions[0], last)
        await ws.close()
