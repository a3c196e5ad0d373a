"""The runtime: everything one broadcaster app holds while it runs (pool, hub,
heartbeat, open connections), started and stopped by the app's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any, cast

from redis.asyncio import Redis

from rowcast.broadcaster.config import BroadcasterConfig, default_instance
from rowcast.broadcaster.heartbeat import Heartbeat
from rowcast.broadcaster.hub import Hub
from rowcast.broadcaster.metrics import Metrics
from rowcast.broadcaster.outbox import SHUTDOWN, Outbox, Ticker
from rowcast.broadcaster.reader import Reader
from rowcast.contract.connection import async_client

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, config: BroadcasterConfig) -> None:
        config.check()
        self.config = config
        self.instance = config.instance or default_instance()
        self.metrics = Metrics()
        self.store = Reader.create(config.database_url, max_size=config.pool_max)
        self.metrics.watch_pool(self.store.pool.get_stats)
        # A cluster client answers the same commands (typed as the plain one).
        self.redis = cast(
            Redis, async_client(config.redis_url, socket_connect_timeout=3, socket_timeout=5)
        )
        self.hub = Hub(
            config.redis_url,
            config.keys,
            self.store,
            self.metrics,
            page=config.page,
            buffer_max=config.queue_max,
            client_name=f"rowcast-broadcaster:{config.prefix}:{self.instance}".replace(" ", "_"),
            shards=config.shards,
        )
        self.address: tuple[str, int] = ("127.0.0.1", 0)
        """Where the server listens (set by ``serve``; shown in the heartbeat)."""
        self.started_at = datetime.now(UTC)
        self.outboxes: set[Outbox] = set()
        self.ticker = Ticker(config.window)
        self.heartbeat = Heartbeat(
            self.redis,
            config.keys.broadcaster(self.instance),
            self.info,
            every=config.heartbeat_every_s,
            ttl=config.heartbeat_ttl_s,
        )
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def secret(self) -> str | None:
        return self.config.secret

    def info(self) -> dict[str, Any]:
        host, port = self.address
        return {
            "instance": self.instance,
            "host": host,
            "port": port,
            "connections": len(self.outboxes),
            "subscriptions": self.hub.subscriptions,
            "started_at": self.started_at.isoformat().replace("+00:00", "Z"),
        }

    async def start(self) -> None:
        await self.store.open()
        self._tasks = [
            asyncio.create_task(self.hub.run(), name="hub"),
            asyncio.create_task(self.heartbeat.run(), name="heartbeat"),
            asyncio.create_task(self._watch_stalls(), name="stall watchdog"),
        ]
        log.info("broadcaster %s started (prefix %s)", self.instance, self.config.prefix)

    async def _watch_stalls(self) -> None:
        """Close the connections whose client stopped reading (Outbox.check_stall)."""
        every = min(1.0, self.config.stall_s / 4)
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            for outbox in list(self.outboxes):
                outbox.check_stall(now)

    def close_connections(self) -> None:
        """Ask every feed to end: WebSockets close with 1012, SSE streams end
        (clients come back to the next broadcaster with their cursors)."""
        for outbox in list(self.outboxes):
            outbox.close(SHUTDOWN)

    async def stop(self) -> None:
        self.close_connections()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        await self.heartbeat.clear()
        await self.store.close()
        await self.redis.aclose()
