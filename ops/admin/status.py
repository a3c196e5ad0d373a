"""``rowcast status [--json]``: what every shard and broadcaster is doing.

Per shard, from Redis: input stream length, consumer-group lag and pending
count, age of the oldest pending entry, dead letters, the lease holder and
its fencing number, the length of ``P:{N}:rows``; from PostgreSQL: the last
applied entry id. Per writer process: its heartbeat and the shards it leads
(a shard no writer leads is named). Per broadcaster: its heartbeat (connections,
subscriptions). The JSON shape is part of the contract (see the README);
keys are only ever added.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
import redis

from rowcast.contract.connection import is_cluster
from rowcast.contract.errors import ConfigError, RowcastError, Unavailable
from rowcast.contract.keys import GROUP, Keys
from rowcast.ops.admin.shell import cell, connect_db, connect_redis, safe, sql, table, text
from rowcast.ops.settings import Settings

log = logging.getLogger(__name__)

LAG_COUNT_CAP = 100_000
"""When Redis cannot tell the lag (entries were deleted), count at most this many."""


def applied_offsets(
    conn: psycopg.Connection[Any], streams: Sequence[str]
) -> dict[str, tuple[tuple[int, int], int, int]]:
    """stream -> ((last_ms, last_seq), fence, milliseconds since it last moved)."""
    rows = conn.execute(sql("offsets"), {"streams": list(streams)}).fetchall()
    return {s: ((ms, seq), fence, age) for s, ms, seq, fence, age in rows}


def id_ms(entry_id: str | bytes) -> int:
    raw = text(entry_id) or "0"
    return int(raw.partition("-")[0])


# --- pure logic -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShardRaw:
    """What Redis and PostgreSQL answered about one shard."""

    shard: int
    now_ms: int
    length: int
    group: Mapping[str, Any] | None
    pending_min: str | None
    lease_holder: str | None
    fence: int | None
    dead: int
    rows_length: int
    applied: tuple[int, int] | None
    counted_lag: int | None = None


def shard_report(raw: ShardRaw) -> dict[str, Any]:
    """One element of ``shards`` in ``status --json``."""
    group = raw.group
    if group is None:
        # No consumer group yet: no writer ever ran, everything is waiting.
        lag: int | None = raw.length
        pending = 0
        delivered = None
    else:
        lag = group.get("lag")
        if lag is None:
            lag = raw.counted_lag
        pending = int(group.get("pending") or 0)
        delivered = text(group.get("last-delivered-id"))
    age = None
    if pending and raw.pending_min is not None:
        age = max(0, raw.now_ms - id_ms(raw.pending_min))
    return {
        "shard": raw.shard,
        "length": raw.length,
        "lag": None if lag is None else int(lag),
        "pending": pending,
        # A claimed shard's record starts at 0-0: nothing applied yet.
        "last_applied": None
        if raw.applied in (None, (0, 0))
        else f"{raw.applied[0]}-{raw.applied[1]}",
        "dead": raw.dead,
        "rows_length": raw.rows_length,
        "lease": {"holder": raw.lease_holder, "fence": raw.fence},
        "oldest_pending_age_ms": age,
        "last_delivered": delivered,
    }


def broadcaster_report(instance: str, value: bytes | None) -> dict[str, Any] | None:
    """One heartbeat: a JSON object (``connections``, ``subscriptions``, ...)."""
    if value is None:
        return None  # expired between SCAN and GET
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        data = None
    out: dict[str, Any] = {"instance": instance, "connections": None, "subscriptions": None}
    if isinstance(data, dict):
        out.update(data)
        out["instance"] = instance
    else:
        out["raw"] = text(value)
    return out


def writers_report(
    members: Sequence[tuple[str, float]], now_ms: int, shards: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The writer processes: the fleet's members (from their heartbeats, with
    the shards each holds now) and any other lease holder (a writer pinned
    with ``--shard``, which does not join the fleet: ``heartbeat_age_ms`` null)."""
    held: dict[str, list[int]] = {}
    for s in shards:
        holder = s["lease"]["holder"]
        if holder is not None:
            held.setdefault(holder, []).append(s["shard"])
    out = [
        {
            "holder": m,
            "heartbeat_age_ms": max(0, now_ms - int(score)),
            "shards": sorted(held.get(m, [])),
        }
        for m, score in sorted(members)
    ]
    known = {m for m, _ in members}
    out += [
        {"holder": h, "heartbeat_age_ms": None, "shards": sorted(v)}
        for h, v in sorted(held.items())
        if h not in known
    ]
    return out


