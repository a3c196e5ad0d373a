"""``rowcast up [--demo] [--host H] [--port P]``: everything on one machine.

Runs the writer (every shard) and the broadcaster in this process. When
ROWCAST_REDIS_URL or ROWCAST_DATABASE_URL is unset it first starts the
embedded server for it (ops/embedded), with its data in ROWCAST_DATA_DIR.
``--demo`` adds synthetic connectors (demo.py).

Stopping (Ctrl-C or SIGTERM, at any moment, even while starting): the demo
stops, the broadcaster closes its feeds, the writer finishes the batch in
hand, then the embedded servers are stopped by PID. A second signal while
stopping is ignored: the servers must not be left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator
from dataclasses import replace
from types import FrameType
from typing import Any

from rowcast.broadcaster import create_app, serve
from rowcast.broadcaster.server import bind, check_listen
from rowcast.contract.errors import RowcastError, one_line
from rowcast.ops.commands.broadcaster import broadcaster_config
from rowcast.ops.commands.loop import run_loop
from rowcast.ops.commands.runner import run_writers
from rowcast.ops.embedded import servers as embedded
from rowcast.ops.schema.migrate import migrate
from rowcast.ops.settings import Settings, port

log = logging.getLogger(__name__)


class _Stop(BaseException):
    """Raised by a signal while starting (like KeyboardInterrupt, for SIGTERM too)."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    # Once: a second signal must not interrupt the cleanup the first one starts.
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, _ignore)
    raise _Stop(signum)


def _ignore(signum: int, frame: FrameType | None) -> None:
    log.warning("already stopping (signal %d ignored)", signum)


@contextlib.contextmanager
def _signals(handler: Any) -> Iterator[None]:
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--demo", action="store_true", help="add synthetic connectors")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port, default=8000)


def run(args: argparse.Namespace, settings: Settings) -> int:
    emb: embedded.Embedded | None = None
    sock: socket.socket | None = None
    try:
        with _signals(_raise_stop):
            sock = _listen(args.host, args.port, settings)
            if not settings.redis_url or not settings.database_url:
                emb = embedded.start(
                    settings.data_dir,
                    redis=not settings.redis_url,
                    postgres=not settings.database_url,
                )
                settings = replace(
                    settings,
                    redis_url=settings.redis_url or _url(emb.redis),
                    database_url=settings.database_url or _url(emb.postgres),
                )
            _, db = settings.need_servers()
            migrate(db)
        # From here the event loop owns SIGINT/SIGTERM (they set the stop event).
        run_loop(_serve(args, settings, emb, sock))
        return 0
    except _Stop:
        return 0
    finally:
        if sock is not None:
            sock.close()  # serve() closes it too; this covers a failed start
        if emb is not None:
            with _signals(_ignore):
                log.info("stopping the embedded servers")
                emb.stop()


def _url(srv: embedded.Server | None) -> str:
    assert srv is not None  # started because its URL was missing
    return srv.url


async def _serve(
    args: argparse.Namespace,
    settings: Settings,
    emb: embedded.Embedded | None,
    sock: socket.socket | None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    tasks: dict[str, asyncio.Task[None]] = {
        "writer": asyncio.create_task(
            run_writers(settings, list(range(settings.shards)), stop), name="writer"
        )
    }
    started = asyncio.Event()
    tasks["broadcaster"] = _start_broadcaster(settings, args.host, args.port, sock, stop, started)
    demo: asyncio.Task[None] | None = None
    if args.demo:
        demo = asyncio.create_task(_demo(settings), name="demo")

    ready = asyncio.create_task(started.wait())
    await asyncio.wait({ready, *tasks.values()}, return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    if started.is_set():
        port = sock.getsockname()[1] if sock is not None else args.port
        _announce(args.host, port, args.demo, emb)

    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({stopping, *tasks.values()}, return_when=asyncio.FIRST_COMPLETED)
    failed = {name: t for name, t in tasks.items() if t in done}
    for name, t in failed.items():
        err = None if t.cancelled() else t.exception()
        log.error("the %s stopped (%s); shutting down", name, _why(err), exc_info=err)
    stop.set()
    stopping.cancel()
    if demo is not None:
        demo.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await demo
    # The writer finishes its batch; the broadcaster closes its feeds.
    results = await asyncio.gather(*tasks.values(), return_exceptions=True)
    for name, res in zip(tasks, results, strict=True):
        if name not in failed and isinstance(res, Exception):
            log.error("the %s failed while stopping (%s)", name, _why(res), exc_info=res)
    if failed:
        name, t = next(iter(failed.items()))
        err = None if t.cancelled() else t.exception()
        if isinstance(err, RowcastError):
            raise err
        raise RowcastError(f"the {name} stopped: {_why(err)} (details in the log above)")


def _why(err: BaseException | None) -> str:
    """One line for an error, looking inside exception groups."""
    while isinstance(err, BaseExceptionGroup) and err.exceptions:
        err = err.exceptions[0]
    if err is None:
        return "it ended"
    return f"{type(err).__name__}: {one_line(err)}"


def _announce(host: str, port: int, demo: bool, emb: embedded.Embedded | None) -> None:
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    if ":" in host:
        host = f"[{host}]"
    lines = [f"rowcast is up: http://{host}:{port}/"]
    if emb is not None:
        lines.append(f"  data: {emb.data_dir}")
        for srv in (emb.redis, emb.postgres):
            if srv is not None:
                lines.append(f"  {'Redis' if srv.kind == 'redis' else 'PostgreSQL'}: {srv.url}")
    if demo:
        lines.append("  demo sessions are being written (Ctrl-C stops everything)")
    else:
        lines.append("  point connectors here: rowcast connect claude-code | codex")
    print("\n".join(lines), flush=True)


async def _demo(settings: Settings) -> None:
    from rowcast.ops.commands.demo import run_demo
    from rowcast.producers.producer import Producer

    redis_url, _ = settings.need_servers()
    producer = Producer.from_url(
        redis_url, prefix=settings.prefix, shards=settings.shards, max_body=settings.max_body
    )
    try:
        await run_demo(producer)
    finally:
        await producer.close()


# --- the broadcaster ------------------------------------------------------------------


def _listen(host: str, port: int, settings: Settings) -> socket.socket:
    """Bind the UI's port before anything starts, so a taken port fails at once."""
    check_listen(host, settings.secret)
    return bind(host, port)


def _start_broadcaster(
    settings: Settings,
    host: str,
    port: int,
    sock: socket.socket | None,
    stop: asyncio.Event,
    started: asyncio.Event,
) -> asyncio.Task[None]:
    """The broadcaster (HTTP API, feeds, web UI) in this process, as a task that ends
    when ``stop`` is set."""
    app = create_app(broadcaster_config(settings))
    level = logging.getLevelName(logging.getLogger().level)
    return asyncio.create_task(
        serve(app, host, port, stop, sock=sock, started=started, log_level=level.lower()),
        name="broadcaster",
    )
