"""Fault tests of the write path, around the servers: a ``rowcast writer``
cut off from PostgreSQL, left without its Redis (a private one, restarted or
killed), restarted after a kill inside the start-up migration, or handed
entries PostgreSQL refuses among good ones; afterwards PostgreSQL and Redis
are compared with what was produced (nothing lost, nothing duplicated, order
kept). Kills, takeovers and stale leaders are in test_writer_faults.py.

Random fault points are seeded; the seed is printed (``pytest -s`` or the
captured output of a failure) and ``ROWCAST_FAULT_SEED=N`` replays it.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import redis as redis_sync

from rowcast.contract.keys import Keys
from tests.integration.checks import (
    check_dead,
    check_heads,
    check_published,
    check_receipts,
    check_rows,
    receipts,
    stored_rows,
    wait_applied,
)
from tests.integration.processes import (
    SHARD,
    PrivateRedis,
    Writers,
    commit_unannounced,
    terminate_backends,
    wait_for,
)
from tests.integration.workload import (
    AckedProducer,
    Producer,
    Pushed,
    Subscriber,
    Workload,
    entry,
    push,
    seeded,
)


@pytest.fixture
def writers(tmp_path: Path, redis_url: str, db_url: str, prefix: str) -> Iterator[Writers]:
    w = Writers(tmp_path, redis_url, db_url, prefix)
    yield w
    w.reap()


def _fence_in_pg(db_url: str, prefix: str) -> int:
    with psycopg.connect(db_url) as c:
        row = c.execute(
            "SELECT fence FROM rowcast.offsets WHERE stream = %s", (Keys(prefix).entries(SHARD),)
        ).fetchone()
    return int(row[0]) if row else 0


# --------------------------------------------------------------------------
# 6. Entries PostgreSQL refuses, isolated from their batch


@pytest.mark.timeout(60)
def test_refused_body_under_a_later_upsert_of_its_row_is_dead_lettered(
    writers: Writers, rsync: redis_sync.Redis, db_url: str, prefix: str
) -> None:
    """The contract: an entry with a body PostgreSQL refuses is dead-lettered,
    and revision counts the upserts that replaced the row. One batch: append,
    upsert, upsert with such a body, upsert; the refused one must not count,
    however the batch was merged."""
    entries = [
        entry("append", "m-s", "x", b'{"v": 0}'),
        entry("upsert", "m-s", "x", b'{"v": 1}'),
        entry("upsert", "m-s", "x", b'{"v": 1e1000000}', reply="m-bad", expect="reject"),
        entry("upsert", "m-s", "x", b'{"v": 2}'),
    ]
    push(rsync, Keys(prefix).entries(SHARD), entries)  # before the writer: one batch
    writers.start()
    wait_applied(db_url, rsync, prefix, entries[-1].id, 30, writers)
    got = stored_rows(db_url)[("m-s", "x")]
    assert orjson.loads(got["body"]) == {"v": 2}
    report = (got["revision"], receipts(rsync, prefix, "m-bad"))
    assert report[1] and report[1][0]["ok"] is False, f"bad upsert accepted: {report}"
    assert got["revision"] == 2
    assert check_dead(rsync, prefix, entries) == 0


def _break_head(db_url: str, session: str) -> None:
    """Set a session's next sequence back to 0: its next new row collides with
    the unique (session_id, sequence) constraint, a refusal no check in Python
    can foresee (what ``rowcast repair`` exists for)."""
    with psycopg.connect(db_url) as c:
        c.execute("UPDATE rowcast.sessions SET next_sequence = 0 WHERE session_id = %s", (session,))


def _refused_batch() -> list[Pushed]:
    """One batch for a session ``h-s`` whose head is broken, mixed with others:
    only the new row of ``h-s`` can never be stored."""
    return [
        entry("append", "o-s", "x", b'{"v": 1}', reply="q-x"),
        # Refused by PostgreSQL: sequence 0 of h-s is taken.
        entry("append", "h-s", "c", b'{"v": 2}', reply="q-c", expect="reject"),
        # Refused by the writer's own checks.
        entry("append", "o-s", "bad", b'{"broken": ', reply="q-bad", expect="dead"),
        entry("upsert", "h-s", "a", b'{"v": 3}', reply="q-a"),  # an existing row: fine
        entry("append", "o-s", "y", b'{"v": 4}'),
    ]


def _check_refused_batch(
    rsync: redis_sync.Redis, db_url: str, prefix: str, first: list[Pushed], entries: list[Pushed]
) -> None:
    got = stored_rows(db_url)
    assert sorted(got) == [("h-s", "a"), ("h-s", "b"), ("o-s", "x"), ("o-s", "y")]
    assert [got[("o-s", r)]["sequence"] for r in ("x", "y")] == [0, 1]
    assert (got[("h-s", "a")]["revision"], orjson.loads(got[("h-s", "a")]["body"])) == (1, {"v": 3})
    assert check_receipts(rsync, prefix, entries, got) == 0
    assert check_dead(rsync, prefix, first + entries) == 0
    dead: Any = rsync.xrange(Keys(prefix).dead(SHARD))
    (letter,) = [f for _, f in dead if f[b"row"] == b"c"]
    assert letter[b"error"].startswith(b"PostgreSQL refused the entry"), letter
    with psycopg.connect(db_url) as c:
        rejects = c.execute("SELECT entry_id FROM rowcast.rejects").fetchall()
    assert rejects == [(entries[1].id,)]


@pytest.mark.timeout(60)
def test_entry_postgres_refuses_is_isolated_from_its_batch(
    writers: Writers, rsync: redis_sync.Redis, db_url: str, prefix: str
) -> None:
    stream = Keys(prefix).entries(SHARD)
    first = [entry("append", "h-s", "a", b"1"), entry("append", "h-s", "b", b"2")]
    push(rsync, stream, first)
    w = writers.start()
    wait_applied(db_url, rsync, prefix, first[-1].id, 30, writers)
    w.signal(signal.SIGTERM)
    assert w.wait(15) == 0
    _break_head(db_url, "h-s")
    entries = _refused_batch()
    push(rsync, stream, entries)  # while no writer runs: one batch
    writers.start()
    wait_applied(db_url, rsync, prefix, entries[-1].id, 30, writers)
    _check_refused_batch(rsync, db_url, prefix, first, entries)


@pytest.mark.timeout(60)
def test_poison_of_a_batch_committed_before_a_crash_is_dead_lettered_once(
    writers: Writers, rsync: redis_sync.Redis, db_url: str, prefix: str
) -> None:
    """Recovery of a committed batch whose Redis side effects never went out:
    the refused entries are dead-lettered (PostgreSQL's refusals with the
    reason recorded in rowcast.rejects), once each, with error receipts."""
    stream = Keys(prefix).entries(SHARD)
    first = [entry("append", "h-s", "a", b"1"), entry("append", "h-s", "b", b"2")]
    push(rsync, stream, first)
    w = writers.start()
    wait_applied(db_url, rsync, prefix, first[-1].id, 30, writers)
    w.signal(signal.SIGTERM)
    assert w.wait(15) == 0
    _break_head(db_url, "h-s")
    entries = _refused_batch()
    push(rsync, stream, entries)
    asyncio.run(commit_unannounced(db_url, rsync, prefix))
    w = writers.start()
    wait_applied(db_url, rsync, prefix, entries[-1].id, 30, writers)
    assert w.count("re-publishing") == 1
    _check_refused_batch(rsync, db_url, prefix, first, entries)


# --------------------------------------------------------------------------
# A kill inside the start-up migration


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_restart_after_a_kill_inside_the_migration_lock(writers: Writers, db_url: str) -> None:
    """A writer SIGKILLed while ``migrate`` holds yoyo's lock row leaves that
    row behind; the next writer must still start (simulated: the row of a
    process that no longer exists)."""
    with psycopg.connect(db_url) as c:
        c.execute("INSERT INTO yoyo_lock (locked, ctime, pid) VALUES (1, now(), 2147483646)")
    w = writers.start()
    w.wait_leading(timeout=30)


# --------------------------------------------------------------------------
# 3. PostgreSQL connection loss


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_postgres_connection_loss_mid_stream(
    writers: Writers, rsync: redis_sync.Redis, redis_url: str, db_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    with seeded("pg-loss") as rng:
        wl = Workload(rng, "g")
        items = wl.entries(2000)
        w = writers.start()
        w.wait_leading()
        sub = Subscriber(redis_url, keys.channel)
        sub.start()
        try:
            producer = Producer(redis_url, keys.entries(SHARD), items, burst=40, pause=0.05)
            producer.start()
            terminated = 0
            deadline = time.monotonic() + 15
            while (producer.is_alive() or terminated < 6) and time.monotonic() < deadline:
                time.sleep(rng.uniform(0.1, 0.5))
                terminated += terminate_backends(db_url)
            pushed = producer.finish()
            wait_applied(db_url, rsync, prefix, pushed[-1].id, 20, writers)
        finally:
            sub.close()
    assert terminated >= 5, f"only {terminated} backends terminated"
    assert w.proc.poll() is None, "the writer died instead of reconnecting"
    got = check_rows(db_url, pushed)
    check_receipts(rsync, prefix, pushed, got)
    backwards = check_published(rsync, prefix, got, sub.changes())
    print(f"P:{{N}}:rows going backwards (see the recovery test): {backwards[:5]}")
    print(f"{terminated} backends terminated; writer led {w.leading()} times")


# --------------------------------------------------------------------------
# 4. Redis restarts (a private server: the shared one is never touched)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_redis_restart_without_persistence(tmp_path: Path, db_url: str, prefix: str) -> None:
    server = PrivateRedis(tmp_path)
    server.start()
    writers = Writers(tmp_path, server.url, db_url, prefix)
    r = server.client()
    keys = Keys(prefix)
    stream = keys.entries(SHARD)
    try:
        with seeded("redis-restart") as rng:
            wl = Workload(rng, "a", sessions=20)
            w = writers.start()
            w.wait_leading()

            # A workload, applied; then Redis forgets everything.
            part1 = wl.entries(600)
            push(r, stream, part1)
            wait_applied(db_url, r, prefix, part1[-1].id, 30, writers)
            check_rows(db_url, part1)
            fence_before = _fence_in_pg(db_url, prefix)
            assert fence_before >= 1
            run_id = r.info("server")["run_id"]
            server.restart()
            assert r.info("server")["run_id"] != run_id

            # The writer recovers by itself: a new group, a fence above PG's.
            part2 = wl.entries(600)
            push(r, stream, part2)
            wait_applied(db_url, r, prefix, part2[-1].id, 60, writers)
            got = check_rows(db_url, part1 + part2)
            check_receipts(r, prefix, part2, got)
            fence = int(r.get(keys.fence(SHARD)) or 0)
            assert fence > fence_before
            assert _fence_in_pg(db_url, prefix) == fence
            assert w.proc.poll() is None

            # Redis killed mid-stream: only what receipts confirmed must be kept.
            acked = AckedProducer(server.url, prefix, Workload(rng, "c").fresh(3000))
            acked.start()
            at = rng.randint(30, 300)
            wait_for(f"{at} receipts", lambda: len(acked.acked) >= at or not acked.is_alive(), 30)
            server.kill()
            acked.join(30)
            assert not acked.is_alive()
            server.start()
            part4 = Workload(rng, "d", sessions=20).entries(400)
            push(r, stream, part4)
            wait_applied(db_url, r, prefix, part4[-1].id, 60, writers)
            assert w.proc.poll() is None, "the writer died instead of recovering"
    finally:
        writers.reap()
        r.close()
        server.kill()

    check_rows(db_url, part1 + part2, tag="a")
    check_rows(db_url, part4, tag="d")
    check_heads(db_url)
    stored = stored_rows(db_url)
    assert acked.stopped_by != "done", "the kill came after the last entry"
    last_seq: dict[str, int] = {}
    for it, receipt in acked.acked:
        assert receipt["ok"] is True, receipt
        row = stored.get(it.key)
        assert row is not None, f"acknowledged row lost: {it.key}"
        assert row["sequence"] == receipt["sequence"]
        assert orjson.loads(row["body"]) == orjson.loads(it.fields["body"])
        # Order kept: appends of new rows, so sequences follow the push order.
        assert row["sequence"] > last_seq.get(it.key[0], -1)
        last_seq[it.key[0]] = row["sequence"]
    pushed_c = {it.key for it in acked.items}
    invented = [k for k in stored if k[0].startswith("c-") and k not in pushed_c]
    assert not invented
    print(f"{len(acked.acked)} acknowledged before the kill; stopped by {acked.stopped_by}")
