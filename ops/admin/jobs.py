"""``rowcast jobs``: the maintenance jobs, run by an RQ worker, at once
(``run``), or enqueued periodically (``schedule``). The trims and verify are
in maintenance.py, health in health.py.

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
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any

import orjson
import redis

from rowcast.contract.connection import parse
from rowcast.contract.errors import ConfigError
from rowcast.ops.admin.health import health
from rowcast.ops.admin.maintenance import (
    LOCK_MS,
    JobConfig,
    JobLock,
    trim_entries,
    trim_rows,
    verify_job,
)
from rowcast.ops.admin.shell import connect_redis
from rowcast.ops.settings import Settings

log = logging.getLogger(__name__)

QUEUE = "rowcast-maintenance"
NAMES = ("trim-entries", "trim-rows", "health", "verify")


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


# The id of the last of up to ARGV[2] entries from ARGV[1] and how many there
# were: walks a stream by position inside Redis, sending back ids only.


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
