"""Bounded everything (issue 10, point 7): a request head over 64 KiB is
refused before it is read whole, long tokens and never-expiring ones are
refused, stalled clients (not reading at all) are told to resync and closed,
and a WebSocket without a subscription is closed when idle."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import httpx
import jwt
import orjson
import websockets

from rowcast.broadcaster.auth import mint
from rowcast.producers.producer import make_entry
from tests.integration.churn import ws_frame
from tests.integration.test_broadcaster_harness import (
    SECRET,
    broadcaster,
    producer,
    wait_for_head,
    writer,
)


async def test_a_huge_request_head_gets_431_before_it_is_read_whole(redis_url, db_url, prefix):
    async with broadcaster(redis_url, db_url, prefix, secret=SECRET) as b:
        reader, w = await asyncio.open_connection("127.0.0.1", b.port)
        w.write(b"GET /api/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        with contextlib.suppress(OSError):
            # 1 MiB of one header, never ended: the answer comes regardless
            # (before, the head was buffered until it ended, then 401).
            for _ in range(16):
                w.write(b"a" * 65536)
                await w.drain()
        head = await asyncio.wait_for(reader.read(200), 30)
        w.close()
        assert head.startswith(b"HTTP/1.1 431"), head


async def test_tokens_too_long_or_never_expiring_are_refused(redis_url, db_url, prefix):
    forever = jwt.encode({"sessions": ["*"], "exp": 10**20}, SECRET.encode(), algorithm="HS256")
    header = jwt.utils.base64url_encode(b'{"alg":"HS256","typ":"JWT"}')
    body = jwt.utils.base64url_encode(b'{"sessions":["*"],"exp":1e999}')
    import hashlib
    import hmac

    signing = header + b"." + body
    sig = jwt.utils.base64url_encode(hmac.new(SECRET.encode(), signing, hashlib.sha256).digest())
    infinite = (signing + b"." + sig).decode()
    async with (
        broadcaster(redis_url, db_url, prefix, secret=SECRET) as b,
        httpx.AsyncClient(base_url=b.base, timeout=30) as http,
    ):
        for token, says in (
            (infinite, "year 10000"),
            (forever, "year 10000"),
            ("x" * 9000, "too long"),
        ):
            r = await http.get("/api/sessions", headers={"authorization": f"Bearer {token}"})
            assert r.status_code == 401 and says in r.json()["error"], r.text
        good = mint(SECRET, ["*"], ttl=60)
        r = await http.get("/api/sessions", headers={"authorization": f"Bearer {good}"})
        assert r.status_code == 200


async def _stalled(
    port: int, request: bytes, then: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client with a tiny receive buffer that reads at most the answer's head."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, w = await asyncio.open_connection(sock=sock)
    w.write(request)
    await w.drain()
    if then:
        await reader.readuntil(b"\r\n\r\n")
        w.write(then)
        await w.drain()
    return reader, w


async def test_stalled_clients_are_told_to_resync_and_closed(redis_url, db_url, prefix):
    async with (
        writer(redis_url, db_url, prefix),
        producer(redis_url, prefix) as p,
        broadcaster(redis_url, db_url, prefix, stall_s=1.0) as b,
        httpx.AsyncClient(base_url=b.base, timeout=30) as http,
    ):
        await p.push_many(
            [
                make_entry("append", "big", f"r{i}", "user", {"text": "x" * 16000})
                for i in range(600)
            ]
        )
        await wait_for_head(db_url, "big", 600)
        ws_request = (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{b.port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        subscribe = ws_frame(orjson.dumps({"type": "subscribe", "session": "big", "after": 0}))
        sse_request = (
            f"GET /api/sessions/big/events HTTP/1.1\r\nHost: 127.0.0.1:{b.port}\r\n\r\n".encode()
        )
        clients = [
            await _stalled(b.port, ws_request, subscribe),
            await _stalled(b.port, sse_request),
        ]
        metrics = b.runtime.metrics
        async with asyncio.timeout(60):
            while (
                metrics.stalls._value.get() < 2
                or (await http.get("/healthz")).json()["connections"]
            ):
                await asyncio.sleep(0.1)
        assert b.runtime.hub.subscriptions == 0
        for _, w in clients:
            w.close()


async def test_a_websocket_without_subscriptions_is_closed_when_idle(redis_url, db_url, prefix):
    async with broadcaster(redis_url, db_url, prefix, ws_idle_s=0.5) as b:
        # Before the handshake: the server's idle clock starts after it, so the
        # close can never come sooner than 0.5 s after this.
        t0 = time.monotonic()
        async with websockets.connect(b.ws_url) as ws:
            async with asyncio.timeout(30):
                try:
                    await ws.recv()
                except websockets.ConnectionClosed as e:
                    assert e.rcvd is not None and e.rcvd.code == 1000
                    assert "idle" in e.rcvd.reason
            assert time.monotonic() - t0 >= 0.5
        assert b.runtime.metrics.idle_closed._value.get() == 1
