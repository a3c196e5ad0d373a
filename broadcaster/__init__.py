"""The broadcaster: the ASGI app that turns committed changes into what people
see (HTTP pages, SSE, WebSocket, the web UI), never missing, repeating or
reordering a change however a client connects, disconnects or falls behind.

    app = create_app(redis_url=..., database_url=..., prefix=..., secret=...)
    await serve(app, "127.0.0.1", 8000, stop_event)
"""

from rowcast.broadcaster.app import create_app
from rowcast.broadcaster.config import BroadcasterConfig
from rowcast.broadcaster.server import check_listen, serve

__all__ = ["BroadcasterConfig", "check_listen", "create_app", "serve"]
