"""The benchmarks' WebSocket clients: lean client processes that hold
hundreds of connections each and note when each change arrives (fanout.py,
stream.py and sidebyside.py drive them; ``Workers`` runs them as
``python -m tests.bench.fanout --worker CONFIG``)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import os
import random
import resource
import subprocess
import sys
import time
from typing import Any, cast

import orjson


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Client(asyncio.Protocol):
    """A WebSocket client lean enough that a few processes can hold a thousand
    of them: a raw protocol (RFC 6455 framing, text messages) instead of a
    library, so the load generator does not measure itself. It resubscribes
    from its cursor whenever the server closes it (resync, restart)."""

    def __init__(self, host: str, port: int, session: str, stats: dict[str, Any]) -> None:
        self.host, self.port = host, port
        self.session = session
        self.cursor = 0
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.open = False
        self.parts: list[bytes] = []
        self.gone = asyncio.get_running_loop().create_future()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.05
        while True:
            self.gone = loop.create_future()
            try:
                await loop.create_connection(lambda: self, self.host, self.port)
                await self.gone
                backoff = 0.05
            except OSError:
                pass
            self.stats["reconnects"] += 1
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, 2.0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are no subclass of asyncio.Transport, hence the cast.
        self.transport = cast(asyncio.Transport, transport)
        self.buf.clear()
        self.open = False
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.gone.done():
            self.gone.set_result(None)

    def _send(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None and len(payload) < 126
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.transport.write(bytes((0x80 | opcode, 0x80 | len(payload))) + mask + masked)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                assert self.transport is not None
                self.transport.close()
                return
            del buf[: end + 4]
            self.open = True
            msg = {"type": "subscribe", "session": self.session, "after": self.cursor}
            self._send(0x1, orjson.dumps(msg))
        now = time.time()
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1] & 0x7F
            head = 2
            if b1 == 126:
                if len(buf) < 4:
                    return
                b1, head = int.from_bytes(buf[2:4], "big"), 4
            elif b1 == 127:
                if len(buf) < 10:
                    return
                b1, head = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < head + b1:
                return
            payload = bytes(buf[head : head + b1])
            del buf[: head + b1]
            opcode = b0 & 0x0F
            if opcode in (0x0, 0x1):
                self.parts.append(payload)
                if b0 & 0x80:
                    self._message(b"".join(self.parts), now)
                    self.parts = []
            elif opcode == 0x8:  # close: answer and let the server drop us
                self._send(0x8, payload[:2])
            elif opcode == 0x9:
                self._send(0xA, payload)

    def _message(self, raw: bytes, now: float) -> None:
        m = orjson.loads(raw)
        if m["type"] == "rows":
            self._rows(m["changes"], now)
        elif m["type"] == "resync":
            self.stats["resyncs"] += 1

    def _rows(self, changes: list[dict[str, Any]], now: float) -> None:
        s = self.stats
        if s["first"] is None:
            s["first"] = now
        s["last"] = now
        s["count"] += len(changes)
        for c in changes:
            if c["change"] > self.cursor:
                self.cursor = c["change"]
            t = c["body"].get("t") if isinstance(c["body"], dict) else None
            if t is not None:
                s["latencies"].append(now - t)


async def worker(config: dict[str, Any]) -> None:
    """One client process: commands as JSON lines on stdin, answers on stdout."""
    stats: dict[str, Any] = {}

    def reset() -> None:
        stats.update(count=0, first=None, last=None, latencies=[], resyncs=0, reconnects=0)
        # A measurement starts: no collection of the client's own inside it.
        # With 500 connections a full one takes ~100 ms here, and it showed
        # up as the server's latency (gc.callbacks in a sitting at 2,000/s).
        gc.collect()
        gc.disable()

    reset()
    clients = [Client("127.0.0.1", config["port"], s, stats) for s in config["sessions"]]
    tasks = []
    for i, c in enumerate(clients):
        tasks.append(asyncio.create_task(c.run()))
        if i % 50 == 49:
            await asyncio.sleep(0.05)  # do not stampede the accept queue
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def answer(data: dict[str, Any]) -> None:
        sys.stdout.buffer.write(orjson.dumps(data) + b"\n")
        sys.stdout.flush()

    answer({"ready": True})
    while line := await reader.readline():
        cmd = orjson.loads(line)
        if cmd["cmd"] == "reset":
            reset()
            answer({"ok": True})
        elif cmd["cmd"] == "wait":
            targets: dict[str, int] = cmd["targets"]
            deadline = time.monotonic() + cmd.get("timeout", float("inf"))
            while any(c.cursor < targets.get(c.session, 0) for c in clients):
                if time.monotonic() > deadline:  # a stack that loses changes
                    break
                await asyncio.sleep(0.05)
            behind = sum(c.cursor < targets.get(c.session, 0) for c in clients)
            answer({**stats, "behind": behind})
        elif cmd["cmd"] == "quit":
            break
    for t in tasks:
        t.cancel()


class Workers:
    def __init__(self, procs: list[asyncio.subprocess.Process]) -> None:
        self.procs = procs

    @classmethod
    async def start(cls, port: int, sessions: list[str], clients: int, n: int) -> Workers:
        """``clients`` clients over ``sessions`` (round robin) in ``n`` processes."""
        assignment = [sessions[i % len(sessions)] for i in range(clients)]
        return await cls.spawn("tests.bench.fanout", port, assignment, n)

    @classmethod
    async def spawn(
        cls, module: str, port: int, assignment: list[str], n: int, **extra: Any
    ) -> Workers:
        """``n`` processes of ``python -m module --worker CONFIG``, one client
        per element of ``assignment`` (its session), ``extra`` in every config."""
        procs = []
        for w in range(n):
            config = {"port": port, "sessions": assignment[w::n], **extra}
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    module,
                    "--worker",
                    orjson.dumps(config).decode(),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    limit=1 << 30,  # one line carries every latency sample
                )
            )
        workers = cls(procs)
        await workers._read_all()
        return workers

    async def _read_all(self) -> list[dict[str, Any]]:
        out = []
        for p in self.procs:
            assert p.stdout is not None
            line = await p.stdout.readline()
            if not line:
                raise RuntimeError("a client worker died")
            out.append(orjson.loads(line))
        return out

    async def ask(self, cmd: dict[str, Any]) -> list[dict[str, Any]]:
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(orjson.dumps(cmd) + b"\n")
            await p.stdin.drain()
        return await self._read_all()

    async def stop(self) -> None:
        for p in self.procs:
            with contextlib.suppress(Exception):
                assert p.stdin is not None
                p.stdin.write(b'{"cmd":"quit"}\n')
                await p.stdin.drain()
        for p in self.procs:
            try:
                await asyncio.wait_for(p.wait(), 10)
            except TimeoutError:
                p.kill()
                await p.wait()
