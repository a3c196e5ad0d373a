"""``rowcast replay --from ID [--to ID] [--shard N]``: re-feed input history.

Each entry of the range of ``P:{N}:entries`` is added again to the same
stream with its original fields minus ``reply`` (nobody waits any more) plus
``rowcast.origin`` = its original id (``ORIGIN``). The writer applies a replayed append only when
the row is missing and a replayed upsert only when the row was last written
by an older entry, so replaying what is stored changes nothing, and replaying
after PostgreSQL was restored from an older backup brings the later rows back
in their order. An entry that is itself a replay keeps its origin; it is
skipped when its original is re-fed by the same run.

The upper end is fixed when the run starts, so the entries it adds are never
read back.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

import redis

from rowcast.contract.entry import ORIGIN, fields_of, without
from rowcast.contract.errors import ConfigError
from rowcast.contract.keys import Keys
from rowcast.contract.streamid import MAX_PART, StreamId, as_id, fmt, from_option
from rowcast.ops.admin.shell import RAW_XRANGE, connect_redis, text
from rowcast.ops.settings import Settings

PAGE = 500
_ORIGIN = ORIGIN.encode()


def refeed(
    entry_id: bytes | str, flat: list[bytes], refed: tuple[StreamId, StreamId]
) -> list[bytes] | None:
    """The fields to add again for one entry (flat, as Redis keeps them: a
    repeated name stays repeated), or None to skip it.

    ``refed`` is the range of ids this run re-feeds from the originals
    themselves: a replay whose origin lies in it would repeat that original.
    """
    fields = fields_of(flat)
    origin: bytes | None = None
    raw_origin = fields.get(_ORIGIN)
    if raw_origin is not None:
        o = as_id(raw_origin)
        if o is not None:
            if refed[0] <= o <= refed[1]:
                return None
            origin = raw_origin
    if origin is None:
        origin = entry_id.encode() if isinstance(entry_id, str) else entry_id
    return [*without(flat, (b"reply", _ORIGIN)), _ORIGIN, origin]


@dataclass(frozen=True, slots=True)
class Refed:
    shard: int
    count: int
    skipped: int
    first: str | None
    last: str | None

    def line(self) -> str:
        if not self.count and not self.skipped:
            return f"shard {self.shard}: re-fed 0 entries (none in the range)"
        extra = f", skipped {self.skipped} replays of entries in the range" if self.skipped else ""
        return (
            f"shard {self.shard}: re-fed {self.count} entries"
            f" (ids {self.first} .. {self.last}{extra})"
        )


# --- I/O ------------------------------------------------------------------


def replay_shard(r: redis.Redis, keys: Keys, shard: int, lo: StreamId, hi: StreamId) -> Refed:
    key = keys.entries(shard)
    try:
        info: Any = r.xinfo_stream(key)
    except redis.ResponseError as e:
        # Only "no such key" means no stream yet: a redirect or a cluster
        # that is down is an error to report, never a silent zero.
        if type(e) is not redis.ResponseError or "no such key" not in str(e).lower():
            raise
        return Refed(shard, 0, 0, None, None)
    first_entry = info.get("first-entry")
    last_entry = info.get("last-entry")
    if not first_entry or not last_entry:
        return Refed(shard, 0, 0, None, None)
    first = as_id(first_entry[0]) or (0, 0)
    stop = min(hi, as_id(last_entry[0]) or (0, 0))
    # Originals in this window are all still in the stream and re-fed now.
    refed = (max(lo, first), stop)
    count = skipped = 0
    first_seen: str | None = None
    last_seen: str | None = None
    start = fmt(lo)
    while lo <= stop:
        page: Any = r.eval(RAW_XRANGE, 1, key, start, fmt(stop), PAGE)
        if not page:
            break
        pipe = r.pipeline(transaction=False)
        for entry_id, flat in page:
            out = refeed(entry_id, flat, refed)
            if out is None:
                skipped += 1
                continue
            pipe.execute_command("XADD", key, "*", *out)
            count += 1
            first_seen = first_seen or text(entry_id)
            last_seen = text(entry_id)
        if len(pipe):
            pipe.execute()
        start = f"({text(page[-1][0])}"
        if len(page) < PAGE:
            break
    return Refed(shard, count, skipped, first_seen, last_seen)


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="from_id", required=True, metavar="ID")
    p.add_argument("--to", dest="to_id", metavar="ID")
    p.add_argument("--shard", type=int)


def run(args: argparse.Namespace, settings: Settings) -> int:
    lo = from_option(args.from_id, "--from")
    hi = from_option(args.to_id, "--to", end=True) if args.to_id else (MAX_PART, MAX_PART)
    if hi < lo:
        raise ConfigError(f"--to {args.to_id} is before --from {args.from_id}")
    if args.shard is not None and not 0 <= args.shard < settings.shards:
        raise ConfigError(f"--shard {args.shard} is outside 0..{settings.shards - 1}")
    shards = [args.shard] if args.shard is not None else list(range(settings.shards))
    total = 0
    with connect_redis(settings) as r:
        for n in shards:
            done = replay_shard(r, settings.keys, n, lo, hi)
            total += done.count
            sys.stdout.write(done.line() + "\n")
            sys.stdout.flush()
    if len(shards) > 1:
        sys.stdout.write(f"re-fed {total} entries in all\n")
    return 0
