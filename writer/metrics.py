"""The writer's Prometheus metrics (served by ``ops`` on a configurable port)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram

if TYPE_CHECKING:
    from writer.publish import Outcome


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
            "Time to validate and commit one batch",
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
