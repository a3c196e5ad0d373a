"""``rowcast dlq list | retry ID... | purge --before ID``: the dead letters.

``list`` shows them with the writer's reason; ``retry`` puts one back on its
input stream (the original fields, byte for byte, without the ``error`` and
``source`` the writer added) and deletes it from ``P:{N}:dead`` in the same
MULTI, so it is never both or neither; ``purge`` removes those older than an
id.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import redis

from rowcast.contract.entry import without
from rowcast.contract.errors import ConfigError
from rowcast.contract.streamid import fmt, from_option
from rowcast.ops.admin.shell import RAW_XRANGE, connect_redis, shorten, table, text
from rowcast.ops.settings import Settings

PREVIEW = 200
"""Characters of a body shown by ``list``."""
_ADDED = (b"error", b"source")


def retry_fields(fields: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
    """The entry as it was first sent: every field but the writer's additions."""
    return {k: v for k, v in fields.items() if k not in _ADDED}


def retry_flat(flat: list[bytes]) -> list[bytes]:
    """``retry_fields`` of a letter's flat field list: a name the entry
    repeated stays repeated."""
    return without(flat, _ADDED)


def letter(shard: int, entry_id: bytes | str, fields: Mapping[bytes, bytes]) -> dict[str, Any]:
    """One dead letter for ``list --json``: the reason, the source entry id,
    the original fields as text (the body cut to a preview)."""
    body = fields.get(b"body")
    shown: dict[str, str | None] = {}
    for k, v in retry_fields(fields).items():
        if k != b"body":
            shown[text(k) or ""] = text(v)
    return {
        "shard": shard,
        "id": text(entry_id),
        "source": text(fields.get(b"source")),
        "error": text(fields.get(b"error")),
        "session": text(fields.get(b"session")),
        "row": text(fields.get(b"row")),
        "op": text(fields.get(b"op")),
        "fields": shown,
        "body_bytes": None if body is None else len(body),
        "body_preview": None if body is None else (text(body[: PREVIEW * 4]) or "")[:PREVIEW],
    }


def format_letters(letters: Sequence[Mapping[str, Any]], totals: Mapping[int, int]) -> str:
    if not letters:
        return "no dead letters"
    rows = [
        [
            str(d["shard"]),
            d["id"] or "",
            d["source"] or "-",
            _short(d["session"]),
            _short(d["row"]),
            d["op"] or "-",
            d["error"] or "-",
        ]
        for d in letters
    ]
    out = table(["shard", "id", "source", "session", "row", "op", "error"], rows)
    shown = len(letters)
    total = sum(totals.values())
    if total > shown:
        out += f"\n(showing {shown} of {total}; use --count or --shard)"
    return out


def _short(v: str | None, n: int = 32) -> str:
    return "-" if v is None else shorten(v, n)


# --- I/O ------------------------------------------------------------------


def list_letters(
    r: redis.Redis, settings: Settings, shards: Sequence[int], count: int
) -> tuple[list[dict[str, Any]], dict[int, int]]:
    letters: list[dict[str, Any]] = []
    totals: dict[int, int] = {}
    for n in shards:
        key = settings.keys.dead(n)
        totals[n] = int(r.xlen(key))
        page: Any = r.xrange(key, "-", "+", count=max(0, count - len(letters)))
        letters += [letter(n, i, f) for i, f in page]
        if len(letters) >= count:
            break
    return letters, totals


def retry_one(r: redis.Redis, settings: Settings, shard: int, dead_id: str) -> str | None:
    """Re-inject one dead letter; its new entry id, or None when it is gone.

    WATCH makes the read and the MULTI one step: two operators retrying the
    same letter at once re-inject it once."""
    keys = settings.keys
    dead, entries = keys.dead(shard), keys.entries(shard)
    with r.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(dead)
                found: Any = pipe.execute_command("EVAL", RAW_XRANGE, 1, dead, dead_id, dead_id, 1)
                if not found:
                    pipe.unwatch()
                    return None
                pipe.multi()
                pipe.execute_command("XADD", entries, "*", *retry_flat(found[0][1]))
                pipe.xdel(dead, dead_id)
                new_id, _ = pipe.execute()
                return text(new_id)
            except redis.WatchError:
                continue  # the writer added a dead letter meanwhile: read again


def _shards(args: argparse.Namespace, settings: Settings) -> list[int]:
    if args.shard is None:
        return list(range(settings.shards))
    if not 0 <= args.shard < settings.shards:
        raise ConfigError(f"--shard {args.shard} is outside 0..{settings.shards - 1}")
    return [args.shard]


def arguments(p: argparse.ArgumentParser, servers: argparse.ArgumentParser) -> None:
    """``servers``: the server options again, for each action."""
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    actions.required = True
    d = actions.add_parser("list", help="show dead letters with their reasons", parents=[servers])
    d.add_argument("--shard", type=int)
    d.add_argument("--json", action="store_true")
    d.add_argument("--count", type=int, default=100)
    d = actions.add_parser("retry", help="re-inject dead letters by id", parents=[servers])
    d.add_argument("ids", nargs="+", metavar="ID")
    d.add_argument("--shard", type=int)
    d = actions.add_parser("purge", help="remove dead letters older than an id", parents=[servers])
    d.add_argument("--before", required=True, metavar="ID")
    d.add_argument("--shard", type=int)


def run(args: argparse.Namespace, settings: Settings) -> int:
    shards = _shards(args, settings)
    if args.action == "list":
        if args.count < 1:
            raise ConfigError("--count must be at least 1")
        with connect_redis(settings) as r:
            letters, totals = list_letters(r, settings, shards, args.count)
        if args.json:
            doc = {"dead": letters, "totals": {str(k): v for k, v in totals.items()}}
            sys.stdout.write(orjson.dumps(doc).decode() + "\n")
        else:
            sys.stdout.write(format_letters(letters, totals) + "\n")
        return 0
    if args.action == "retry":
        ids = [fmt(from_option(i, "ID")) for i in args.ids]
        missing = 0
        with connect_redis(settings) as r:
            for dead_id in ids:
                for n in shards:
                    new_id = retry_one(r, settings, n, dead_id)
                    if new_id is not None:
                        sys.stdout.write(f"retried {dead_id} (shard {n}) as entry {new_id}\n")
                        break
                else:
                    missing += 1
                    sys.stderr.write(f"rowcast: no dead letter {dead_id}\n")
        return 1 if missing else 0
    if args.action == "purge":
        before = fmt(from_option(args.before, "--before"))
        with connect_redis(settings) as r:
            for n in shards:
                # MINID keeps ids >= before: exactly "remove those older than ID".
                removed = r.xtrim(settings.keys.dead(n), minid=before, approximate=False)
                sys.stdout.write(f"shard {n}: purged {removed} dead letters before {before}\n")
        return 0
    raise ConfigError(f"unknown dlq action {args.action!r}")
