"""The heartbeat: a key with an expiry that says this broadcaster is alive and
how busy it is, so ``rowcast status`` can list broadcasters."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


@dataclass
class Heartbeat:
    redis: Redis
    key: str
    info: Callable[[], dict[str, Any]]
    every: float = 5.0
    ttl: int = 15

    async def beat(self) -> None:
        await self.redis.set(self.key, orjson.dumps(self.info()), ex=self.ttl)

    async def run(self) -> None:
        while True:
            try:
                await self.beat()
            except (RedisError, OSError) as e:
                log.warning("heartbeat: %s", e)
            await asyncio.sleep(self.every)

    async def clear(self) -> None:
        try:
            await self.redis.delete(self.key)
        except (RedisError, OSError) as e:
            log.warning("heartbeat: could not remove %s: %s", self.key, e)
