"""What goes on the wire: WebSocket messages and Server-Sent Events.

Every change's JSON was encoded once (item.py); frames are built by joining
those bytes, never by re-encoding a change per connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from rowcast.broadcaster.item import Item


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
