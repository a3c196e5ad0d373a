"""The last hops of the floor bench (``floor.py --screen``): a real
broadcaster and a WebSocket client, each a process of its own, that print
when the probe's change passed them.

    python -m tests.bench.screen --serve PORT   (env: the pipeline's ROWCAST_*)
    python -m tests.bench.screen --client PORT

The broadcaster is ``rowcast broadcaster`` with two timers wrapped around
it from outside: when the feed hands the hub a batch holding a change of
session ``floor`` ("hub <t> <row>"), and when that change is written to a
connection ("write <t> <row> direct|sender": at once by the hub, or by the
connection's sender after a coalescing window). The client subscribes to
``floor`` and prints "<t> <row>" for each change it reads. Times are
``perf_counter``: the machine's monotonic clock, the same in every process.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import websockets

from rowcast.broadcaster.hub import Hub
from rowcast.broadcaster.item import Item
from rowcast.broadcaster.ws import WsConnection
from rowcast.ops.commands import broadcaster
from rowcast.ops.commands.loop import run_loop
from rowcast.ops.settings import Settings

PROBE = "floor"


def _mark(*fields: object) -> None:
    sys.stdout.write(" ".join(str(f) for f in fields) + "\n")
    sys.stdout.flush()


def _probe_rows(batches: list[tuple[str, list[Item]]]) -> list[str]:
    return [i.row for session, items in batches if session == PROBE for i in items]


def _instrument() -> None:
    route_all = Hub.route_all
    send_now = WsConnection.send_now
    send = WsConnection.send
    needle = b'"session":"%s"' % PROBE.encode()

    def timed_route_all(self: Hub, messages: Sequence[bytes]) -> None:
        at = time.perf_counter()
        for data in messages:
            if needle in data:
                for c in orjson.loads(data)["changes"]:
                    if c.get("session") == PROBE:
                        _mark("hub", f"{at:.6f}", c["row"])
        route_all(self, messages)

    def timed_send_now(self: WsConnection, batches: list[tuple[str, list[Item]]]) -> None:
        send_now(self, batches)
        at = time.perf_counter()
        for row in _probe_rows(batches):
            _mark("write", f"{at:.6f}", row, "direct")

    async def timed_send(self: WsConnection, batches: list[tuple[str, list[Item]]]) -> None:
        await send(self, batches)
        at = time.perf_counter()
        for row in _probe_rows(batches):
            _mark("write", f"{at:.6f}", row, "sender")

    patches: dict[str, Callable[..., Any]] = {
        "send_now": timed_send_now,
        "send": timed_send,
    }
    Hub.route_all = timed_route_all  # type: ignore[method-assign]
    for name, fn in patches.items():
        setattr(WsConnection, name, fn)


def serve(port: int) -> int:
    _instrument()
    args = argparse.Namespace(host="127.0.0.1", port=port)
    return broadcaster.run(args, Settings.from_env(os.environ))


async def client(port: int) -> None:
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
        await ws.send(orjson.dumps({"type": "subscribe", "session": PROBE, "after": 0}).decode())
        _mark("subscribed")
        async for raw in ws:
            at = time.perf_counter()
            msg = orjson.loads(raw)
            if msg.get("type") == "rows" and msg.get("session") == PROBE:
                for c in msg["changes"]:
                    _mark(f"{at:.6f}", c["row"])


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--serve", type=int, help="the instrumented broadcaster on this port")
    ap.add_argument("--client", type=int, help="the WebSocket client of this port")
    a = ap.parse_args()
    if a.serve is not None:
        sys.exit(serve(a.serve))
    if a.client is not None:
        run_loop(client(a.client))
        return
    ap.error("--serve PORT or --client PORT")


if __name__ == "__main__":
    main()
