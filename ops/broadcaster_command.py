"""``rowcast broadcaster``: the HTTP/WebSocket/SSE server and the web UI."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
from collections.abc import Coroutine
from typing import Any

from broadcaster import BroadcasterConfig, check_listen, create_app, serve
from ops.runner import install_stop
from ops.settings import Settings


def broadcaster_config(settings: Settings) -> BroadcasterConfig:
    """The broadcaster's config from the settings (``rowcast up`` uses it too).

    Optional tuning fields are read with defaults so this works whether or not
    Settings carries them (ROWCAST_COALESCE_MS, ROWCAST_QUEUE_MAX,
    ROWCAST_FRAME_CHANGES).
    """
    redis_url, database_url = settings.need_servers()
    defaults = BroadcasterConfig(redis_url, database_url)

    def tuned(name: str, default: Any) -> Any:
        value = getattr(settings, name, None)
        return default if value is None else value

    return BroadcasterConfig(
        redis_url=redis_url,
        database_url=database_url,
        prefix=settings.prefix,
        secret=settings.secret,
        window_ms=tuned("coalesce_ms", defaults.window_ms),
        queue_max=tuned("queue_max", defaults.queue_max),
        max_batch=tuned("frame_changes", defaults.max_batch),
    )


def raise_open_files() -> None:
    """Every client holds a socket: lift the soft limit on open files to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(main)
    else:
        uvloop.run(main)


def run(args: argparse.Namespace, settings: Settings) -> int:
    config = broadcaster_config(settings)
    check_listen(args.host, config.secret)
    raise_open_files()
    app = create_app(config)

    async def main() -> None:
        stop = asyncio.Event()
        install_stop(stop)
        await serve(app, args.host, args.port, stop)

    _run(main())
    return 0
