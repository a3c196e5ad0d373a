"""`rowcast replay` is idempotent, and brings back rows lost to a restore."""

from __future__ import annotations

import re

import psycopg
import pytest
import redis

from rowcast.contract.keys import Keys
from rowcast.producers import Producer, make_entry
from tests.integration.test_ops_support import (
    arun_cli,
    run_cli,
    running_writer,
    server_args,
    settings_for,
    snapshot,
    wait_applied,
)

SESSIONS = ["alpha", "beta", "gamma", "delta"]


def _phase(first: int, last: int, upsert_rows: list[str]) -> list:
    out = []
    for s in SESSIONS:
        for i in range(first, last):
            out.append(make_entry("append", s, f"r{i:02d}", "user", {"i": i, "s": s}))
        for r in upsert_rows:
            out.append(make_entry("upsert", s, r, "assistant", {"r": r, "at": last}))
    return out


async def _drain(rsync: redis.Redis, db_url: str, keys: Keys, shards: int) -> None:
    for n in range(shards):
        tail = rsync.xrevrange(keys.entries(n), "+", "-", count=1)
        if tail:
            await wait_applied(db_url, keys.entries(n), tail[0][0].decode())


def _restore(db_url: str, old: dict) -> None:
    """Put these sessions back as an older backup had them: rows and heads."""
    sessions = list(old["heads"])
    with psycopg.connect(db_url) as conn:
        conn.execute("DELETE FROM rowcast.rows WHERE session_id = ANY(%s)", (sessions,))
        for (s, r), (seq, rev, chg, kind, body, ems, eseq) in old["rows"].items():
            conn.execute(
                "INSERT INTO rowcast.rows (session_id, row_id, sequence, revision, change,"
                " kind, body, entry_ms, entry_seq) VALUES (%s,%s,%s,%s,%s,%s,%s::jsonb,%s,%s)",
                (s, r, seq, rev, chg, kind, body, ems, eseq),
            )
        for s, (nxt, last) in old["heads"].items():
            conn.execute(
                "UPDATE rowcast.sessions SET next_sequence = %s, last_change = %s"
                " WHERE session_id = %s",
                (nxt, last, s),
            )
        conn.commit()


def _refed(out: str) -> int:
    return sum(int(n) for n in re.findall(r"re-fed (\d+) entries \(", out))


@pytest.mark.timeout(120)
async def test_replay_is_idempotent_and_restores_later_rows(
    redis_url: str, db_url: str, prefix: str, rsync: redis.Redis
) -> None:
    shards = 2
    s = settings_for(redis_url, db_url, prefix, shards=shards)
    args = server_args(s)
    keys = Keys(prefix)
    producer = Producer.from_url(redis_url, prefix=prefix, shards=shards)
    try:
        async with running_writer(s):
            await producer.push_and_wait(_phase(0, 6, ["r00"]), timeout=60)
            older = snapshot(db_url, ["alpha", "beta"])
            # later history: new rows, upserts of old and new rows, several per row
            await producer.push_and_wait(_phase(6, 12, ["r00", "r08"]), timeout=60)
            await producer.push_and_wait(_phase(12, 14, ["r08", "r13"]), timeout=60)
            final = snapshot(db_url)
            total = sum(rsync.xlen(keys.entries(n)) for n in range(shards))

            # Replaying history that is stored changes nothing.
            code, out, err = await arun_cli(["replay", "--from", "-", *args])
            assert code == 0, err
            assert _refed(out) == total
            await _drain(rsync, db_url, keys, shards)
            assert snapshot(db_url) == final

            # PostgreSQL loses the later history of two sessions (restored from
            # an older backup); replaying the input stream brings it back.
            _restore(db_url, older)
            lost = snapshot(db_url, ["alpha", "beta"])
            assert len(lost["rows"]) == len(older["rows"]) < len(final["rows"]) / 2
            code, out, err = await arun_cli(["replay", "--from", "0", *args])
            assert code == 0, err
            # the first replay's entries repeat originals of the range: skipped
            assert _refed(out) == total
            assert "skipped" in out
            await _drain(rsync, db_url, keys, shards)
    finally:
        await producer.close()

    now = snapshot(db_url)
    for key, (seq, rev, chg, kind, body, ems, eseq) in final["rows"].items():
        got = now["rows"][key]
        # Same place, same revision, same content, written by the same entry.
        assert (got[0], got[1], got[3], got[4], got[5], got[6]) == (seq, rev, kind, body, ems, eseq)
        if key[0] in ("gamma", "delta"):
            assert got[2] == chg  # untouched sessions keep even their change numbers
    assert now["rows"].keys() == final["rows"].keys()
    for sess, (nxt, last) in final["heads"].items():
        assert now["heads"][sess][0] == nxt
        assert now["heads"][sess][1] >= last
    code, out, err = run_cli(["verify", *args])
    assert code == 0, out


def test_replay_of_a_sub_range_and_bad_ids(
    redis_url: str, db_url: str, prefix: str, rsync: redis.Redis
) -> None:
    s = settings_for(redis_url, db_url, prefix)
    args = server_args(s)
    key = Keys(prefix).entries(0)
    ids = [
        rsync.xadd(
            key,
            {
                "op": "append",
                "session": "s",
                "row": str(i),
                "kind": "k",
                "body": "{}",
                "reply": f"tok{i}",
            },
        ).decode()
        for i in range(6)
    ]
    code, out, err = run_cli(["replay", "--from", ids[1], "--to", ids[3], *args])
    assert code == 0, err
    assert "re-fed 3 entries" in out
    added = rsync.xrange(key, f"({ids[-1]}", "+")
    assert [f[b"rowcast.origin"].decode() for _, f in added] == ids[1:4]
    assert all(b"reply" not in f for _, f in added)
    assert [f[b"row"] for _, f in added] == [b"1", b"2", b"3"]

    for bad, what in (
        (["--from", "yesterday"], "--from"),
        (["--from", "5-x"], "--from"),
        (["--from", ids[3], "--to", ids[1]], "--to"),
        (["--from", "0", "--shard", "3"], "--shard"),
    ):
        code, out, err = run_cli(["replay", *bad, *args])
        assert code == 2, (bad, out, err)
        assert err.count("\n") == 1 and what in err, err
