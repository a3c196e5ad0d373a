"""Faults: the pub/sub connection killed while changes flow, and a client too
slow to keep up. Subscribers still end with every change, no gaps."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from rowcast.producers.producer import make_entry
from tests.integration.test_broadcaster_harness import (
    SseClient,
    WsClient,
    broadcaster,
    check_delivery,
    head,
    pg_rows,
    produce_session,
    producer,
    stream_changes,
    wait_for_head,
    writer,
)


async def pubsub_clients(aredis: Redis, prefix: str) -> int:
    """The broadcaster's pub/sub connections now open (by name)."""
    clients = await aredis.client_list(_type="pubsub")
    return sum(f"rowcast-broadcaster:{prefix}:" in c.get("name", "") for c in clients)


async def kill_pubsub(aredis: Redis, prefix: str) -> int:
    """CLIENT KILL the broadcaster's pub/sub connection (found by its name,
    which carries this test's prefix); returns how many were killed."""
    killed = 0
    for client in await aredis.client_list(_type="pubsub"):
        if f"rowcast-broadcaster:{prefix}:" in client.get("name", ""):
            await aredis.execute_command("CLIENT", "KILL", "ID", client["id"])
            killed += 1
    return killed


@pytest.mark.timeout(150)
async def test_client_kill_of_the_pubsub_connection_loses_nothing(
    redis_url, db_url, prefix, aredis
):
    sessions = ["k-a", "k-b"]
    async with (
        writer(redis_url, db_url, prefix),
        broadcaster(redis_url, db_url, prefix) as b,
        producer(redis_url, prefix) as p,
    ):
        ws = WsClient(b.ws_url)
        await ws.connect()
        for s in sessions:
            await ws.subscribe(s, after=0)
        sse = SseClient(b.base, sessions[0])
        reader = asyncio.create_task(sse.read(timeout=120))

        async def read_ws() -> None:
            while True:
                await ws.recv()

        ws_reader = asyncio.create_task(read_ws())
        production = asyncio.gather(*(produce_session(p, s, 100, updates=2) for s in sessions))
        # Kill the pub/sub connection repeatedly while the writer publishes.
        kills = 0
        while not production.done():
            await asyncio.sleep(0.15)
            kills += await kill_pubsub(aredis, prefix)
        await production
        assert kills >= 1

        # A deterministic outage: hold the hub away from Redis, commit the last
        # changes (receipts prove they are published), then let it come back.
        # Nothing live follows them: only the check after resubscribing finds them.
        hub = b.runtime.hub
        async with asyncio.timeout(30):  # back from the last kill (it may be recent)
            while not (hub.connected and await pubsub_clients(aredis, prefix) == 1):
                await asyncio.sleep(0.02)
        before = b.runtime.metrics.reconnects._value.get()
        real_url = hub.redis_url
        hub.redis_url = "redis://127.0.0.1:1/0"
        assert await kill_pubsub(aredis, prefix) == 1
        while hub.connected:
            await asyncio.sleep(0.02)
        for s in sessions:
            await p.upsert(s, "r0", "tool", {"status": "done"}, wait=True)
        hub.redis_url = real_url

        finals = {s: await head(db_url, s) for s in sessions}
        async with asyncio.timeout(60):
            while any(ws.cursor(s) < finals[s] for s in sessions) or (
                not sse.changes or sse.changes[-1]["change"] < finals[sessions[0]]
            ):
                await asyncio.sleep(0.05)
        ws_reader.cancel()
        reader.cancel()
        await ws.close()
        assert b.runtime.metrics.reconnects._value.get() >= before + 1

        for s in sessions:
            pg = await pg_rows(db_url, s)
            published = await stream_changes(aredis, prefix, s)
            check_delivery(ws.changes[s], pg, published)
        check_delivery(
            sse.changes,
            await pg_rows(db_url, sessions[0]),
            await stream_changes(aredis, prefix, sessions[0]),
        )


