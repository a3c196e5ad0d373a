"""Maintenance jobs, run by an RQ worker (or at once with ``rowcast jobs run``).

- ``trim-entries``: trims each input stream to its retention (a length and/or
  an age, kept for ``rowcast replay``), never past an entry that is not both
  applied in PostgreSQL (``rowcast.offsets``) and acknowledged (no pending
  entry at or below it).
- ``trim-rows``: trims each ``P:{N}:rows`` to about ``ROWCAST_ROWS_MAXLEN``.
- ``health``: warns about stale pending entries and an absent or stuck writer.
- ``verify``: runs ``verify`` and records the result where ``status`` shows it.

Every job takes a lock (SET NX PX on ``Keys.job_lock(name)``) and is safe to
run twice: a second run while the first holds the lock is skipped, and each
job only moves state towards the same end.

On a Redis Cluster the jobs themselves work (``rowcast jobs run``, and an RQ
worker whose ROWCAST_REDIS_URL names the cluster), but RQ's queue does not:
RQ does not support Redis Cluster, so ``enqueue`` and ``schedule`` need a
plain Redis for the queue (``--rq-url`` or ROWCAST_RQ_URL).
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

import orjson
import redis

from rowcast.contract.connection import parse
from rowcast.contract.errors import ConfigError
from rowcast.contract.keys import GROUP
from rowcast.contract.streamid import MAX_PART, StreamId, as_id, fmt
from rowcast.ops.admin.shell import connect_db, connect_redis, text
from rowcast.ops.admin.status import (
    applied_offsets,
    read_members,
    read_shard,
    shard_report,
)
from rowcast.ops.admin.verify import verify
from rowcast.ops.settings import Settings, env_number

log = logging.getLogger(__name__)

QUEUE = "rowcast-maintenance"
NAMES = ("trim-entries", "trim-rows", "health", "verify")
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
            pending_stale_ms=env_number(env, "ROWCAST_PENDING_STALE_MS", 60_000, low=1) or 60_000,
            writer_stuck_ms=env_number(env, "ROWCAST_WRITER_STUCK_MS", 60_000, low=1) or 60_000,
        )
        return replace(c, **{k: v for k, v in overrides.items() if v is not None})


# --- pure logic -----------------------------------------------------------


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


def summary(result: Mapping[str, Any]) -> str:
    """One line per job for ``rowcast jobs run``."""
    name = result.get("job", "?")
    if result.get("skipped"):
        return f"{name}: skipped ({result['skipped']})"
    if name == "trim-entries":
        parts = [
            f"shard {s['shard']} -{s['removed']}"
            + (f" (kept from {s['minid']})" if s.get("minid") else f" ({s.get('note', 'kept')})")
            for s in result["shards"]
        ]
        return f"{name}: " + ", ".join(parts)
    if name == "trim-rows":
        return f"{name}: " + ", ".join(
            f"shard {s['shard']} -{s['removed']}" for s in result["shards"]
        )
    if name == "health":
        if result["ok"]:
            return f"{name}: ok"
        return f"{name}: " + "; ".join(result["problems"])
    if name == "verify":
        if result["ok"]:
            return f"{name}: ok ({result['sessions']} sessions, {result['rows']} rows)"
        return f"{name}: {result['violations_total']} broken sessions (run `rowcast verify`)"
    return f"{name}: done"


# --- the lock -------------------------------------------------------------

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# The id of the last of up to ARGV[2] entries from ARGV[1] and how many there
# were: walks a stream by position inside Redis, sending back ids only.
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
        self.r.eval(_EXTEND, 1, self.key, self.token, self.ttl_ms)

    def release(self) -> None:
        self.r.eval(_RELEASE, 1, self.key, self.token)


# --- the jobs -------------------------------------------------------------


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


JOBS: dict[str, Callable[[redis.Redis, Settings, JobConfig, JobLock], dict[str, Any]]] = {
    "trim-entries": trim_entries,
    "trim-rows": trim_rows,
    "health": health,
    "verify": verify_job,
}


def execute(name: str, settings: Settings, config: JobConfig) -> dict[str, Any]:
    """Run one job under its lock; ``{"job", "skipped"}`` when another run holds it."""
    if name not in JOBS:
        raise ConfigError(f"unknown job {name!r} (one of {', '.join(NAMES)})")
    with connect_redis(settings) as r:
        lock = JobLock(r, settings.keys.job_lock(name), LOCK_MS[name])
        if not lock.acquire():
            log.info("job %s: another run holds the lock; skipping", name)
            return {"job": name, "ok": True, "skipped": "another run holds the lock"}
        try:
            return JOBS[name](r, settings, config, lock)
        finally:
            lock.release()


# --- RQ -------------------------------------------------------------------

_SETTINGS_OPTIONS = ("prefix", "shards", "rows_maxlen")


def options(settings: Settings, config: JobConfig) -> dict[str, Any]:
    """What a queued job carries: the non-secret settings. Server URLs come
    from the worker's own environment (ROWCAST_REDIS_URL, ROWCAST_DATABASE_URL)."""
    out = {k: getattr(settings, k) for k in _SETTINGS_OPTIONS}
    out.update(asdict(config))
    return out


