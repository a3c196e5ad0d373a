"""Connector benchmark: records per second imported from large real transcripts,
and the connector's CPU per 1,000 records.

    python -m tests.bench.connect [--copies 20] [--types]

Each real transcript of tests/fixtures/real/large (a 774 KB Claude Code 1.0.98
session, a 342 KB Codex 0.58 rollout) is copied ``--copies`` times (one session
each) and imported once by a follower: reading, parsing, mapping and pushing to
Redis (ROWCAST_REDIS_URL, else 127.0.0.1:6379, under its own key prefix, deleted
afterwards); then once more with a producer that drops the entries, to show what
Redis costs. CPU is this process's (time.process_time), so Redis's own is not in
it. ``--types`` prints, for each fixture, the record types found and the rows
they became.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gzip
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from rowcast.contract.entry import Entry
from rowcast.producers.connectors import claude_code, codex
from rowcast.producers.connectors.tail import Source, Tailer
from rowcast.producers.producer import Producer

REAL = Path(__file__).parent.parent / "fixtures" / "real"
ROLLOUT = "2025/11/17/rollout-2025-11-17T15-30-28-{uuid}.jsonl"
LARGE = [
    (claude_code.SOURCE, "claude-code-1.0.98-fe5e1c67.jsonl.gz", "-bench/{uuid}.jsonl"),
    (codex.SOURCE, "codex-0.58.0-019a93b9.jsonl.gz", ROLLOUT),
]  # fmt: skip


class Dropping:
    """A producer that keeps nothing: the connector's own cost."""

    max_body = 1 << 20

    async def push_many(self, entries: list[Entry]) -> list[str]:
        return ["0"] * len(entries)


def _uuid(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


def _lay_out(root: Path, source: Source, name: str, pattern: str, copies: int) -> int:
    data = gzip.decompress((REAL / "large" / name).read_bytes())
    for i in range(copies):
        path = root / source.name / pattern.format(uuid=_uuid(i))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return data.count(b"\n") * copies


async def _import(source: Source, root: Path, producer: Any) -> tuple[int, float, float]:
    with tempfile.TemporaryDirectory(prefix="connectors-bench-state-") as state:
        tailer = Tailer(source, root / source.name, Path(state) / "s.json", producer)
        wall, cpu = time.perf_counter(), time.process_time()
        while await tailer.poll_once():
            pass
        return tailer.stats.lines, time.perf_counter() - wall, time.process_time() - cpu


async def bench(copies: int) -> None:
    url = os.environ.get("ROWCAST_REDIS_URL") or "redis://127.0.0.1:6379/0"
    prefix = f"connectors-bench-{secrets.token_hex(4)}"
    redis = Redis.from_url(url)
    print(f"{copies} copies of each transcript; Redis {url}, prefix {prefix}\n")
    head = ["transcript", "records", "to Redis: records/s", "CPU ms / 1,000 records"]
    print("| " + " | ".join([*head, "no Redis: records/s", "CPU ms / 1,000 records"]) + " |")
    print("|---|---:|---:|---:|---:|---:|")
    try:
        with tempfile.TemporaryDirectory(prefix="connectors-bench-") as tmp:
            root = Path(tmp)
            for source, name, pattern in LARGE:
                total = _lay_out(root, source, name, pattern, copies)
                n1, wall1, cpu1 = await _import(source, root, Producer(redis, prefix=prefix))
                n2, wall2, cpu2 = await _import(source, root, Dropping())
                assert n1 == n2 == total, (n1, n2, total)
                row = [name.removesuffix(".gz"), f"{total:,}"]
                for n, wall, cpu in ((n1, wall1, cpu1), (n2, wall2, cpu2)):
                    row += [f"{n / wall:,.0f}", f"{cpu / n * 1e6:.1f}"]
                print("| " + " | ".join(row) + " |")
    finally:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


def types() -> None:
    """Record types found in each fixture -> the rows they became (kinds, counts)."""
    mappers: dict[str, Any] = {"claude-code": claude_code.Mapper, "codex": codex.Mapper}
    manifest = orjson.loads((REAL / "MANIFEST.json").read_bytes())
    for case in manifest:
        found: collections.Counter[str] = collections.Counter()
        made: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        mapper = mappers[case["source"]]()
        offset = 0
        for raw in (REAL / case["fixture"]).read_bytes().splitlines(keepends=True):
            rec = orjson.loads(raw)
            kind = str(rec.get("type"))
            if isinstance(rec.get("payload"), dict) and "type" in rec["payload"]:
                kind += "/" + str(rec["payload"]["type"])
            elif kind in ("queue-operation",):
                kind += "/" + str(rec.get("operation"))
            elif kind == "attachment":
                kind += "/" + str((rec.get("attachment") or {}).get("type"))
            found[kind] += 1
            for op in mapper.feed(rec, offset):
                made[kind][f"{op.kind} {op.op}"] += 1
            offset += len(raw)
        print(f"\n{case['fixture']}")
        for kind, n in sorted(found.items()):
            rows = ", ".join(f"{v} x {k}" for k, v in sorted(made[kind].items())) or "skipped"
            print(f"  {n:3d} x {kind} -> {rows}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--copies", type=int, default=20)
    p.add_argument("--types", action="store_true", help="record types -> rows, per fixture")
    args = p.parse_args()
    if args.types:
        types()
    else:
        asyncio.run(bench(args.copies))


if __name__ == "__main__":
    main()
