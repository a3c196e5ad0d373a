"""The peer of the fan-out benchmark: encode/broadcaster 0.3.1 on Starlette.

Redis pub/sub straight to the sockets, no persistence: what rowcast is
compared with (issue 12). One WebSocket route, ``/ws``, takes the subscribe
message rowcast's clients send (``{"type":"subscribe","session":S,"after":C}``;
``after`` is ignored, there is nothing to replay) and forwards every message
published on the session's channel, ``<prefix>:<session>``, in the frame
rowcast sends: ``{"type":"rows","session":S,"changes":[<message>]}``. The
publisher (tests/bench/sidebyside.py) publishes each change as the JSON
rowcast would send for it, so one client harness measures both.

The peer runs from its own scratch venv outside the repository, made on
demand (``ensure_venv``) and never part of the project's environment:

    <venv>/bin/python tests/bench/peer.py --port P --redis URL --prefix PREFIX

Only the standard library is imported at module level: this file is imported
by the project (the layout test, the driver) and run by the peer venv.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

VENV = Path("/tmp/rowcast-peer-venv")
REQUIREMENTS = ["broadcaster==0.3.1", "redis>=5", "starlette", "uvicorn[standard]"]
VERSION = "0.3.1"
_CHECK = (
    "import broadcaster, redis, starlette, uvicorn; "
    f"assert broadcaster.__version__ == {VERSION!r}, broadcaster.__version__"
)
_REPO = Path(__file__).resolve().parents[2]
# The peer's python runs isolated (-I): the repository's own broadcaster/
# folder must not shadow encode/broadcaster.


def ensure_venv(venv: Path = VENV, timeout: float = 600.0) -> tuple[Path | None, str]:
    """The peer venv's python, made (``python3 -m venv`` and pip) when it is
    missing or incomplete; ``(None, why)`` when it cannot be had."""
    venv = venv.resolve()
    if venv == _REPO or _REPO in venv.parents:
        return None, f"{venv} is inside the repository; give a path outside it"
    python = venv / "bin" / "python"

    def works() -> bool:
        return python.exists() and subprocess.run([python, "-I", "-c", _CHECK]).returncode == 0

    if works():
        return python, f"{venv} (existing)"
    base = shutil.which("python3") or sys.executable
    steps = [
        [base, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "-q", *REQUIREMENTS],
    ]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, f"{' '.join(step[:4])} failed: {e}"
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return None, f"{' '.join(step[:4])} failed: {' | '.join(tail)}"
    if not works():
        return None, f"{venv}: the installed packages do not import"
    return python, f"{venv} (made now)"


def command(python: Path, port: int, redis_url: str, prefix: str) -> list[str]:
    """The peer server's command line."""
    script = str(Path(__file__).resolve())
    options = ["--port", str(port), "--redis", redis_url, "--prefix", prefix]
    return [str(python), "-I", script, *options]


def app(redis_url: str, prefix: str) -> Any:
    """The Starlette app (in the peer venv only)."""
    import asyncio
    import contextlib
    import json

    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket

    from broadcaster import Broadcast  # encode/broadcaster, from the peer venv

    broadcast = Broadcast(redis_url)
    # Broadcast.subscribe awaits the backend's SUBSCRIBE before it records the
    # channel's first queue, so two first subscribers to one channel racing
    # each other would lose one queue (0.3.1): subscriptions are serialised.
    subscribing = asyncio.Lock()
    state = {"pubsub": "starting"}

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> Any:
        async with broadcast, broadcast.subscribe(channel=f"{prefix}:-"):
            # Held to the end. The Redis backend wakes its listener before its
            # first SUBSCRIBE is recorded (seen with redis-py 8.2), so that listener
            # finds nothing subscribed, ends and waits for the next
            # subscription: this one takes that first place, and with it held
            # the listener never runs out of channels again.
            state["pubsub"] = "subscribed"
            yield

    async def healthz(_: Any) -> JSONResponse:
        return JSONResponse(state)

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        msg = json.loads(await websocket.receive_text())
        if msg.get("type") != "subscribe" or not isinstance(msg.get("session"), str):
            await websocket.close(1008)
            return
        session = msg["session"]
        head = '{"type":"rows","session":' + json.dumps(session) + ',"changes":['

        async def forward() -> None:
            async with contextlib.AsyncExitStack() as stack:
                async with subscribing:
                    subscriber = await stack.enter_async_context(
                        broadcast.subscribe(channel=f"{prefix}:{session}")
                    )
                async for event in subscriber:
                    await websocket.send_text(head + event.message + "]}")

        async def until_closed() -> None:
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass

        tasks = [asyncio.create_task(forward()), asyncio.create_task(until_closed())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    return Starlette(
        routes=[Route("/healthz", healthz), WebSocketRoute("/ws", ws)], lifespan=lifespan
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--redis", required=True, help="redis:// URL (one server)")
    ap.add_argument("--prefix", required=True, help="channels are <prefix>:<session>")
    args = ap.parse_args()
    import uvicorn

    uvicorn.run(app(args.redis, args.prefix), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
