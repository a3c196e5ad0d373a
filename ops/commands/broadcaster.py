"""``rowcast broadcaster``: the HTTP/WebSocket/SSE server and the web UI."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource

from rowcast.broadcaster import BroadcasterConfig, check_listen, create_app, serve
from rowcast.ops.admin.shell import check_servers
from rowcast.ops.commands.loop import run_loop
from rowcast.ops.commands.runner import install_stop
from rowcast.ops.settings import Settings, port


def broadcaster_config(settings: Settings) -> BroadcasterConfig:
    """The broadcaster's config from the settings (``rowcast up`` uses it too)."""
    redis_url, database_url = settings.need_servers()
    return BroadcasterConfig(
        redis_url=redis_url,
        database_url=database_url,
        prefix=settings.prefix,
        shards=settings.shards,
        secret=settings.secret,
        window_ms=settings.coalesce_ms,
        queue_max=settings.queue_max,
        max_batch=settings.frame_changes,
        origins=settings.origins,
        max_connections=settings.max_connections,
        max_per_client=settings.max_per_client,
        stall_s=settings.stall_s,
        ws_idle_s=settings.ws_idle_s,
        collapse=settings.collapse,
    )


def raise_open_files() -> None:
    """Every client holds a socket: lift the soft limit on open files to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port, default=8000)


def run(args: argparse.Namespace, settings: Settings) -> int:
    config = broadcaster_config(settings)
    check_listen(args.host, config.secret)
    check_servers(settings)
    raise_open_files()
    app = create_app(config)

    async def main() -> None:
        stop = asyncio.Event()
        install_stop(stop)
        await serve(app, args.host, args.port, stop)

    run_loop(main())
    return 0
