"""The writer's Prometheus metrics (served by ``ops`` on a configurable port)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rowcast.contract.keys import GROUP, Keys

if TYPE_CHECKING:
    from rowcast.writer.publish import Outcome


class _WriterMetrics:
    def __init__(self) -> None:
        self.entries = Counter(
            "rowcast_writer_entries", "Entries committed (valid or dead)", ["shard"]
        )
        self.batches = Counter("rowcast_writer_batches", "Batches committed", ["shard"])
        self.batch_size = Histogram(
            "rowcast_writer_batch_size",
            "Entries per batch",
            ["shard"],
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
        )
        self.commit_seconds = Histogram(
            "rowcast_writer_commit_seconds",
            "Time to commit one batch (its transaction alone)",
            ["shard"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.changes = Counter("rowcast_writer_changes", "Changes published", ["shard"])
        self.dead = Counter("rowcast_writer_dead_letters", "Entries dead-lettered", ["shard"])
        self.receipts = Counter("rowcast_writer_receipts", "Receipts pushed", ["shard"])

    def observe_commit(self, shard: int, entries: int, seconds: float) -> None:
        s = str(shard)
        self.entries.labels(s).inc(entries)
        self.batches.labels(s).inc()
        self.batch_size.labels(s).observe(entries)
        self.commit_seconds.labels(s).observe(seconds)

    def observe_published(self, shard: int, out: Outcome) -> None:
        s = str(shard)
        self.changes.labels(s).inc(len(out.changes))
        self.dead.labels(s).inc(len(out.dead))
        self.receipts.labels(s).inc(len(out.receipts))


METRICS = _WriterMetrics()


class StreamCollector(Collector):
    """Gauges read from Redis when Prometheus scrapes: per shard, the input
    stream's length and its consumer group's lag (entries not yet delivered)
    and pending count (delivered, not yet acknowledged). One XLEN and one
    XINFO GROUPS per shard, both O(1): cheap enough for every scrape.

    ``redis`` is a synchronous client (the metrics server runs in a thread).
    Register it with ``prometheus_client.REGISTRY.register(StreamCollector(...))``.
    """

    def __init__(self, redis: Any, keys: Keys, shards: Sequence[int]) -> None:
        self.redis = redis
        self.keys = keys
        self.shards = list(shards)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # no Redis call at registration

    def collect(self) -> Iterator[Metric]:
        length = GaugeMetricFamily(
            "rowcast_stream_length", "Entries in the input stream", labels=["shard"]
        )
        lag = GaugeMetricFamily(
            "rowcast_stream_lag",
            "Entries of the input stream not yet delivered to the writer",
            labels=["shard"],
        )
        pending = GaugeMetricFamily(
            "rowcast_stream_pending",
            "Entries delivered to the writer and not yet acknowledged",
            labels=["shard"],
        )
        for n in self.shards:
            key = self.keys.entries(n)
            try:
                pipe = self.redis.pipeline(transaction=False)
                pipe.xlen(key)
                pipe.xinfo_groups(key)
                size, groups = pipe.execute(raise_on_error=False)
            except Exception:  # a scrape must not fail because Redis is away
                continue
            if isinstance(size, Exception):
                continue
            label = [str(n)]
            length.add_metric(label, int(size))
            group = None
            if not isinstance(groups, Exception):
                group = next((g for g in groups if _name(g.get("name")) == GROUP), None)
            if group is None:
                lag.add_metric(label, int(size))
                pending.add_metric(label, 0)
                continue
            if group.get("lag") is not None:  # unknown after deletions: leave it out
                lag.add_metric(label, int(group["lag"]))
            pending.add_metric(label, int(group.get("pending") or 0))
        yield length
        yield lag
        yield pending


def _name(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