def unheld(shards: Sequence[Mapping[str, Any]]) -> list[int]:
    """Shards no writer leads right now."""
    return [s["shard"] for s in shards if s["lease"]["holder"] is None]


def _age(ms: int | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms}ms"
    if ms < 120_000:
        return f"{ms / 1000:.1f}s"
    if ms < 7_200_000:
        return f"{ms / 60_000:.1f}m"
    return f"{ms / 3_600_000:.1f}h"


def format_status(report: Mapping[str, Any]) -> str:
    """The human form of ``status``."""
    rows = [
        [
            str(s["shard"]),
            str(s["length"]),
            cell(s["lag"]),
            str(s["pending"]),
            _age(s.get("oldest_pending_age_ms")),
            cell(s["last_applied"]),
            str(s["dead"]),
            str(s["rows_length"]),
            cell(s["lease"]["holder"]) if s["lease"]["holder"] is not None else "(none)",
            cell(s["lease"]["fence"]),
        ]
        for s in report["shards"]
    ]
    out = [
        table(
            [
                "shard",
                "length",
                "lag",
                "pending",
                "oldest pending",
                "last applied",
                "dead",
                "rows",
                "lease holder",
                "fence",
            ],
            rows,
        )
    ]
    free = unheld(report["shards"])
    if free:
        out.append(f"no writer leads shard {', '.join(map(str, free))}")
    ws = report.get("writers")
    if ws is not None:
        out.append("")
        if ws:
            out.append(
                table(
                    ["writer", "heartbeat", "leads"],
                    [
                        [
                            cell(w["holder"]),
                            _age(w["heartbeat_age_ms"])
                            if w["heartbeat_age_ms"] is not None
                            else "(pinned)",
                            ",".join(map(str, w["shards"])) or "-",
                        ]
                        for w in ws
                    ],
                )
            )
        else:
            out.append("writers: none (no heartbeat, no lease held)")
    bcs = report.get("broadcasters") or []
    out.append("")
    if bcs:
        out.append(
            table(
                ["broadcaster", "address", "connections", "subscriptions", "started"],
                [
                    [
                        b["instance"],
                        _address(b),
                        cell(b.get("connections")),
                        cell(b.get("subscriptions")),
                        cell(b.get("started_at")),
                    ]
                    for b in bcs
                ],
            )
        )
    else:
        out.append("broadcasters: none (no heartbeat)")
    v = report.get("verify")
    if v:
        out.append("")
        out.append(f"last verify: {safe(verify_line(v))}")
    for e in report.get("errors") or []:
        out.append(f"error: {safe(str(e))}")
    return "\n".join(out)


def _address(b: Mapping[str, Any]) -> str:
    host, port = b.get("host"), b.get("port")
    if host is None and port is None:
        return "-"
    return f"{host}:{port}"


def verify_line(v: Mapping[str, Any]) -> str:
    when = v.get("finished_at") or "?"
    if v.get("ok"):
        return f"ok at {when} ({v.get('sessions', 0)} sessions, {v.get('rows', 0)} rows)"
    return (
        f"FAILED at {when}: {v.get('violations_total', 0)} broken sessions"
        f" of {v.get('sessions', 0)} (run `rowcast verify`)"
    )


# --- I/O ------------------------------------------------------------------


def count_after(r: redis.Redis, key: str, after: str, cap: int) -> int | None:
    """Entries after ``after`` (exclusive), or None beyond ``cap``."""
    count, start = 0, f"({after}"
    while count <= cap:
        page: Any = r.xrange(key, start, "+", count=1000)
        if not page:
            return count
        count += len(page)
        start = f"({text(page[-1][0])}"
    return None


