"""The broadcaster's settings: what ``create_app`` needs, passed explicitly
(only ``ops`` reads the environment)."""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass

from rowcast.broadcaster.auth import check_secret
from rowcast.broadcaster.guard import OriginKey, parse_origins
from rowcast.contract.errors import ConfigError
from rowcast.contract.keys import Keys


def default_instance() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(frozen=True)
class BroadcasterConfig:
    redis_url: str
    database_url: str
    prefix: str = "rowcast"
    shards: int = 1
    """ROWCAST_SHARDS: the broadcaster subscribes to every shard's channel."""
    secret: str | None = None
    """Signs client tokens; None: no auth (then only loopback may listen)."""
    window_ms: float = 5.0
    """Coalescing window: how long a connection's changes gather before a frame
    goes out (a change with ``ack`` goes at once). ROWCAST_COALESCE_MS."""
    max_batch: int = 256
    """Most changes in one frame; a full batch goes at once. ROWCAST_FRAME_CHANGES."""
    queue_max: int = 10_000
    """Most changes waiting on one connection before it is told to resync
    and closed. Also bounds each subscription's catch-up buffer. ROWCAST_QUEUE_MAX."""
    page: int = 1000
    """Rows per catch-up read from PostgreSQL."""
    sse_heartbeat_s: float = 15.0
    """An SSE comment line after this long without an event (keeps proxies open)."""
    sse_retry_ms: int = 1000
    """The reconnection delay announced to EventSource clients."""
    stall_s: float = 30.0
    """A send to one client that takes longer (it stopped reading) closes the
    connection: resync first, as for a slow one. ROWCAST_STALL_S."""
    ws_idle_s: float = 60.0
    """A WebSocket with no subscription for this long is closed (1000). ROWCAST_WS_IDLE_S."""
    max_subscriptions: int = 100
    """Sessions one WebSocket may subscribe to at once."""
    pool_max: int = 8
    """PostgreSQL connections of the process."""
    sessions_limit: int = 100
    """Default length of ``/api/sessions`` (``?limit=`` up to 1000)."""
    collapse: bool = False
    """Within one window, send only a row's latest revision (ROWCAST_COLLAPSE).
    Off by default: the contract promises live changes without gaps, and a
    collapsed change is a gap in the change numbers a client sees."""
    instance: str = ""
    """The heartbeat's name; empty: host:pid:random."""
    heartbeat_every_s: float = 5.0
    heartbeat_ttl_s: int = 15
    origins: tuple[str, ...] = ()
    """Browser origins allowed besides the broadcaster's own (ROWCAST_ORIGINS)."""
    max_connections: int = 20_000
    """Requests and sockets served at once by the process (ROWCAST_MAX_CONNECTIONS)."""
    max_per_client: int = 2_000
    """Of those, from one client address (ROWCAST_MAX_CONNECTIONS_PER_CLIENT)."""

    @property
    def keys(self) -> Keys:
        return Keys(self.prefix)

    @property
    def allowed_origins(self) -> frozenset[OriginKey]:
        return parse_origins(self.origins)

    @property
    def window(self) -> float:
        return self.window_ms / 1000.0

    def check(self) -> None:
        if not self.redis_url or not self.database_url:
            raise ConfigError("the broadcaster needs a Redis URL and a PostgreSQL URL")
        if self.shards < 1:
            raise ConfigError("the broadcaster needs at least 1 shard")
        if self.secret is not None:
            check_secret(self.secret)
        parse_origins(self.origins)
        if self.stall_s <= 0 or self.ws_idle_s <= 0:
            raise ConfigError("the stall and idle times must be positive")
        if self.max_connections < 1 or self.max_per_client < 1:
            raise ConfigError("the connection limits must be at least 1")
        if not 0 <= self.window_ms <= 60_000:
            raise ConfigError("the coalescing window must be 0..60000 ms")
        if self.max_batch < 1:
            raise ConfigError("a frame must hold at least 1 change")
        if self.page < 1:
            raise ConfigError("the catch-up page must be at least 1 row")
        if self.queue_max < max(2 * self.page, self.max_batch):
            raise ConfigError(
                f"the queue bound ({self.queue_max}) must hold two catch-up pages"
                f" ({2 * self.page}) and one frame"
            )
