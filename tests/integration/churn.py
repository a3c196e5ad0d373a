"""Raw clients that hang up: SSE requests and WebSocket subscriptions over
plain sockets, closed after the first bytes with a FIN or a RST (SO_LINGER 0),
as closed tabs, proxies timing out and dropped networks do."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct

import orjson


def ws_frame(payload: bytes) -> bytes:
    """One masked text frame (clients must mask)."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x81])
    if n < 126:
        head += bytes([0x80 | n])
    else:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def hang_up(port: int, kind: str, session: str, rst: bool, read: int) -> None:
    """Open a feed, read up to ``read`` bytes of it (0: none), drop it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if kind == "sse":
            writer.write(
                f"GET /api/sessions/{session}/events?after=0 HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\n\r\n".encode()
            )
        else:
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write(
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            # uvicorn hands the WebSocket only what follows the handshake's
            # answer: subscribe after it.
            with contextlib.suppress(asyncio.IncompleteReadError, OSError, TimeoutError):
                async with asyncio.timeout(5):
                    await reader.readuntil(b"\r\n\r\n")
            msg = {"type": "subscribe", "session": session, "after": 0}
            writer.write(ws_frame(orjson.dumps(msg)))
        await writer.drain()
        if read:
            with contextlib.suppress(TimeoutError, OSError):
                async with asyncio.timeout(1):
                    got = 0
                    while got < read:
                        chunk = await reader.read(read - got)
                        if not chunk:
                            break
                        got += len(chunk)
    finally:
        if rst:
            sock = writer.get_extra_info("socket")
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
