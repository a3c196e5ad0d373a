"""What goes on the wire: WebSocket messages and Server-Sent Events.

Every change's JSON was encoded once (item.py); frames are built by joining
those bytes, never by re-encoding a change per connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from websockets.frames import Frame, Opcode

from rowcast.broadcaster.item import Item
from rowcast.broadcaster.memo import Memo


def ws_rows(session: str, items: Sequence[Item]) -> bytes:
    """``{"type":"rows","session":S,"changes":[...]}``"""
    return b"".join(
        (
            b'{"type":"rows","session":',
            orjson.dumps(session),
            b',"changes":[',
            b",".join(i.json for i in items),
            b"]}",
        )
    )


def ws_rows_wire(session: str, items: Sequence[Item]) -> bytes:
    """``ws_rows`` as a whole WebSocket text frame from a server (unmasked, no
    extension), serialized by the websockets library. The frame of one change
    is made once and kept: every subscriber of the session sends the same
    bytes."""
    if len(items) != 1:
        return _wire(ws_rows(session, items))
    # Keyed by the change's own encoded bytes (the same object for every
    # connection, so a lookup is an identity check), with its session.
    key = (session, items[0].json)
    hit = _wires.get(key)
    if hit is None:
        hit = _wire(ws_rows(session, items))
        if len(hit) > _WIRE_CACHED_MAX:
            return hit  # rarely shared enough to be worth keeping
        _wires.put(key, hit, 2 * len(hit))  # the frame and its key's bytes
    return hit


def _wire(payload: bytes) -> bytes:
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


_wires: Memo[bytes] = Memo()
_WIRE_CACHED_MAX = 16 * 1024


def ws_resync(session: str) -> bytes:
    return orjson.dumps({"type": "resync", "session": session})


def ws_error(why: str, **extra: Any) -> bytes:
    return orjson.dumps({"type": "error", "error": why, **extra})


def sse_events(items: Sequence[Item]) -> bytes:
    """One ``change`` event per item; ``id:`` is its change number, so an
    EventSource that reconnects sends the cursor back as Last-Event-ID."""
    return b"".join(b"id: %d\nevent: change\ndata: %s\n\n" % (i.change, i.json) for i in items)


def sse_resync(session: str) -> bytes:
    return b"event: resync\ndata: %s\n\n" % orjson.dumps({"session": session})


def sse_retry(ms: int) -> bytes:
    return b"retry: %d\n\n" % ms


SSE_PING = b": ping\n\n"
