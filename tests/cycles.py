"""uvicorn's HTTP response cycle on a transport of the caller's, for tests and
benchmarks of the event streams' direct path (no server, no socket)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle


def response_cycle(transport: Any) -> RequestResponseCycle:
    """The cycle of one GET, as uvicorn's httptools protocol makes it."""
    log = logging.getLogger(__name__)
    return RequestResponseCycle(
        scope={"type": "http", "method": "GET", "path": "/", "http_version": "1.1"},  # type: ignore[arg-type]
        transport=transport,
        flow=FlowControl(transport),
        logger=log,
        access_logger=log,
        access_log=False,
        default_headers=[],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=True,
        on_response=lambda: None,
    )
