"""`rowcast verify` catches broken sessions, `rowcast repair` fixes them."""

from __future__ import annotations

import asyncio
import random

import orjson
import psycopg
import pytest
import redis

from rowcast.contract.keys import Keys, shard_of
from rowcast.ops.admin.verify import verify
from rowcast.producers import Producer
from tests.integration.test_ops_support import (
    apply_rows,
    arun_cli,
    run_cli,
    running_writer,
    server_args,
    settings_for,
    snapshot,
)


def _healthy(db_url: str, sessions: list[str], rows: int, batches: int = 3) -> None:
    """Sessions of ``rows`` appends each, stored over several transactions, plus upserts."""
    per = rows // batches
    for b in range(batches):
        apply_rows(
            db_url,
            [
                ("append", s, f"r{i}", orjson.dumps({"i": i}).decode())
                for s in sessions
                for i in range(b * per, (b + 1) * per)
            ],
        )
    apply_rows(db_url, [("upsert", s, "r0", '{"i": "again"}') for s in sessions])


def _verify_json(args: list[str]) -> tuple[int, dict]:
    code, out, err = run_cli(["verify", "--json", *args])
    assert code in (0, 1), err
    return code, orjson.loads(out)


def _problems(doc: dict) -> dict[str, list[str]]:
    return {v["session"]: v["problems"] for v in doc["violations"]}