def read_shard(r: redis.Redis, keys: Keys, shard: int, applied: tuple[int, int] | None) -> ShardRaw:
    entries = keys.entries(shard)
    pipe = r.pipeline(transaction=False)
    if not is_cluster(r):
        pipe.time()
    pipe.xlen(entries)
    pipe.xinfo_groups(entries)
    pipe.xpending(entries, GROUP)
    pipe.get(keys.lease(shard))
    pipe.get(keys.fence(shard))
    pipe.xlen(keys.dead(shard))
    pipe.xlen(keys.rows(shard))
    got = pipe.execute(raise_on_error=False)
    if is_cluster(r):
        # Ages are measured on the clock that made the stream's ids: the node's.
        got.insert(0, r.time(target_nodes=r.get_node_from_key(entries)))  # type: ignore[attr-defined]
    now, length, groups, pend, holder, fence, dead, rows_len = got
    for value in (now, length, holder, fence, dead, rows_len):
        if isinstance(value, Exception):
            raise value
    # XINFO/XPENDING fail while the stream or the group does not exist yet.
    group = None
    if not isinstance(groups, Exception):
        group = next((g for g in groups if text(g.get("name")) == GROUP), None)
    pending_min = None
    if group is not None and not isinstance(pend, Exception) and pend.get("pending"):
        pending_min = text(pend.get("min"))
    counted = None
    if group is not None and group.get("lag") is None:
        counted = count_after(
            r, entries, text(group.get("last-delivered-id")) or "0", LAG_COUNT_CAP
        )
    return ShardRaw(
        shard=shard,
        now_ms=int(now[0]) * 1000 + int(now[1]) // 1000,
        length=int(length),
        group=group,
        pending_min=pending_min,
        lease_holder=text(holder),
        fence=None if fence is None else int(fence),
        dead=int(dead),
        rows_length=int(rows_len),
        applied=applied,
        counted_lag=counted,
    )


def read_broadcasters(r: redis.Redis, keys: Keys) -> list[dict[str, Any]]:
    names = sorted(text(k) or "" for k in r.scan_iter(match=keys.broadcaster_pattern(), count=1000))
    if not names:
        return []
    # One GET each (pipelined): on a cluster the heartbeats live in many slots.
    pipe = r.pipeline(transaction=False)
    for n in names:
        pipe.get(n)
    values: Any = pipe.execute()
    head = len(keys.broadcaster(""))
    out = [broadcaster_report(n[head:], v) for n, v in zip(names, values, strict=True)]
    return [b for b in out if b is not None]


def read_members(r: redis.Redis, keys: Keys) -> tuple[list[tuple[str, float]], int]:
    """The fleet's heartbeats (holder, Redis ms) and Redis's clock now."""
    members: Any = r.zrange(keys.writers(), 0, -1, withscores=True)
    # The heartbeats are stamped with the clock of the node holding the set.
    if is_cluster(r):
        now: Any = r.time(target_nodes=r.get_node_from_key(keys.writers()))  # type: ignore[attr-defined]
    else:
        now = r.time()
    return [(text(m) or "", float(sc)) for m, sc in members], int(now[0]) * 1000 + int(
        now[1]
    ) // 1000


def read_verify(r: redis.Redis, keys: Keys) -> dict[str, Any] | None:
    raw: Any = r.get(keys.verify_result())
    if raw is None:
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def collect(settings: Settings) -> dict[str, Any]:
    """The whole ``status`` report. A PostgreSQL that cannot be read leaves
    ``last_applied`` null and adds a line to ``errors``: the Redis side is
    still worth seeing during an incident."""
    keys = settings.keys
    shards = range(settings.shards)
    errors: list[str] = []
    offsets: dict[str, tuple[tuple[int, int], int, int]] = {}
    try:
        with connect_db(settings) as conn:
            offsets = applied_offsets(conn, [keys.entries(n) for n in shards])
    except (Unavailable, ConfigError, RowcastError) as e:
        errors.append(str(e))
    with connect_redis(settings) as r:
        shard_list = [
            shard_report(read_shard(r, keys, n, offsets.get(keys.entries(n), (None, 0, 0))[0]))
            for n in shards
        ]
        members, now_ms = read_members(r, keys)
        report: dict[str, Any] = {
            "shards": shard_list,
            "writers": writers_report(members, now_ms, shard_list),
            "broadcasters": read_broadcasters(r, keys),
            "verify": read_verify(r, keys),
            "prefix": settings.prefix,
        }
    if errors:
        report["errors"] = errors
    return report


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace, settings: Settings) -> int:
    report = collect(settings)
    if args.json:
        sys.stdout.write(orjson.dumps(report).decode() + "\n")
    else:
        sys.stdout.write(format_status(report) + "\n")
    for e in report.get("errors", []):
        sys.stderr.write(f"rowcast: {e}\n")
    return 1 if report.get("errors") else 0
