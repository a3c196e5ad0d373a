"""The broadcaster's Prometheus metrics, in a registry of each app's own (so
several apps may live in one process: tests, ``rowcast up``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.connections = Gauge(
            "rowcast_broadcaster_connections", "Open feed connections", ["kind"], registry=r
        )
        self.subscriptions = Gauge(
            "rowcast_broadcaster_subscriptions", "Session subscriptions being served", registry=r
        )
        self.messages = Counter(
            "rowcast_broadcaster_pubsub_messages", "P:rows messages received", registry=r
        )
        self.changes_in = Counter(
            "rowcast_broadcaster_changes_received",
            "Changes received on pub/sub for a watched session",
            registry=r,
        )
        self.changes_out = Counter(
            "rowcast_broadcaster_changes_sent", "Changes sent to subscribers", registry=r
        )
        self.frames = Counter(
            "rowcast_broadcaster_frames_sent", "WebSocket messages and SSE writes", registry=r
        )
        self.fetches = Counter(
            "rowcast_broadcaster_fetches",
            "Reads of changes from PostgreSQL (catch-up, gaps, rechecks)",
            registry=r,
        )
        self.gaps = Counter(
            "rowcast_broadcaster_gaps",
            "Live change numbers that jumped (a missed message, read from PostgreSQL)",
            registry=r,
        )
        self.resyncs = Counter(
            "rowcast_broadcaster_resyncs", "Connections closed as too slow", registry=r
        )
        self.reconnects = Counter(
            "rowcast_broadcaster_pubsub_reconnects", "Pub/sub connections lost", registry=r
        )
        self.bad_messages = Counter(
            "rowcast_broadcaster_bad_messages", "Unreadable P:rows messages", registry=r
        )
        self.queue_high = Gauge(
            "rowcast_broadcaster_queue_high_water",
            "Most changes ever waiting on one connection",
            registry=r,
        )
        self.pubsub_up = Gauge(
            "rowcast_broadcaster_pubsub_connected", "1 while subscribed to P:rows", registry=r
        )
        self._high = 0

    def observe_queue(self, n: int) -> None:
        if n > self._high:
            self._high = n
            self.queue_high.set(n)

    @property
    def high_water(self) -> int:
        return self._high
