"""The event loop of rowcast's long-lived processes (writer, broadcaster, up)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run a long-lived process's main coroutine: on uvloop (it comes with
    uvicorn[standard]; each hop of the write path costs less on it), after
    moving what start-up made out of the garbage collector's reach."""
    # What start-up made (modules, clients, the app) lives as long as the
    # process: keep it out of every collection, so a full one (a pause felt
    # by every batch and connection) has less to walk.
    gc.freeze()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(main)
    else:
        uvloop.run(main)
