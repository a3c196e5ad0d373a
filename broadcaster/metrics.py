"""The broadcaster's Prometheus metrics, in a registry of each app's own (so
several apps may live in one process: tests, ``rowcast up``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

POOL_STATS = {
    "pool_max": "Most connections the pool may open",
    "pool_size": "Connections the pool manages (open, being opened, or lent out)",
    "pool_available": "Connections idle in the pool",
    "requests_waiting": "Requests waiting for a connection",
}
"""psycopg_pool's ``get_stats()`` keys exposed as gauges (``rowcast_broadcaster_db_*``)."""


class _PoolCollector(Collector):
    """The pool's own figures, read at scrape time (so a wedged pool shows)."""

    def __init__(self, stats: Callable[[], Mapping[str, int]]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self.stats()
        for key, doc in POOL_STATS.items():
            yield GaugeMetricFamily(f"rowcast_broadcaster_db_{key}", doc, value=now.get(key, 0))


COUNTS = {
    "messages": ("rowcast_broadcaster_pubsub_messages", "P:{N}:changes messages received"),
    "changes_in": (
        "rowcast_broadcaster_changes_received",
        "Changes received on pub/sub for a watched session",
    ),
    "changes_out": ("rowcast_broadcaster_changes_sent", "Changes sent to subscribers"),
    "frames": ("rowcast_broadcaster_frames_sent", "WebSocket messages and SSE writes"),
    "frames_direct": (
        "rowcast_broadcaster_frames_direct",
        "Frames and SSE writes made at once to a quiet connection (without waking its sender)",
    ),
}
"""Counters bumped for every message, frame or change: plain integers of the
``Metrics`` object, read when Prometheus scrapes (a prometheus_client
Counter takes a lock at every ``inc``, a tenth of the broadcaster's CPU at
50,000 deliveries per second)."""


class _CountsCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily]:
        for attr, (name, doc) in COUNTS.items():
            yield CounterMetricFamily(name, doc, value=getattr(self.metrics, attr))


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.messages = 0
        self.changes_in = 0
        self.changes_out = 0
        self.frames = 0
        self.frames_direct = 0
        r.register(_CountsCollector(self))
        self.connections = Gauge(
            "rowcast_broadcaster_connections", "Open feed connections", ["kind"], registry=r
        )
        self.subscriptions = Gauge(
            "rowcast_broadcaster_subscriptions", "Session subscriptions being served", registry=r
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
        self.stalls = Counter(
            "rowcast_broadcaster_stalls",
            "Connections closed as stalled: a send did not complete in time",
            registry=r,
        )
        self.idle_closed = Counter(
            "rowcast_broadcaster_idle_closed",
            "WebSockets closed after a time without any subscription",
            registry=r,
        )
        self.reconnects = Counter(
            "rowcast_broadcaster_pubsub_reconnects", "Pub/sub connections lost", registry=r
        )
        self.bad_messages = Counter(
            "rowcast_broadcaster_bad_messages", "Unreadable P:{N}:changes messages", registry=r
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

    def watch_pool(self, stats: Callable[[], Mapping[str, int]]) -> None:
        self.registry.register(_PoolCollector(stats))

    def observe_queue(self, n: int) -> None:
        if n > self._high:
            self._high = n
            self.queue_high.set(n)

    @property
    def high_water(self) -> int:
        return self._high
