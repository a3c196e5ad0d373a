"""``rowcast verify [--json]``: prove every session's sequences and head.

For each session: sequences dense from 0 and unique, ``next_sequence`` equal
to its row count, ``last_change`` equal to the largest change of its rows (0
without rows: a head ahead of every row would make subscribers wait for
changes that never come), revisions not
negative, and a head for every session that has rows. Sessions are streamed
in chunks (keyset pagination over ``session_id``, one set-based query per
chunk), so memory stays flat however many rows there are. Exit 1 with the
offending sessions listed on any violation.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg

from rowcast.ops.admin.shell import connect_db, sql, table
from rowcast.ops.settings import Settings

CHUNK = 2000
"""Sessions per query."""
LISTED = 1000
"""Broken sessions kept in the report (the total is always counted)."""

PROBLEMS = {
    "gap": "sequences are not dense from 0",
    "duplicate_sequence": "two rows share a sequence",
    "next_sequence": "next_sequence differs from the row count",
    "last_change": "last_change differs from the largest change of its rows",
    "negative_revision": "a revision is negative",
    "no_head": "rows without a sessions row",
}


@dataclass(frozen=True, slots=True)
class SessionFigures:
    """One line of verify_chunk.sql."""

    session: str
    has_head: bool
    next_sequence: int | None
    last_change: int | None
    rows: int
    distinct: int
    min_sequence: int | None
    max_sequence: int | None
    max_change: int | None
    min_revision: int | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "rows": self.rows,
            "distinct_sequences": self.distinct,
            "min_sequence": self.min_sequence,
            "max_sequence": self.max_sequence,
            "next_sequence": self.next_sequence,
            "last_change": self.last_change,
            "max_change": self.max_change,
            "min_revision": self.min_revision,
        }


def problems(f: SessionFigures) -> list[str]:
    """What is wrong with one session (empty when healthy)."""
    out: list[str] = []
    if f.rows:
        if f.distinct < f.rows:
            out.append("duplicate_sequence")
        if f.min_sequence != 0 or f.max_sequence != f.distinct - 1:
            out.append("gap")
        if f.min_revision is not None and f.min_revision < 0:
            out.append("negative_revision")
    if not f.has_head:
        if f.rows:
            out.append("no_head")
        return out
    if f.next_sequence != f.rows:
        out.append("next_sequence")
    if (f.last_change or 0) != (f.max_change or 0):
        out.append("last_change")
    return out


@dataclass(slots=True)
class Report:
    """Running totals of one verify pass; keeps at most ``listed`` violations."""

    listed: int = LISTED
    sessions: int = 0
    rows: int = 0
    violations_total: int = 0
    violations: list[dict[str, Any]] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    def add(self, f: SessionFigures) -> list[str]:
        self.sessions += 1
        self.rows += f.rows
        found = problems(f)
        if found:
            self.violations_total += 1
            if len(self.violations) < self.listed:
                self.violations.append({**f.as_dict(), "problems": found})
        return found

    @property
    def ok(self) -> bool:
        return self.violations_total == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "sessions": self.sessions,
            "rows": self.rows,
            "violations_total": self.violations_total,
            "violations": self.violations,
            "truncated": self.violations_total > len(self.violations),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
        }


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def format_report(d: Mapping[str, Any]) -> str:
    head = f"checked {d['sessions']} sessions, {d['rows']} rows"
    if d["ok"]:
        return f"{head}: ok"
    lines = [f"{head}: {d['violations_total']} broken sessions", ""]
    rows = [
        [
            v["session"],
            str(v["rows"]),
            "-" if v["next_sequence"] is None else str(v["next_sequence"]),
            "-" if v["last_change"] is None else str(v["last_change"]),
            "-" if v["max_change"] is None else str(v["max_change"]),
            ", ".join(PROBLEMS.get(p, p) for p in v["problems"]),
        ]
        for v in d["violations"]
    ]
    lines.append(
        table(["session", "rows", "next_sequence", "last_change", "max change", "problems"], rows)
    )
    if d.get("truncated"):
        lines.append(f"... and {d['violations_total'] - len(d['violations'])} more")
    lines.append("")
    lines.append("fix them with `rowcast repair` (or `rowcast repair --session S`)")
    return "\n".join(lines)


# --- I/O ------------------------------------------------------------------


def scan(conn: psycopg.Connection[Any], chunk: int = CHUNK) -> Iterator[list[SessionFigures]]:
    """Every session's figures, one chunk of sessions at a time."""
    after = ""  # below every session id: ids are at least one byte
    while True:
        lines = conn.execute(sql("verify_chunk"), {"after": after, "limit": chunk}).fetchall()
        figures = [SessionFigures(*line) for line in lines]
        if figures:
            yield figures
        heads = sum(1 for f in figures if f.has_head)
        if heads < chunk:
            return
        after = figures[-1].session


def session_figures(conn: psycopg.Connection[Any], session: str) -> SessionFigures:
    line = conn.execute(sql("verify_session"), {"session": session}).fetchone()
    assert line is not None  # the query always returns its one line
    return SessionFigures(*line)


def verify(
    conn: psycopg.Connection[Any],
    chunk: int = CHUNK,
    listed: int = LISTED,
    on_chunk: Callable[[Report], None] | None = None,
) -> Report:
    report = Report(listed=listed)
    for figures in scan(conn, chunk):
        for f in figures:
            report.add(f)
        if on_chunk is not None:
            on_chunk(report)
    report.finished_at = time.time()
    return report


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace, settings: Settings) -> int:
    with connect_db(settings) as conn:
        report = verify(conn).as_dict()
    if args.json:
        sys.stdout.write(orjson.dumps(report).decode() + "\n")
    else:
        sys.stdout.write(format_report(report) + "\n")
    if not report["ok"]:
        sys.stderr.write(f"rowcast: verify failed: {report['violations_total']} broken sessions\n")
        return 1
    return 0
