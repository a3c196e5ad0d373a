"""The broadcaster's own Python per delivery, without sockets.

    python -m tests.bench.route [--sessions 100] [--clients 10] [--messages 2000]
        [--sink ws|sse|sse-sender]

Routes pub/sub messages (5 changes each, ~200-byte bodies) through a real
``Hub`` to ``--clients`` quiet WebSocket connections per session, each an
``Outbox`` on a ``WsConnection``'s direct path whose uvicorn protocol is
replaced by a stand-in that only counts writes. What is left out is what the
kernel does per frame (the ``send()`` system call and loopback TCP), so the
figure is the part of a delivery's CPU that Python code can change; compare
it with the CPU per delivery of ``tests.bench.sidebyside``. No servers.

``--sink sse`` serves Server-Sent Events instead: each connection an
``EventStream`` whose direct path writes on uvicorn's real response cycle,
over the same counting transport; ``--sink sse-sender`` turns that path off,
so every change goes through the connection's sender and uvicorn's ASGI
``send`` (how event streams were served before they had it).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from typing import Any

import orjson
from websockets.protocol import OPEN

from rowcast.broadcaster.hub import Hub
from rowcast.broadcaster.metrics import Metrics
from rowcast.broadcaster.outbox import Outbox, Ticker
from rowcast.broadcaster.sse import Chunks, EventStream
from rowcast.broadcaster.ws import Direct, WsConnection
from rowcast.contract.keys import Keys
from rowcast.ops.commands.loop import run_loop
from tests.cycles import response_cycle
from tests.stubs import EmptyReader, NullSink


class _Transport:
    def __init__(self) -> None:
        self.frames = 0

    def write(self, data: bytes) -> None:
        self.frames += 1

    def is_closing(self) -> bool:
        return False


class _Protocol:
    """What ``Direct`` reads of uvicorn's websockets-sansio protocol."""

    def __init__(self) -> None:
        self.conn: Any = type("Conn", (), {})()
        self.conn.state, self.conn.extensions, self.conn.expect_continuation_frame = OPEN, [], False
        self.transport = _Transport()
        self.writable = asyncio.Event()
        self.writable.set()
        self.close_sent = self.disconnected = False
        self.handshake_complete = True


def _sse_sink(direct: bool) -> EventStream:
    """An event stream whose response head went out: its ASGI send is
    uvicorn's own (no middleware), on a transport that counts writes."""
    cycle = response_cycle(_Transport())
    cycle.response_started, cycle.chunked_encoding = True, True
    stream = EventStream(None, "", 0, None)  # type: ignore[arg-type]
    stream._send = cycle.send
    stream._direct = Chunks(cycle) if direct else None
    return stream


class _Sink(NullSink):
    ready = WsConnection.ready
    send_now = WsConnection.send_now

    def __init__(self) -> None:
        self._direct = Direct(_Protocol())


async def run(sessions: int, clients: int, messages: int, sink: str) -> tuple[int, int, float]:
    metrics = Metrics()
    hub = Hub("redis://127.0.0.1:1/0", Keys("route"), EmptyReader(), metrics)  # type: ignore[arg-type]
    ticker = Ticker(0.000_001)  # every connection quiet again by the next message
    names = [f"s{i:04d}" for i in range(sessions)]
    tasks = []
    for s in names:
        for _ in range(clients):
            conn = _Sink() if sink == "ws" else _sse_sink(sink == "sse")
            box = Outbox(conn, metrics, ticker)  # type: ignore[arg-type]
            tasks.append(asyncio.create_task(box.run()))
            hub.watch(s, 0, box)
    for _ in range(20):
        await asyncio.sleep(0)  # every subscription caught up (nothing stored)
    change = [0] * sessions
    body = {"t": 1.0, "text": "x" * 180}
    data = []
    for k in range(messages):
        changes = []
        for j in range(5):
            i = (k * 5 + j) % sessions
            change[i] += 1
            c = change[i]
            changes.append(
                {"session": names[i], "row": f"r{c}", "sequence": c - 1, "revision": 0,
                 "change": c, "kind": "assistant", "body": body, "ack": False}
            )  # fmt: skip
        data.append(orjson.dumps({"shard": 0, "changes": changes}))
    gc.collect()
    gc.freeze()
    started = time.process_time()
    for message in data:
        hub.route(message)
        await asyncio.sleep(0.000_002)  # past the window: quiet connections
    cpu = time.process_time() - started
    for t in tasks:
        t.cancel()
    return metrics.changes_out, metrics.frames_direct, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--clients", type=int, default=10, help="connections per session")
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--sink", choices=("ws", "sse", "sse-sender"), default="ws")
    a = ap.parse_args()
    if not 1 <= a.sessions * a.clients <= 100_000 or not 1 <= a.messages <= 100_000:
        ap.error("--sessions times --clients must be in 1..100000, --messages in 1..100000")
    out: list[tuple[int, int, float]] = []

    async def go() -> None:
        out.append(await run(a.sessions, a.clients, a.messages, a.sink))

    run_loop(go())
    delivered, direct, cpu = out[0]
    print(
        f"{delivered:,} deliveries ({direct:,} direct frames): "
        f"{cpu / max(1, delivered) * 1e6:.2f} µs of CPU per delivery, sockets left out"
    )


if __name__ == "__main__":
    main()
