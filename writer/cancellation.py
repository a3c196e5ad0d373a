"""Honouring a cancellation that a client library swallowed."""

from __future__ import annotations

import asyncio


def raise_if_cancelled() -> None:
    """redis-py's asyncio client can swallow a cancellation that arrives while
    it connects or reconnects (redis-py #2028, #2551; seen here during a shard's
    first XGROUP CREATE); a loop that goes on after that would keep a shard or
    a membership alive forever. Call this after each call into such a client."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