class RawWebSocket:
    """A WebSocket client that reads only when told to (websockets' sans-I/O
    protocol over a socket with a tiny receive buffer): the server's socket
    stops draining as soon as this client stops reading."""

    def __init__(self) -> None:
        self.changes: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self._parts: list[bytes] = []

    async def open(self, port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        self.reader, self.writer = await asyncio.open_connection(sock=sock, limit=4096)
        self.proto = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/ws"), max_size=None)
        self.proto.send_request(self.proto.connect())
        self._flush()
        while (
            not isinstance(self.proto.handshake_exc, Exception)
            and self.proto.state.name == "CONNECTING"
        ):
            await self._pump()

    def _flush(self) -> None:
        for data in self.proto.data_to_send():
            if data:
                self.writer.write(data)

    async def _pump(self) -> bool:
        data = await self.reader.read(65536)
        if data:
            self.proto.receive_data(data)
        else:
            self.proto.receive_eof()
        self._flush()
        for event in self.proto.events_received():
            if isinstance(event, Frame) and event.opcode in (Opcode.TEXT, Opcode.CONT):
                self._parts.append(bytes(event.data))
                if event.fin:
                    msg = orjson.loads(b"".join(self._parts))
                    self._parts = []
                    self.messages.append(msg)
                    if msg["type"] == "rows":
                        self.changes.extend(msg["changes"])
            elif isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                self.close_code = self.proto.close_rcvd.code if self.proto.close_rcvd else 1005
        return bool(data)

    def send(self, msg: dict[str, Any]) -> None:
        self.proto.send_text(orjson.dumps(msg))
        self._flush()

    async def read_until(self, done: Callable[[], bool], timeout: float = 60) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                if not await self._pump():
                    return

    def close(self) -> None:
        self.writer.close()


@pytest.mark.timeout(150)
async def test_a_slow_websocket_client_gets_resync_then_resumes_with_everything(
    redis_url, db_url, prefix, aredis
):
    session = "slow"
    queue_max = 1000
    async with (
        writer(redis_url, db_url, prefix),
        broadcaster(redis_url, db_url, prefix, queue_max=queue_max, page=200, max_batch=64) as b,
        producer(redis_url, prefix) as p,
    ):
        await p.append(session, "first", "user", {"text": "hello"}, wait=True)
        slow = RawWebSocket()
        await slow.open(b.port)
        slow.send({"type": "subscribe", "session": session, "after": 0})
        await slow.read_until(lambda: len(slow.changes) >= 1)

        # The client stops reading. Far more than the socket buffers on both
        # sides hold (a few MB) follows.
        body = {"text": "y" * 8000}
        n = 3000
        for start in range(0, n, 500):
            await p.push_many(
                [
                    make_entry("append", session, f"r{i}", "assistant", body)
                    for i in range(start, start + 500)
                ]
            )
        await wait_for_head(db_url, session, n + 1)
        metrics = b.runtime.metrics
        async with asyncio.timeout(60):
            while metrics.resyncs._value.get() < 1:
                await asyncio.sleep(0.05)
        # The queue stayed bounded: its bound, plus at most one writer batch
        # (1000 changes) routed while the sender was about to take them.
        assert metrics.high_water <= queue_max + 1000

        # Now read: what was sent before the decision, then resync, then close.
        await slow.read_until(lambda: slow.close_code is not None)
        slow.close()
        assert slow.messages[-1] == {"type": "resync", "session": session}
        assert slow.close_code == 1013
        assert slow.changes[-1]["change"] < n + 1

        # Resume from the cursor: everything arrives, nothing twice.
        ws = WsClient(b.ws_url)
        ws.changes[session] = list(slow.changes)
        await ws.connect(max_size=None)
        await ws.subscribe(session)
        await ws.until(session, n + 1)
        await ws.close()
        check_delivery(
            ws.changes[session],
            await pg_rows(db_url, session),
            await stream_changes(aredis, prefix, session),
        )
