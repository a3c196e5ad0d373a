"""``rowcast writer``: the writer of every shard (or of ``--shard N``)."""

from __future__ import annotations

import argparse
import asyncio

from rowcast.contract.errors import ConfigError
from rowcast.ops.admin.shell import check_servers
from rowcast.ops.commands.loop import run_loop
from rowcast.ops.commands.runner import install_stop, run_writers
from rowcast.ops.schema.migrate import migrate
from rowcast.ops.settings import Settings


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shard",
        type=int,
        action="append",
        help="lead only this shard (repeatable); such a process stays out of the fleet's spreading",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    shards = args.shard or list(range(settings.shards))
    bad = [n for n in shards if not 0 <= n < settings.shards]
    if bad:
        raise ConfigError(f"--shard {bad[0]} is outside 0..{settings.shards - 1}")
    _, db = settings.need_servers()
    check_servers(settings)
    migrate(db)
    if settings.metrics_port is not None:
        from prometheus_client import REGISTRY, start_http_server

        from rowcast.contract.connection import sync_client
        from rowcast.writer.metrics import StreamCollector

        sync_redis = sync_client(settings.need_servers()[0])
        REGISTRY.register(StreamCollector(sync_redis, settings.keys, sorted(set(shards))))
        start_http_server(settings.metrics_port, addr="127.0.0.1")

    async def main() -> None:
        stop = asyncio.Event()
        install_stop(stop)
        await run_writers(settings, sorted(set(shards)), stop, spread=not args.shard)

    run_loop(main())
    return 0
