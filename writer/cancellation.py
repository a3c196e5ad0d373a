"""Honouring a cancellation that a client library swallowed, and telling
cancellations from the error that caused them."""

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


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The error that ended a task group (not the cancellations it caused)."""
    for e in group.exceptions:
        if isinstance(e, BaseExceptionGroup):
            return first_error(e)
        if not isinstance(e, asyncio.CancelledError):
            return e
    return group.exceptions[0]
