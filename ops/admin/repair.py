"""``rowcast repair [--session S] [--dry-run]``: renumber broken sessions.

Finds broken sessions the way ``verify`` does (or checks the one named), then
for each runs ``rowcast.repair_session`` in its own transaction: it takes the
session's head lock like the writer, so the two never race; rows are
renumbered densely in insertion order and the head is fixed. After COMMIT the
rows that changed are announced like the writer's own (``P:{N}:rows`` and
``P:{N}:changes``, and ``P:rows`` on a single server) so subscribers update.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from rowcast.contract.change import Change
from rowcast.contract.connection import TRANSIENT_OR_OS, AnyAsyncRedis, async_client
from rowcast.contract.errors import ConfigError, Unavailable
from rowcast.contract.keys import shard_of
from rowcast.ops.admin.shell import connect_db, sql
from rowcast.ops.admin.verify import PROBLEMS, SessionFigures, problems, scan, session_figures
from rowcast.ops.settings import Settings
from rowcast.writer.publish import Publisher

FIXABLE = frozenset({"gap", "duplicate_sequence", "next_sequence", "last_change", "no_head"})
"""What repair_session fixes; a negative revision needs a human."""


@dataclass(frozen=True, slots=True)
class Move:
    row: str
    old: int
    new: int


@dataclass(frozen=True, slots=True)
class Renumbering:
    """What repairing one session does, read before it is done (the session's
    head lock is taken only by the repair itself, so a writer may still add rows
    in between; those keep their numbers)."""

    before: SessionFigures
    problems: list[str]
    moves: list[Move]

    def head_after(self) -> tuple[int, int]:
        """(next_sequence, last_change) once repaired (mirrors rowcast.repair_session)."""
        b = self.before
        last = max(b.last_change or 0, b.max_change or 0)
        if not self.moves and b.rows and last > (b.max_change or 0):
            return b.rows, last + 1  # the newest row is announced again above the head
        return b.rows, last + len(self.moves)


def describe(plan: Renumbering, done: bool) -> str:
    b = plan.before
    nxt, last = plan.head_after()
    what = ", ".join(PROBLEMS.get(p, p) for p in plan.problems)
    verb = "renumbered" if done else "would renumber"
    parts = [f"{verb} {len(plan.moves)} rows"]
    if b.next_sequence != nxt:
        parts.append(f"next_sequence {_num(b.next_sequence)} -> {nxt}")
    if (b.last_change or 0) != last or not b.has_head:
        parts.append(f"last_change {_num(b.last_change)} -> {last}")
    lines = [f"session {b.session!r} ({what}): " + "; ".join(parts)]
    if not done:
        lines += [f"  row {m.row!r}: sequence {m.old} -> {m.new}" for m in plan.moves[:50]]
        if len(plan.moves) > 50:
            lines.append(f"  ... and {len(plan.moves) - 50} more rows")
    unfixable = [p for p in plan.problems if p not in FIXABLE]
    if unfixable:
        lines.append("  not fixed by repair: " + ", ".join(PROBLEMS.get(p, p) for p in unfixable))
    return "\n".join(lines)


def _num(v: int | None) -> str:
    return "(none)" if v is None else str(v)


def changes_of(session: str, lines: Sequence[tuple[Any, ...]]) -> list[Change]:
    """rowcast.repair_session's lines as changes, in change order."""
    return [
        Change(session, row, seq, rev, chg, kind, body.encode())
        for row, seq, rev, chg, kind, body in lines
    ]


# --- I/O ------------------------------------------------------------------


def broken(conn: psycopg.Connection[Any]) -> Iterator[tuple[SessionFigures, list[str]]]:
    for figures in scan(conn):
        for f in figures:
            found = problems(f)
            if found:
                yield f, found


def plan_for(conn: psycopg.Connection[Any], f: SessionFigures, found: list[str]) -> Renumbering:
    moves = [Move(r, o, n) for r, o, n in conn.execute(sql("repair_plan"), {"session": f.session})]
    return Renumbering(f, found, moves)


