"""The ``health`` job: a shard with no writer, a stuck writer, stale pending
entries (typed findings, logged as warnings and returned as JSON)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from rowcast.contract.keys import GROUP
from rowcast.contract.streamid import as_id
from rowcast.ops.admin.maintenance import JobConfig, JobLock
from rowcast.ops.admin.shell import connect_db, text
from rowcast.ops.admin.status import (
    applied_offsets,
    read_members,
    read_shard,
    shard_report,
)
from rowcast.ops.settings import Settings

log = logging.getLogger(__name__)


class WriterState(StrEnum):
    """What the health job makes of a shard's writer."""

    OK = "ok"
    ABSENT = "absent"
    """Nobody holds the lease."""
    STUCK = "stuck"
    """A backlog older than ROWCAST_WRITER_STUCK_MS while the applied offset
    has not moved for as long."""


def writer_state(
    holder: str | None,
    backlog: int,
    oldest_waiting_ms: int | None,
    offset_idle_ms: int | None,
    stuck_ms: int,
) -> WriterState:
    if holder is None:
        return WriterState.ABSENT
    old = backlog > 0 and (oldest_waiting_ms or 0) > stuck_ms
    if old and (offset_idle_ms is None or offset_idle_ms > stuck_ms):
        return WriterState.STUCK
    return WriterState.OK


@dataclass(frozen=True, slots=True)
class ShardHealth:
    """What the health job found on one shard (its JSON adds these fields to
    the shard's ``status`` report)."""

    shard: int
    waiting: int
    """Entries pending or not yet delivered."""
    holder: str | None
    writer: WriterState
    oldest_waiting_ms: int | None
    offset_idle_ms: int | None
    stale_pending: list[str]
    writers_alive: int = 0

    def problems(self, stale_ms: int) -> list[str]:
        n, out = self.shard, []
        if self.writer is WriterState.ABSENT:
            alive = self.writers_alive
            why = f" although {alive} writers are alive (see their logs)" if alive else ""
            out.append(
                f"shard {n}: no writer holds the lease ({self.waiting} entries waiting){why}"
            )
        elif self.writer is WriterState.STUCK:
            out.append(
                f"shard {n}: writer {self.holder} is stuck: {self.waiting} entries waiting,"
                f" the oldest for {self.oldest_waiting_ms} ms,"
                f" no progress for {self.offset_idle_ms} ms"
            )
        if self.stale_pending:
            more = "+" if len(self.stale_pending) >= 10 else ""
            out.append(
                f"shard {n}: {len(self.stale_pending)}{more} pending entries idle over {stale_ms}"
                f" ms (first {self.stale_pending[0]})"
            )
        return out

    def fields(self) -> dict[str, Any]:
        """The fields the health job adds to the shard's report."""
        return {
            "writer": str(self.writer),
            "oldest_waiting_ms": self.oldest_waiting_ms,
            "offset_idle_ms": self.offset_idle_ms,
            "stale_pending": self.stale_pending,
            "writers_alive": self.writers_alive,
        }


def health(r: redis.Redis, settings: Settings, config: JobConfig, lock: JobLock) -> dict[str, Any]:
    keys = settings.keys
    streams = [keys.entries(n) for n in range(settings.shards)]
    with connect_db(settings) as conn:
        offsets = applied_offsets(conn, streams)
    members, now_ms = read_members(r, keys)
    alive = sum(1 for _, at in members if now_ms - at <= settings.lease_ms)
    shards, problems = [], []
    for n, key in enumerate(streams):
        offset = offsets.get(key)
        raw = read_shard(r, keys, n, None if offset is None else offset[0])
        shard = shard_report(raw)
        waiting = shard["pending"] + (shard["lag"] or 0)
        oldest = as_id(raw.pending_min) if raw.pending_min else None
        if shard["lag"]:  # the first entry not delivered yet
            after = shard["last_delivered"]
            first: Any = r.xrange(key, f"({after}" if after else "-", "+", count=1)
            got = as_id(first[0][0]) if first else None
            if got is not None and (oldest is None or got < oldest):
                oldest = got
        stale: list[str] = []
        if shard["pending"]:
            found: Any = r.xpending_range(key, GROUP, "-", "+", 10, idle=config.pending_stale_ms)
            stale = [text(f["message_id"]) or "" for f in found]
        oldest_ms = None if oldest is None else max(0, raw.now_ms - oldest[0])
        idle_ms = None if offset is None else offset[2]
        holder = shard["lease"]["holder"]
        found_health = ShardHealth(
            shard=n,
            waiting=waiting,
            holder=holder,
            writer=writer_state(holder, waiting, oldest_ms, idle_ms, config.writer_stuck_ms),
            oldest_waiting_ms=oldest_ms,
            offset_idle_ms=idle_ms,
            stale_pending=stale,
            writers_alive=alive,
        )
        shards.append({**shard, **found_health.fields()})
        problems += found_health.problems(config.pending_stale_ms)
    for p in problems:
        log.warning("health: %s", p)
    return {"job": "health", "ok": not problems, "problems": problems, "shards": shards}
