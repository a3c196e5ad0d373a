"""Checks of the writer's fault tests: what PostgreSQL and Redis must hold
after a run, compared with what was produced (rows, heads, published
changes, receipts, dead letters).

The reference semantics here are written from the contract alone (not from
the writer's code): a row is created by its first entry with the next
sequence of its session and revision 0; a later upsert replaces kind and body
and adds one to revision; a later append changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
import redis as redis_sync

from rowcast.contract.keys import GROUP, Keys
from tests.integration.processes import SHARD, Writers, wait_for
from tests.integration.workload import Pushed


@dataclass
class Expected:
    rows: dict[tuple[str, str], dict[str, Any]]
    order: dict[str, list[str]]  # each session's rows in first-appearance order


def expected(items: list[Pushed]) -> Expected:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    order: dict[str, list[str]] = {}
    for it in items:
        if it.expect != "apply":
            continue
        f = it.fields
        session, row = it.key
        cur = rows.get((session, row))
        if cur is None:
            rows[(session, row)] = {"kind": f["kind"].decode(), "body": f["body"], "revision": 0}
            order.setdefault(session, []).append(row)
        elif f["op"] == b"upsert":
            cur.update(kind=f["kind"].decode(), body=f["body"], revision=cur["revision"] + 1)
    return Expected(rows, order)


def stored_rows(db_url: str) -> dict[tuple[str, str], dict[str, Any]]:
    with psycopg.connect(db_url) as c:
        cur = c.execute(
            "SELECT session_id, row_id, sequence, revision, change, kind, body::text"
            " FROM rowcast.rows"
        )
        return {
            (s, r): {"sequence": q, "revision": v, "change": ch, "kind": k, "body": b}
            for s, r, q, v, ch, k, b in cur
        }


def check_heads(db_url: str) -> None:
    """Each session: sequences 0..n-1, unique change numbers, heads matching."""
    with psycopg.connect(db_url) as c:
        bad = c.execute(
            """
            SELECT h.session_id, h.next_sequence, h.last_change,
                   count(r.row_id), coalesce(max(r.sequence), -1),
                   count(DISTINCT r.sequence), count(DISTINCT r.change),
                   coalesce(max(r.change), 0)
              FROM rowcast.sessions h
              LEFT JOIN rowcast.rows r ON r.session_id = h.session_id
             GROUP BY h.session_id, h.next_sequence, h.last_change
            HAVING h.next_sequence <> count(r.row_id)
                OR coalesce(max(r.sequence), -1) <> count(r.row_id) - 1
                OR count(DISTINCT r.sequence) <> count(r.row_id)
                OR count(DISTINCT r.change) <> count(r.row_id)
                OR h.last_change <> coalesce(max(r.change), 0)
            """
        ).fetchall()
    assert not bad, f"sessions violating the invariants: {bad[:5]}"


def check_rows(
    db_url: str, items: list[Pushed], tag: str | None = None
) -> dict[tuple[str, str], dict[str, Any]]:
    """PostgreSQL holds exactly what the pushed entries say: nothing lost or
    duplicated, sequences in first-appearance order, last bodies, revisions.
    With ``tag``, only the sessions whose id starts with ``tag-`` are compared."""
    want = expected(items)
    got = stored_rows(db_url)
    if tag is not None:
        got = {k: v for k, v in got.items() if k[0].startswith(f"{tag}-")}
        want.rows = {k: v for k, v in want.rows.items() if k[0].startswith(f"{tag}-")}
        want.order = {k: v for k, v in want.order.items() if k.startswith(f"{tag}-")}
    missing = sorted(set(want.rows) - set(got))
    extra = sorted(set(got) - set(want.rows))
    assert not missing, f"{len(missing)} rows lost, e.g. {missing[:5]}"
    assert not extra, f"{len(extra)} rows that were never produced, e.g. {extra[:5]}"
    for session, rows in want.order.items():
        seqs = [got[(session, r)]["sequence"] for r in rows]
        assert seqs == list(range(len(rows))), f"session {session}: sequences {seqs[:20]}..."
    wrong = [
        (key, w, got[key])
        for key, w in want.rows.items()
        if (w["kind"], orjson.loads(w["body"]), w["revision"])
        != (got[key]["kind"], orjson.loads(got[key]["body"]), got[key]["revision"])
    ]
    assert not wrong, f"{len(wrong)} rows with a wrong final state, e.g. {wrong[:3]}"
    check_heads(db_url)
    return got


def rows_stream(r: redis_sync.Redis, prefix: str) -> list[dict[bytes, bytes]]:
    out: list[dict[bytes, bytes]] = []
    start = "-"
    key = Keys(prefix).rows(SHARD)
    while True:
        chunk: Any = r.xrange(key, start, "+", count=5000)
        out += [f for _, f in chunk]
        if len(chunk) < 5000:
            return out
        last = chunk[-1][0].decode()
        ms, seq = last.split("-")
        start = f"{ms}-{int(seq) + 1}"


def check_published(
    r: redis_sync.Redis,
    prefix: str,
    got: dict[tuple[str, str], dict[str, Any]],
    announced: set[tuple[str, str, int]] | None,
) -> list[tuple[str, int, int]]:
    """Every row's final change reached ``P:{N}:rows`` (and ``P:rows`` when
    ``announced`` is given). Returns the places where a session's change
    numbers went backwards in ``P:{N}:rows`` (re-publishing after a crash
    repeats changes; it should never go back)."""
    entries = rows_stream(r, prefix)
    streamed = {(f[b"session"].decode(), f[b"row"].decode(), int(f[b"change"])) for f in entries}
    final = {(s, row, v["change"]) for (s, row), v in got.items()}
    missing = sorted(final - streamed)
    assert not missing, f"{len(missing)} final changes missing from P:{{N}}:rows: {missing[:5]}"
    if announced is not None:
        missing = sorted(final - announced)
        assert not missing, f"{len(missing)} final changes never published: {missing[:5]}"
    backwards = []
    last: dict[str, int] = {}
    for f in entries:
        s, ch = f[b"session"].decode(), int(f[b"change"])
        if ch < last.get(s, 0):
            backwards.append((s, last[s], ch))
        last[s] = max(ch, last.get(s, 0))
    return backwards


def wait_applied(
    db_url: str,
    r: redis_sync.Redis,
    prefix: str,
    last_id: str,
    timeout: float,
    writers: Writers,
) -> None:
    """Until PostgreSQL's tracking record reached ``last_id`` and nothing is
    pending in the group (every batch's Redis side effects went out). Fails
    at once when no writer process is left running."""
    stream = Keys(prefix).entries(SHARD)
    want = tuple(int(x) for x in last_id.split("-"))

    def done() -> bool:
        if all(w.proc.poll() is not None for w in writers.started):
            raise AssertionError(f"every writer exited\n{writers.logs()}")
        with psycopg.connect(db_url) as c:
            row = c.execute(
                "SELECT last_ms, last_seq FROM rowcast.offsets WHERE stream = %s", (stream,)
            ).fetchone()
        if row is None or tuple(row) < want:
            return False
        try:
            return int(r.xpending(stream, GROUP)["pending"]) == 0
        except redis_sync.exceptions.ResponseError:
            return False

    try:
        wait_for(f"entries up to {last_id} to be applied", done, timeout, every=0.1)
    except AssertionError as e:
        if "every writer exited" in str(e):
            raise
        raise AssertionError(f"{e}\n{writers.logs()}") from None


def receipts(r: redis_sync.Redis, prefix: str, token: str) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in r.lrange(Keys(prefix).reply(SHARD, token), 0, -1)]


def check_receipts(
    r: redis_sync.Redis,
    prefix: str,
    items: list[Pushed],
    got: dict[tuple[str, str], dict[str, Any]],
) -> int:
    """Every entry that asked for a receipt with a valid token has one: ok with
    its row's sequence when stored, an error when refused. Returns how many
    tokens received more than one receipt (redelivery after a crash)."""
    repeated = 0
    for it in items:
        token = it.reply
        if token is None or token == "not a token!":
            continue
        rs = receipts(r, prefix, token)
        assert rs, f"no receipt for {it.fields} ({it.id})"
        repeated += len(rs) > 1
        if it.expect == "apply":
            row = got[it.key]
            for x in rs:
                assert x["ok"] is True, x
                assert (x["session"], x["row"], x["sequence"]) == (*it.key, row["sequence"]), x
        else:
            assert all(x["ok"] is False and x["error"] for x in rs), rs
    return repeated


def check_dead(r: redis_sync.Redis, prefix: str, items: list[Pushed]) -> int:
    """Every refused entry is in ``P:{N}:dead`` with a reason and its original
    fields byte for byte; nothing else is. Returns the number of repeats."""
    dead: Any = r.xrange(Keys(prefix).dead(SHARD), "-", "+")
    by_source: dict[str, list[dict[bytes, bytes]]] = {}
    for _, f in dead:
        by_source.setdefault(f[b"source"].decode(), []).append(f)
    poison = {it.id: it for it in items if it.expect != "apply"}
    missing = sorted(set(poison) - set(by_source))
    assert not missing, f"dead letters missing for {[poison[i].fields for i in missing]}"
    unexpected = sorted(set(by_source) - set(poison))
    assert not unexpected, f"entries dead-lettered by mistake: {by_source[unexpected[0]]}"
    for source, letters in by_source.items():
        for f in letters:
            assert f[b"error"], f
            original = {k.decode(): v for k, v in f.items() if k not in (b"error", b"source")}
            assert original == poison[source].fields, (original, poison[source].fields)
    return sum(len(v) - 1 for v in by_source.values())


def refused_by_postgres(r: redis_sync.Redis, prefix: str) -> set[str]:
    """Ids of the entries dead-lettered because PostgreSQL refused them."""
    dead: Any = r.xrange(Keys(prefix).dead(SHARD), "-", "+")
    return {f[b"source"].decode() for _, f in dead if f[b"error"].startswith(b"PostgreSQL refused")}