def test_verify_catches_each_break_and_repair_fixes_it(
    redis_url: str, db_url: str, prefix: str, rsync: redis.Redis
) -> None:
    s = settings_for(redis_url, db_url, prefix, shards=2)
    args = server_args(s)
    sessions = ["ok", "gap", "dup", "head", "orphan"]
    _healthy(db_url, sessions, rows=9)
    code, doc = _verify_json(args)
    assert code == 0 and doc["ok"] and doc["sessions"] == 5 and doc["rows"] == 45

    before = snapshot(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        # a gap: the last row moved up by 3
        conn.execute(
            "UPDATE rowcast.rows SET sequence = 11 WHERE session_id = 'gap' AND sequence = 8"
        )
        # a duplicate: the unique constraint gone, two rows share sequence 4
        conn.execute("ALTER TABLE rowcast.rows DROP CONSTRAINT rows_session_sequence_key")
        conn.execute(
            "UPDATE rowcast.rows SET sequence = 4 WHERE session_id = 'dup' AND sequence = 5"
        )
        # a wrong head: both counters behind
        conn.execute(
            "UPDATE rowcast.sessions SET next_sequence = 3, last_change = 2"
            " WHERE session_id = 'head'"
        )
        # rows whose head is gone
        conn.execute("DELETE FROM rowcast.sessions WHERE session_id = 'orphan'")

    code, doc = _verify_json(args)
    assert code == 1 and not doc["ok"]
    assert doc["violations_total"] == 4
    found = _problems(doc)
    assert found["gap"] == ["gap"]
    assert "duplicate_sequence" in found["dup"] and "gap" in found["dup"]
    assert sorted(found["head"]) == ["last_change", "next_sequence"]
    assert found["orphan"] == ["no_head"]
    assert "ok" not in found
    # The human form lists them too, exit 1.
    code, out, err = run_cli(["verify", *args])
    assert code == 1 and "gap" in out and "orphan" in out and err.startswith("rowcast: verify")

    # A dry run changes nothing.
    mid = snapshot(db_url)
    code, out, err = run_cli(["repair", "--dry-run", *args])
    assert code == 0, err
    assert "would renumber" in out and "'dup'" in out
    assert snapshot(db_url) == mid

    code, out, err = run_cli(["repair", *args])
    assert code == 0, err + out
    assert "repaired 4 sessions" in out
    code, doc = _verify_json(args)
    assert code == 0 and doc["ok"], doc

    after = snapshot(db_url)
    # Untouched sessions are exactly as before; broken ones are dense again in
    # insertion order and keep every row.
    for key, value in before["rows"].items():
        if key[0] == "ok":
            assert after["rows"][key] == value
        assert key in after["rows"]
    assert len(after["rows"]) == len(before["rows"])
    gap = {k[1]: v[0] for k, v in after["rows"].items() if k[0] == "gap"}
    assert gap == {f"r{i}": i for i in range(9)}
    dup = sorted((v[0], k[1]) for k, v in after["rows"].items() if k[0] == "dup")
    assert [seq for seq, _ in dup] == list(range(9))
    assert after["heads"]["head"][0] == 9
    assert after["heads"]["orphan"][0] == 9

    # The renumbered rows were announced on their shard's rows stream.
    k = Keys(prefix)
    announced = []
    for n in range(2):
        announced += [(n, f) for _, f in rsync.xrange(k.rows(n))]
    rows_moved = {(f[b"session"].decode(), f[b"row"].decode()) for _, f in announced}
    assert ("gap", "r8") in rows_moved
    for n, f in announced:
        assert n == shard_of(f[b"session"].decode(), 2)
        session, row = f[b"session"].decode(), f[b"row"].decode()
        assert int(f[b"sequence"]) == after["rows"][(session, row)][0]
        assert int(f[b"change"]) == after["rows"][(session, row)][2]

    # A second repair finds nothing to do.
    code, out, _ = run_cli(["repair", *args])
    assert code == 0 and "nothing to repair" in out


def test_repair_one_session(redis_url: str, db_url: str, prefix: str) -> None:
    s = settings_for(redis_url, db_url, prefix)
    args = server_args(s)
    _healthy(db_url, ["a", "b"], rows=6)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE rowcast.sessions SET next_sequence = 99")
    code, out, err = run_cli(["repair", "--session", "a", *args])
    assert code == 0, err
    code, doc = _verify_json(args)
    assert list(_problems(doc)) == ["b"]
    code, out, _ = run_cli(["repair", "--session", "nope", *args])
    assert code == 2
    code, out, _ = run_cli(["repair", "--session", "a", *args])
    assert code == 0 and "healthy" in out


def test_a_head_ahead_of_its_rows_is_repaired_without_going_back(
    redis_url: str, db_url: str, prefix: str, rsync: redis.Redis
) -> None:
    """last_change above every row's change: the counter is kept (a client
    may hold a cursor up to it) and the newest row is announced above it."""
    s = settings_for(redis_url, db_url, prefix)
    args = server_args(s)
    _healthy(db_url, ["ahead"], rows=6)
    before = snapshot(db_url)
    newest = max(before["rows"].items(), key=lambda kv: kv[1][2])[0]
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE rowcast.sessions SET last_change = 99")
    code, doc = _verify_json(args)
    assert code == 1 and _problems(doc) == {"ahead": ["last_change"]}
    code, out, err = run_cli(["repair", "--dry-run", *args])
    assert code == 0 and "last_change 99 -> 100" in out, err + out
    code, out, err = run_cli(["repair", *args])
    assert code == 0, err + out
    code, doc = _verify_json(args)
    assert code == 0 and doc["ok"], doc
    after = snapshot(db_url)
    assert after["heads"]["ahead"][1] == 100
    for key, value in before["rows"].items():
        moved = (value[0], value[1], 100) if key == newest else value[:3]
        assert after["rows"][key][:3] == moved
    [(_, f)] = rsync.xrange(Keys(prefix).rows(0))
    assert (f[b"row"].decode(), int(f[b"change"])) == (newest[1], 100)


def test_verify_pages_through_many_sessions(db_url: str) -> None:
    """Keyset pagination: small chunks see every session once, orphans included."""
    names = [f"s{i:03d}" for i in range(25)]
    _healthy(db_url, names, rows=3, batches=1)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM rowcast.sessions WHERE session_id IN ('s000', 's011', 's024')")
        report = verify(conn, chunk=4)
    assert report.sessions == 25
    assert report.rows == 75
    assert sorted(v["session"] for v in report.violations) == ["s000", "s011", "s024"]


@pytest.mark.timeout(120)
async def test_repair_under_a_running_writer_loses_nothing(
    redis_url: str, db_url: str, prefix: str
) -> None:
    s = settings_for(redis_url, db_url, prefix, batch_max=50)
    args = server_args(s)
    sessions = [f"live{i}" for i in range(4)]
    per_session = 150
    producer = Producer.from_url(redis_url, prefix=prefix, shards=1)
    rng = random.Random(5)

    async def produce() -> None:
        for i in range(per_session):
            for sess in sessions:
                await producer.append(sess, f"r{i:04d}", "user", {"i": i})
            await asyncio.sleep(rng.random() * 0.02)

    def break_them() -> None:
        # Someone outside rowcast moves rows up (a gap) and breaks a head,
        # holding the head lock as the writer would.
        with psycopg.connect(db_url) as conn:
            for sess in sessions[:2]:
                conn.execute(
                    "SELECT 1 FROM rowcast.sessions WHERE session_id = %s FOR UPDATE", (sess,)
                )
                conn.execute(
                    "UPDATE rowcast.rows SET sequence = sequence + 1000000"
                    " WHERE session_id = %s AND sequence >= 5",
                    (sess,),
                )
                conn.commit()

    repaired = 0
    try:
        async with running_writer(s):
            task = asyncio.create_task(produce())
            while not task.done():
                await asyncio.sleep(0.1)
                await asyncio.to_thread(break_them)
                code, out, err = await arun_cli(["repair", *args])
                assert code == 0, err + out
                repaired += "repaired 2 sessions" in out
                assert "still broken" not in out
            await task
            last = await producer.append(sessions[-1], "last", "user", {}, wait=True, timeout=60)
            assert last.sequence == per_session
    finally:
        await producer.close()
    assert repaired, "the writer was never racing a repair"
    code, out, err = await arun_cli(["repair", *args])
    assert code == 0, err
    code, out, err = await arun_cli(["verify", "--json", *args])
    assert code == 0, out
    rows = snapshot(db_url)["rows"]
    for sess in sessions:
        order = sorted((v[0], k[1]) for k, v in rows.items() if k[0] == sess)
        names = [r for _, r in order if r != "last"]
        # every row, once, in the order it was produced
        assert names == [f"r{i:04d}" for i in range(per_session)], sess
        assert [seq for seq, _ in order] == list(range(len(order)))
