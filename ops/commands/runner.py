"""Long-running processes composed from the packages: the writer of all (or
some) shards, with signal handling and the metrics endpoint."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
from collections.abc import Sequence
from dataclasses import fields
from typing import cast

from redis.asyncio import Redis

from rowcast.contract.connection import async_client
from rowcast.ops.settings import Settings
from rowcast.writer import ShardWriter, WriterConfig
from rowcast.writer.fleet import Fleet

log = logging.getLogger(__name__)


def holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


_SHARED = [f.name for f in fields(WriterConfig) if f.name not in ("shard", "holder")]
"""WriterConfig's fields that Settings has under the same names (keys, database_url,
batch_max, linger_ms, lease_ms, ...): the settings are their one source."""


def writer_configs(settings: Settings, shards: Sequence[int], holder: str) -> list[WriterConfig]:
    settings.need_servers()  # both URLs, or a clear error
    return [
        WriterConfig(shard=n, holder=holder, **{name: getattr(settings, name) for name in _SHARED})
        for n in shards
    ]


async def run_writers(
    settings: Settings, shards: Sequence[int], stop: asyncio.Event, spread: bool = True
) -> None:
    """A loop per shard. With ``spread`` this process joins the fleet of
    writers and leads only its share of ``shards``; without, it tries to lead
    every one of them (``--shard``). A shard's errors stay in its own loop, so
    the task group ends only on ``stop`` or cancellation."""
    redis_url, _ = settings.need_servers()
    # A cluster client answers the same commands (typed as the plain one).
    redis = cast(Redis, async_client(redis_url))
    holder = holder_id()
    fleet = Fleet(redis, settings.keys, holder, shards, settings.lease_ms) if spread else None
    try:
        writers = [
            ShardWriter(redis, cfg, fleet) for cfg in writer_configs(settings, shards, holder)
        ]
        how = "sharing them with the fleet" if fleet is not None else "pinned"
        log.info("writer %s serving shards %s, %s", holder, list(shards), how)
        async with asyncio.TaskGroup() as tg:
            if fleet is not None:
                tg.create_task(fleet.run(stop))
            for w in writers:
                tg.create_task(w.run(stop))
    finally:
        if fleet is not None:
            await fleet.leave()
        await redis.aclose()


def install_stop(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT finish the batch in hand, then stop."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