def run_job(name: str, **opts: Any) -> dict[str, Any]:
    """The function RQ runs (``rowcast.ops.admin.jobs.run_job``)."""
    settings = Settings.from_env(**{k: opts.get(k) for k in _SETTINGS_OPTIONS})
    config = JobConfig.from_env(**{k: v for k, v in opts.items() if k not in _SETTINGS_OPTIONS})
    return execute(name, settings, config)


def enqueue(
    conn: redis.Redis,
    queue: str,
    name: str,
    settings: Settings,
    config: JobConfig,
    ttl: float | None = None,
) -> str:
    from rq import Queue

    job = Queue(queue, connection=conn).enqueue(
        run_job,
        args=(name,),
        kwargs=options(settings, config),
        job_timeout=max(60, LOCK_MS[name] // 1000),
        result_ttl=86_400,
        # Not started within one period: the next one supersedes it.
        ttl=None if ttl is None else max(1, int(ttl)),
        description=f"rowcast {name}",
    )
    return str(job.id)


def schedule(
    conn: redis.Redis,
    queue: str,
    settings: Settings,
    config: JobConfig,
    periods: Mapping[str, float],
    stop: threading.Event,
) -> int:
    """Enqueue each job every ``periods[name]`` seconds until ``stop``; returns
    how many were enqueued."""
    due = dict.fromkeys(periods, 0.0)
    count = 0
    while not stop.is_set():
        now = time.monotonic()
        for name, at in due.items():
            if now >= at:
                job_id = enqueue(conn, queue, name, settings, config, ttl=periods[name])
                log.info("enqueued %s as %s on %s", name, job_id, queue)
                due[name] = now + periods[name]
                count += 1
        stop.wait(max(0.05, min(due.values()) - time.monotonic()))
    return count


# --- the command ----------------------------------------------------------


def rq_settings(args: argparse.Namespace, settings: Settings) -> Settings:
    """The settings with the RQ queue's Redis as the Redis URL; a cluster is
    refused (RQ does not support Redis Cluster)."""
    settings.need_servers()
    url = getattr(args, "rq_url", None) or os.environ.get("ROWCAST_RQ_URL") or settings.redis_url
    assert url is not None
    if parse(url).cluster:
        raise ConfigError(
            "RQ does not support Redis Cluster: `rowcast jobs enqueue|schedule` need a plain"
            " Redis for the queue (--rq-url or ROWCAST_RQ_URL=redis://...);"
            " `rowcast jobs run` works on the cluster"
        )
    return replace(settings, redis_url=url)


def _names(given: Sequence[str]) -> list[str]:
    bad = [n for n in given if n not in NAMES and n != "all"]
    if bad:
        raise ConfigError(f"unknown job {bad[0]!r} (one of {', '.join(NAMES)}, all)")
    if not given or "all" in given:
        return list(NAMES)
    return list(dict.fromkeys(given))


def arguments(p: argparse.ArgumentParser, servers: argparse.ArgumentParser) -> None:
    """``servers``: the server options again, for each action."""
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    actions.required = True
    names_help = "trim-entries, trim-rows, health, verify or all (default: all)"
    d = actions.add_parser("run", help="run jobs now, in this process", parents=[servers])
    d.add_argument("names", nargs="*", metavar="JOB", help=names_help)
    d.add_argument("--json", action="store_true", help="print each job's result as JSON")
    rq_help = "plain Redis of the RQ queue (ROWCAST_RQ_URL; default: ROWCAST_REDIS_URL)"
    d = actions.add_parser("enqueue", help="enqueue jobs once on the RQ queue", parents=[servers])
    d.add_argument("names", nargs="*", metavar="JOB", help=names_help)
    d.add_argument("--queue", default=QUEUE)
    d.add_argument("--rq-url", help=rq_help)
    d = actions.add_parser(
        "schedule", help="enqueue every job periodically until stopped", parents=[servers]
    )
    d.add_argument("--queue", default=QUEUE)
    d.add_argument("--rq-url", help=rq_help)
    d.add_argument("--every", type=float, default=60.0, metavar="SECONDS",
                   help="period of trim-entries, trim-rows and health (default 60)")  # fmt: skip
    d.add_argument("--verify-every", type=float, default=3600.0, metavar="SECONDS",
                   help="period of verify (default 3600)")  # fmt: skip


def run(args: argparse.Namespace, settings: Settings) -> int:
    config = JobConfig.from_env()
    if args.action == "run":
        failed = False
        for name in _names(args.names):
            result = execute(name, settings, config)
            failed |= not result.get("ok", True)
            line = orjson.dumps(result).decode() if args.json else summary(result)
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        return 1 if failed else 0
    with connect_redis(rq_settings(args, settings)) as conn:
        if args.action == "enqueue":
            for name in _names(args.names):
                job_id = enqueue(conn, args.queue, name, settings, config)
                sys.stdout.write(f"enqueued {name} as {job_id} on {args.queue}\n")
            return 0
        if args.action == "schedule":
            if args.every <= 0 or args.verify_every <= 0:
                raise ConfigError("--every and --verify-every must be positive")
            periods = {
                "trim-entries": args.every,
                "trim-rows": args.every,
                "health": args.every,
                "verify": args.verify_every,
            }
            stop = threading.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
            log.info("scheduling %s on %s", ", ".join(periods), args.queue)
            schedule(conn, args.queue, settings, config, periods, stop)
            return 0
    raise ConfigError(f"unknown jobs action {args.action!r}")