def repair_session(conn: psycopg.Connection[Any], session: str) -> list[Change]:
    """One session, in one transaction that waits for the writer's head lock."""
    with conn.transaction():
        # Wait for a writer's batch to finish, but not forever.
        conn.execute("SET LOCAL lock_timeout = '60s'")
        lines = conn.execute("SELECT * FROM rowcast.repair_session(%s)", (session,)).fetchall()
    return changes_of(session, lines)


class Announcer:
    """Publishes repaired rows like the writer does, from synchronous code."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._runner = asyncio.Runner()
        self._redis: AnyAsyncRedis | None = None

    def send(self, changes: Sequence[Change]) -> None:
        if changes:
            self._runner.run(self._send(changes))

    async def _send(self, changes: Sequence[Change]) -> None:
        s = self.settings
        if self._redis is None:
            url, _ = s.need_servers()
            self._redis = async_client(url)
        by_shard: dict[int, list[Change]] = {}
        for c in changes:
            by_shard.setdefault(shard_of(c.session, s.shards), []).append(c)
        try:
            for shard, group in by_shard.items():
                pub = Publisher(self._redis, s.keys, shard, s.rows_maxlen, s.receipt_ttl_ms)
                await pub.send(group)
        except TRANSIENT_OR_OS as e:
            raise Unavailable(f"Redis: {e}") from e

    def close(self) -> None:
        if self._redis is not None:
            self._runner.run(self._redis.aclose())
        self._runner.close()


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--session", help="only this session")
    p.add_argument("--dry-run", action="store_true", help="only list what would change")


def targets(
    conn: psycopg.Connection[Any], session: str | None
) -> Iterator[tuple[SessionFigures, list[str]]]:
    """The broken sessions: every one (keyset pages stay valid while we repair,
    since session ids do not move), or just the one named."""
    if session is None:
        yield from broken(conn)
        return
    f = session_figures(conn, session)
    if not f.has_head and not f.rows:
        raise ConfigError(f"no session {session!r}")
    found = problems(f)
    if found:
        yield f, found


@dataclass(slots=True)
class Tally:
    sessions: int = 0
    rows: int = 0
    still_broken: int = 0

    def summary(self, dry_run: bool, session: str | None) -> str:
        if not self.sessions:
            if session is not None:
                return f"session {session!r} is healthy; nothing to repair"
            return "no broken sessions; nothing to repair"
        if dry_run:
            return (
                f"dry run: {self.sessions} sessions would be repaired, {self.rows} rows renumbered"
            )
        return f"repaired {self.sessions} sessions, renumbered and announced {self.rows} rows"


def apply(
    conn: psycopg.Connection[Any], announcer: Announcer, plan: Renumbering, tally: Tally
) -> list[str]:
    """Repairs one session, announces it after COMMIT; its lines of report."""
    changes = repair_session(conn, plan.before.session)
    announcer.send(changes)  # after COMMIT, never before
    tally.sessions += 1
    tally.rows += len(changes)
    lines = [describe(plan, done=True)]
    after = problems(session_figures(conn, plan.before.session))
    if after:
        tally.still_broken += 1
        lines.append(f"  still broken: {', '.join(PROBLEMS.get(p, p) for p in after)}")
    return lines


def run(args: argparse.Namespace, settings: Settings) -> int:
    settings.need_servers()
    tally = Tally()
    announcer = None if args.dry_run else Announcer(settings)
    try:
        with connect_db(settings) as conn:
            for f, found in targets(conn, args.session):
                plan = plan_for(conn, f, found)
                if announcer is not None:
                    lines = apply(conn, announcer, plan, tally)
                else:
                    tally.sessions += 1
                    tally.rows += len(plan.moves)
                    lines = [describe(plan, done=False)]
                sys.stdout.write("".join(line + "\n" for line in lines))
    finally:
        if announcer is not None:
            announcer.close()
    print(tally.summary(args.dry_run, args.session))
    if tally.still_broken:
        sys.stderr.write(f"rowcast: {tally.still_broken} sessions are still broken after repair\n")
        return 1
    return 0
