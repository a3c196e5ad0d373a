"""Running the app: ``serve`` puts it on uvicorn inside the caller's event
loop and stops it when the caller's event is set (``rowcast broadcaster``,
``rowcast up`` and the tests all use it)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from rowcast.broadcaster.guard import RAW_SEND
from rowcast.broadcaster.runtime import Runtime
from rowcast.contract.errors import ConfigError

log = logging.getLogger(__name__)

WS_MAX_SIZE = 1 << 20
"""WebSocket frames larger than this are refused by the protocol (close 1009)."""
MAX_HEAD = 64 * 1024
"""Most bytes of a request line and headers read before a 431 (every route is
a GET with a few short headers; a token is at most 8 KiB)."""


class _BoundedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request head over MAX_HEAD
    with 431 instead of buffering it whole (httptools keeps a partial header
    until it ends, however long)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head = 0
        self._in_head = True
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # read and dropped, so closing does not reset the answer away
        if self._in_head:
            self._head += len(data)
            if self._head > MAX_HEAD:
                self._refuse()
                return
        super().data_received(data)

    def _refuse(self) -> None:
        body = b'{"error":"request headers too large"}'
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        self._refused = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        asyncio.get_running_loop().call_later(1.0, self.transport.close)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:
            # The send of this request's cycle, before any middleware wraps
            # it: an event stream writes its quiet changes on it (sse.py).
            self.scope[RAW_SEND] = cycle.send  # type: ignore[literal-required]

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head = True, 0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_listen(host: str, secret: str | None) -> None:
    """Without a secret every caller may read every session: loopback only."""
    if secret is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without ROWCAST_SECRET"
            " (set it to require tokens, or listen on 127.0.0.1)"
        )


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, or one clear line saying why there is none."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host.strip("[]"), port), family=family, backlog=2048)
    except OSError as e:
        why = os.strerror(e.errno) if e.errno else str(e)
        raise ConfigError(f"cannot listen on {host}:{port}: {why}") from None
    except (OverflowError, ValueError) as e:  # a port outside 0..65535, a malformed host
        raise ConfigError(f"cannot listen on {host}:{port}: {e}") from None
    sock.setblocking(False)
    return sock


class _DenialNoise(logging.Filter):
    """uvicorn's websockets-sansio protocol logs an error after a correct
    WebSocket denial response (401/403 at the handshake), as if the app had
    not answered; the client did get its status. Drop that one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("ASGI callable returned without completing")


_FILTER = _DenialNoise()


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the caller owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _config(app: Starlette, log_level: str | None) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        lifespan="on",
        ws="websockets-sansio",
        ws_max_size=WS_MAX_SIZE,
        # Compression costs more CPU than it saves bytes here: each frame would
        # be deflated once per client, and most frames are small.
        ws_per_message_deflate=False,
        http=_BoundedHttp,
        timeout_graceful_shutdown=5,
        log_config=None,
        log_level=log_level,
        access_log=False,
        server_header=False,
    )


async def serve(
    app: Starlette,
    host: str,
    port: int,
    stop: asyncio.Event,
    *,
    sock: socket.socket | None = None,
    started: asyncio.Event | None = None,
    log_level: str | None = "warning",
) -> None:
    """Serve ``app`` (from ``create_app``) on host:port until ``stop`` is set.

    Feeds are closed first (WebSockets with 1012, SSE streams ended) so
    clients reconnect elsewhere with their cursors; then uvicorn stops.
    ``sock``: an already bound socket (host/port are then only reported).
    ``started`` is set once the server accepts connections. ``log_level``
    is uvicorn's own (its per-connection lines are noise at INFO).
    """
    rt: Runtime = app.state.runtime
    check_listen(host, rt.secret)
    if sock is None:
        sock = bind(host, port)
    rt.address = (host, sock.getsockname()[1])
    uvicorn_log = logging.getLogger("uvicorn.error")
    if _FILTER not in uvicorn_log.filters:
        uvicorn_log.addFilter(_FILTER)
    server = _Server(_config(app, log_level))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="uvicorn")
    waiter = asyncio.create_task(stop.wait(), name="stop")
    try:
        while not server.started and not task.done():
            await asyncio.wait({task, waiter}, timeout=0.05, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                break
        if server.started:
            log.info("broadcaster listening on http://%s:%d/", *rt.address)
            if started is not None:
                started.set()
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            rt.close_connections()
            server.should_exit = True
        await task
    except BaseException:
        # Cancelled (or failed) from outside: still stop uvicorn, briefly.
        rt.close_connections()
        server.should_exit = True
        if not task.done():
            await asyncio.wait({task}, timeout=10)
            task.cancel()
        raise
    finally:
        waiter.cancel()
        sock.close()
