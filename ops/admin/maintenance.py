"""The maintenance jobs that trim and verify, their settings and their lock
(``rowcast jobs`` in jobs.py runs them; the health job is in health.py).

Every job takes a lock (SET NX PX on ``Keys.job_lock(name)``) and is safe to
run twice: a second run while the first holds the lock is skipped, and each
job only moves state towards the same end.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson
import redis

from rowcast.contract.streamid import MAX_PART, StreamId, as_id, fmt
from rowcast.ops.admin.shell import connect_db, text
from rowcast.ops.admin.status import (
    applied_offsets,
    read_shard,
)
from rowcast.ops.admin.verify import verify
from rowcast.ops.settings import Settings, env_number
from rowcast.writer.lease import RELEASE_IF_HELD, RENEW_IF_HELD

log = logging.getLogger(__name__)


LOCK_MS = {"trim-entries": 300_000, "trim-rows": 300_000, "health": 60_000, "verify": 600_000}


TRIM_STEP = 10_000
"""Entries removed per XTRIM call, so one call never blocks Redis for long."""


@dataclass(frozen=True)
class JobConfig:
    """The jobs' own settings (environment, overridable per job)."""

    entries_maxlen: int | None = 1_000_000
    """ROWCAST_ENTRIES_MAXLEN: entries kept per input stream for replay."""
    entries_max_age_ms: int | None = None
    """ROWCAST_ENTRIES_MAX_AGE_MS: entries older than this are trimmed (unset: no limit)."""
    pending_stale_ms: int = 60_000
    """ROWCAST_PENDING_STALE_MS: a pending entry idle this long is reported."""
    writer_stuck_ms: int = 60_000
    """ROWCAST_WRITER_STUCK_MS: a backlog this old with no progress means a stuck writer."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> JobConfig:
        env = os.environ if env is None else env
        c = cls(
            entries_maxlen=env_number(env, "ROWCAST_ENTRIES_MAXLEN", 1_000_000, low=0),
            entries_max_age_ms=env_number(env, "ROWCAST_ENTRIES_MAX_AGE_MS", None, low=1),
            pending_stale_ms=env_number(env, "ROWCAST_PENDING_STALE_MS", 60_000, low=1),
            writer_stuck_ms=env_number(env, "ROWCAST_WRITER_STUCK_MS", 60_000, low=1),
        )
        return replace(c, **{k: v for k, v in overrides.items() if v is not None})


def next_id(sid: StreamId) -> StreamId:
    """The smallest id above ``sid``."""
    return (sid[0], sid[1] + 1) if sid[1] < MAX_PART else (sid[0] + 1, 0)


def safe_minid(
    applied: StreamId | None, pending_min: StreamId | None, delivered: StreamId | None
) -> StreamId | None:
    """The lowest id an input stream must keep: above the applied offset, at
    or below the first pending entry, above the last delivered one. None when
    nothing may go (no offset, or no consumer group)."""
    if applied is None or delivered is None:
        return None
    out = min(next_id(applied), next_id(delivered))
    if pending_min is not None:
        out = min(out, pending_min)
    return out


def age_cut(now_ms: int, max_age_ms: int | None) -> StreamId | None:
    if max_age_ms is None:
        return None
    return (max(0, now_ms - max_age_ms), 0)


def trim_target(safe: StreamId | None, cuts: Sequence[StreamId | None]) -> StreamId | None:
    """The MINID to trim to: what the retention lets go, bounded by ``safe``.
    An entry outside either bound (length or age) may go."""
    wanted = [c for c in cuts if c is not None]
    if safe is None or not wanted:
        return None
    return min(max(wanted), safe)


_WALK = """
local r = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
if #r == 0 then return false end
return {r[#r][1], #r}
"""


class JobLock:
    def __init__(self, r: redis.Redis, key: str, ttl_ms: int) -> None:
        self.r, self.key, self.ttl_ms = r, key, ttl_ms
        self.token = secrets.token_hex(8)

    def acquire(self) -> bool:
        return bool(self.r.set(self.key, self.token, nx=True, px=self.ttl_ms))

    def extend(self) -> None:
        self.r.eval(RENEW_IF_HELD, 1, self.key, self.token, self.ttl_ms)

    def release(self) -> None:
        self.r.eval(RELEASE_IF_HELD, 1, self.key, self.token)


def _length_cut(
    r: redis.Redis, key: str, length: int, maxlen: int, safe: StreamId
) -> StreamId | None:
    """The MINID that keeps the newest ``maxlen`` entries (no further than ``safe``)."""
    remaining = length - maxlen
    if remaining <= 0:
        return None
    start, last = "-", None
    while remaining > 0:
        got: Any = r.eval(_WALK, 1, key, start, min(remaining, 1000))
        if not got:
            break
        last = as_id(got[0])
        remaining -= int(got[1])
        if last is None or last >= safe:
            return safe
        start = f"({fmt(last)}"
    return None if last is None else next_id(last)


def trim_entries(
    r: redis.Redis, settings: Settings, config: JobConfig, lock: JobLock
) -> dict[str, Any]:
    keys = settings.keys
    streams = [keys.entries(n) for n in range(settings.shards)]
    with connect_db(settings) as conn:
        offsets = applied_offsets(conn, streams)
    out = []
    for n, key in enumerate(streams):
        raw = read_shard(r, keys, n, offsets.get(key, (None, 0, 0))[0])
        length = raw.length
        shard: dict[str, Any] = {"shard": n, "length": length, "removed": 0, "minid": None}
        out.append(shard)
        if not length:
            shard["note"] = "empty"
            continue
        group = raw.group
        delivered = as_id(text(group.get("last-delivered-id")) or "") if group else None
        pending_min = as_id(raw.pending_min) if raw.pending_min else None
        safe = safe_minid(raw.applied, pending_min, delivered)
        shard["safe_minid"] = None if safe is None else fmt(safe)
        if safe is None:
            shard["note"] = "nothing applied yet" if group else "no consumer group yet"
            continue
        cuts = [age_cut(raw.now_ms, config.entries_max_age_ms)]
        if config.entries_maxlen is not None:
            cuts.append(_length_cut(r, key, length, config.entries_maxlen, safe))
        target = trim_target(safe, cuts)
        if target is None:
            shard["note"] = "within retention"
            continue
        removed = 0
        while True:  # whole nodes first, a bounded amount per call
            step = int(r.xtrim(key, minid=fmt(target), approximate=True, limit=TRIM_STEP))
            removed += step
            lock.extend()
            if not step:
                break
        removed += int(r.xtrim(key, minid=fmt(target), approximate=False))
        shard["removed"] = removed
        shard["minid"] = fmt(target)
        shard["limited_by"] = "unapplied" if target == safe else "retention"
        log.info("trimmed %d entries of %s below %s", removed, key, fmt(target))
    return {"job": "trim-entries", "ok": True, "shards": out}


def trim_rows(
    r: redis.Redis, settings: Settings, config: JobConfig, lock: JobLock
) -> dict[str, Any]:
    out = []
    for n in range(settings.shards):
        key = settings.keys.rows(n)
        removed = 0
        for _ in range(10_000):
            step = int(r.xtrim(key, maxlen=settings.rows_maxlen, approximate=True))
            removed += step
            if not step:
                break
            lock.extend()
        out.append({"shard": n, "removed": removed, "length": int(r.xlen(key))})
    return {"job": "trim-rows", "ok": True, "shards": out}


def verify_job(
    r: redis.Redis, settings: Settings, config: JobConfig, lock: JobLock
) -> dict[str, Any]:
    with connect_db(settings) as conn:
        report = verify(conn, listed=20, on_chunk=lambda _: lock.extend())
    result = {"job": "verify", **report.as_dict()}
    r.set(settings.keys.verify_result(), orjson.dumps(result))
    if not report.ok:
        log.warning("verify: %d broken sessions", report.violations_total)
    return result
