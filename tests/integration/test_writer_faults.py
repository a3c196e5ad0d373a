"""Fault tests of the write path: real ``rowcast writer`` processes killed,
paused, cut off from PostgreSQL, or left without their Redis, while a known
workload is produced; afterwards PostgreSQL and Redis are compared with what
was produced (nothing lost, nothing duplicated, order kept).

Random fault points are seeded; the seed is printed (``pytest -s`` or the
captured output of a failure) and ``ROWCAST_FAULT_SEED=N`` replays it.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import redis as redis_sync

from producers.entry import Entry
from producers.errors import Fenced
from producers.keys import CONSUMER, GROUP, Keys
from tests.integration.faults import (
    AckedProducer,
    PrivateRedis,
    Producer,
    Pushed,
    Subscriber,
    Workload,
    Writers,
    check_dead,
    check_heads,
    check_published,
    check_receipts,
    check_rows,
    holder_pid,
    lease_holder,
    push,
    receipts,
    refused_by_postgres,
    seeded,
    stored_rows,
    terminate_backends,
    wait_applied,
    wait_for,
)
from writer.batch import Read, Valid, parse_id, sort_out
from writer.store import Store

SHARD = 0


@pytest.fixture
def writers(tmp_path: Path, redis_url: str, db_url: str, prefix: str) -> Iterator[Writers]:
    w = Writers(tmp_path, redis_url, db_url, prefix)
    yield w
    w.reap()


def _mix(rng: random.Random, items: list[Pushed], extra: list[Pushed]) -> list[Pushed]:
    """``extra`` spread at random places of ``items``, each after every entry
    of its row (a later upsert merged over a refused body is another case:
    test_refused_body_under_a_later_upsert_of_its_row_is_dead_lettered)."""
    out = list(items)
    for e in extra:
        key = e.fields.get("session"), e.fields.get("row")
        after = [
            i + 1
            for i, it in enumerate(out)
            if (it.fields.get("session"), it.fields.get("row")) == key
        ]
        out.insert(rng.randint(max(after, default=0), len(out)), e)
    return out


def _entry(
    op: str, session: str, row: str, body: bytes, reply: str | None = None, expect: str = "apply"
) -> Pushed:
    fields = {"op": op.encode(), "session": session.encode(), "row": row.encode(),
              "kind": b"user", "body": body}  # fmt: skip
    if reply is not None:
        fields["reply"] = reply.encode()
    return Pushed(fields, expect)


def _fence_in_pg(db_url: str, prefix: str) -> int:
    with psycopg.connect(db_url) as c:
        row = c.execute(
            "SELECT fence FROM rowcast.offsets WHERE stream = %s", (Keys(prefix).entries(SHARD),)
        ).fetchone()
    return int(row[0]) if row else 0


# --------------------------------------------------------------------------
# 1 + 6. SIGKILL at random points, with poison mixed in


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigkill_at_random_points_loses_nothing_and_dead_letters_poison(
    writers: Writers, rsync: redis_sync.Redis, redis_url: str, db_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    with seeded("sigkill") as rng:
        wl = Workload(rng, "k")
        # Two sets of poison, each somewhere among the entries produced before it.
        first = wl.entries(1500)
        first = _mix(rng, first, wl.poison())
        rest = wl.entries(1500)
        items = first + _mix(rng, rest, wl.poison())
        sub = Subscriber(redis_url, keys.channel)
        sub.start()
        producer = Producer(redis_url, keys.entries(SHARD), items, burst=40, pause=0.1)
        producer.start()
        kills = 0
        try:
            while kills < 6:
                w = writers.start()
                # After "leading": recovery of the previous run, then the pipeline.
                # (Not earlier: a kill inside the start-up migration wedges the
                # restart, see test_restart_after_a_kill_inside_the_migration_lock.)
                w.wait_leading()
                time.sleep(rng.uniform(0.0, 1.2))
                w.signal(signal.SIGKILL)
                w.wait(10)
                kills += 1
            pushed = producer.finish()
            writers.start()
            wait_applied(db_url, rsync, prefix, pushed[-1].id, 60, writers)
        finally:
            sub.close()
    assert len(pushed) == len(items)
    got = check_rows(db_url, pushed)
    backwards = check_published(rsync, prefix, got, sub.changes())
    repeated_receipts = check_receipts(rsync, prefix, pushed, got)
    repeated_dead = check_dead(rsync, prefix, pushed)
    # PostgreSQL's refusals are recorded (exactly once) with the rows' transaction.
    with psycopg.connect(db_url) as c:
        rejects = {i for (i,) in c.execute("SELECT entry_id FROM rowcast.rejects")}
    assert rejects == refused_by_postgres(rsync, prefix)
    assert rejects <= {p.id for p in pushed if p.expect == "reject"}
    republished = sum(w.count("re-publishing") for w in writers.started)
    print(
        f"{kills} kills, {republished} recoveries re-publishing committed entries, "
        f"{len(got)} rows, {len(rejects)} entries refused by PostgreSQL; "
        f"repeated: {repeated_dead} dead letters, "
        f"{repeated_receipts} receipts; P:{{N}}:rows going backwards: {backwards[:5]}"
    )


@pytest.mark.timeout(60)
def test_refused_body_under_a_later_upsert_of_its_row_is_dead_lettered(
    writers: Writers, rsync: redis_sync.Redis, db_url: str, prefix: str
) -> None:
    """The contract: an entry with a body PostgreSQL refuses is dead-lettered,
    and revision counts the upserts that replaced the row. One batch: append,
    upsert, upsert with such a body, upsert; the refused one must not count,
    however the batch was merged."""
    entries = [
        _entry("append", "m-s", "x", b'{"v": 0}'),
        _entry("upsert", "m-s", "x", b'{"v": 1}'),
        _entry("upsert", "m-s", "x", b'{"v": 1e1000000}', reply="m-bad", expect="reject"),
        _entry("upsert", "m-s", "x", b'{"v": 2}'),
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


async def _commit_unannounced(db_url: str, r: redis_sync.Redis, prefix: str) -> None:
    """What a writer killed between COMMIT and its Redis side effects leaves:
    the entries pending for the group's consumer and stored in PostgreSQL
    (with a fresh fence, as a new leader would)."""
    keys = Keys(prefix)
    stream = keys.entries(SHARD)
    got: Any = r.xreadgroup(GROUP, CONSUMER, {stream: ">"})
    items = [(i, f) for i, f in got[0][1]]
    fence = int(r.incr(keys.fence(SHARD)))
    store = await Store.connect(db_url, stream, 1000)
    try:
        await store.claim(fence)
        # The entries the writer's checks refuse are only dead-lettered after
        # COMMIT, with the rest: here, never.
        valid, _ = sort_out([Read(i, f) for i, f in items], 1 << 20)
        await store.apply(fence, parse_id(items[0][0]), parse_id(items[-1][0]), valid)
    finally:
        await store.close()


@pytest.mark.timeout(60)
def test_recovery_never_publishes_a_session_backwards(
    writers: Writers, rsync: redis_sync.Redis, redis_url: str, db_url: str, prefix: str
) -> None:
    stream = Keys(prefix).entries(SHARD)
    first = [_entry("append", "b-s", "a", b"1"), _entry("append", "b-s", "b", b"2")]
    push(rsync, stream, first)
    w = writers.start()
    wait_applied(db_url, rsync, prefix, first[-1].id, 30, writers)
    w.signal(signal.SIGTERM)
    assert w.wait(15) == 0
    # Changes 1 (a) and 2 (b) are out. Then b is replaced (change 3) and a
    # producer's retry of a arrives (no change); the writer dies after COMMIT.
    second = [_entry("upsert", "b-s", "b", b"3"), _entry("append", "b-s", "a", b"1")]
    push(rsync, stream, second)
    asyncio.run(_commit_unannounced(db_url, rsync, prefix))
    sub = Subscriber(redis_url, Keys(prefix).channel)
    sub.start()
    try:
        writers.start()
        wait_applied(db_url, rsync, prefix, second[-1].id, 30, writers)
    finally:
        sub.close()
    got = check_rows(db_url, first + second)
    assert got[("b-s", "b")]["change"] == 3
    assert ("b-s", "b", 3) in sub.changes()
    assert not check_published(rsync, prefix, got, None)
    announced = [c["change"] for m in sub.messages for c in m["changes"]]
    assert announced == sorted(announced), announced


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
        _entry("append", "o-s", "x", b'{"v": 1}', reply="q-x"),
        # Refused by PostgreSQL: sequence 0 of h-s is taken.
        _entry("append", "h-s", "c", b'{"v": 2}', reply="q-c", expect="reject"),
        # Refused by the writer's own checks.
        _entry("append", "o-s", "bad", b'{"broken": ', reply="q-bad", expect="dead"),
        _entry("upsert", "h-s", "a", b'{"v": 3}', reply="q-a"),  # an existing row: fine
        _entry("append", "o-s", "y", b'{"v": 4}'),
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
    first = [_entry("append", "h-s", "a", b"1"), _entry("append", "h-s", "b", b"2")]
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
    first = [_entry("append", "h-s", "a", b"1"), _entry("append", "h-s", "b", b"2")]
    push(rsync, stream, first)
    w = writers.start()
    wait_applied(db_url, rsync, prefix, first[-1].id, 30, writers)
    w.signal(signal.SIGTERM)
    assert w.wait(15) == 0
    _break_head(db_url, "h-s")
    entries = _refused_batch()
    push(rsync, stream, entries)
    asyncio.run(_commit_unannounced(db_url, rsync, prefix))
    w = writers.start()
    wait_applied(db_url, rsync, prefix, entries[-1].id, 30, writers)
    assert w.count("re-publishing") == 1
    _check_refused_batch(rsync, db_url, prefix, first, entries)


# --------------------------------------------------------------------------
# 2. Two writers at once


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_two_writers_one_leads_the_other_takes_over(
    writers: Writers, rsync: redis_sync.Redis, redis_url: str, db_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    with seeded("two-writers") as rng:
        wl = Workload(rng, "t")
        part1, part2 = wl.entries(800), wl.entries(800)
    # A longer lease than elsewhere: on a busy machine a 1 s lease can lapse
    # legitimately, and then the other writer would lead for a moment.
    a = writers.start(ROWCAST_LEASE_MS="2000")
    b = writers.start(ROWCAST_LEASE_MS="2000")
    holder = wait_for("a lease holder", lambda: lease_holder(rsync, prefix), 15)
    by_pid = {a.pid: a, b.pid: b}
    leader = by_pid[holder_pid(holder)]  # type: ignore[index]
    standby = b if leader is a else a
    leader.wait_leading()

    sub = Subscriber(redis_url, keys.channel)
    sub.start()
    try:
        p1 = Producer(redis_url, keys.entries(SHARD), part1, burst=50, pause=0.05)
        p1.start()
        p1.finish()
        wait_applied(db_url, rsync, prefix, part1[-1].id, 30, writers)
        assert standby.leading() == 0, standby.tail()
        assert holder_pid(lease_holder(rsync, prefix)) == leader.pid

        p2 = Producer(redis_url, keys.entries(SHARD), part2, burst=50, pause=0.05)
        p2.start()
        time.sleep(rng.uniform(0.1, 0.6))
        leader.signal(signal.SIGKILL)
        leader.wait(10)
        standby.wait_leading(timeout=15)
        assert holder_pid(lease_holder(rsync, prefix)) == standby.pid
        p2.finish()
        wait_applied(db_url, rsync, prefix, part2[-1].id, 30, writers)
    finally:
        sub.close()
    got = check_rows(db_url, part1 + part2)
    check_receipts(rsync, prefix, part1 + part2, got)
    backwards = check_published(rsync, prefix, got, sub.changes())
    print(f"P:{{N}}:rows going backwards (see the recovery test): {backwards[:5]}")


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


# --------------------------------------------------------------------------
# 5. A stale leader cannot commit


def _valid(entry_id: str, session: str, row: str, body: bytes) -> Valid:
    """An entry as the writer hands it to the store (built directly: the body
    may be one only PostgreSQL refuses)."""
    return Valid(entry_id.encode(), Entry("append", session, row, "user", body), {})


async def test_stale_fence_cannot_commit(db_url: str, prefix: str) -> None:
    stream = Keys(prefix).entries(SHARD)
    old = await Store.connect(db_url, stream, 1000)
    new = await Store.connect(db_url, stream, 1000)
    try:
        assert await old.claim(1) == (0, 0)
        assert await new.claim(2) == (0, 0)
        with pytest.raises(Fenced):
            await old.apply(1, (5, 0), (5, 0), [_valid("5-0", "f-s", "a", b"{}")])
        # Refused data takes the isolation path: still fenced.
        with pytest.raises(Fenced):
            await old.apply(1, (5, 0), (5, 0), [_valid("5-0", "f-s", "a", b"[1e1000000]")])
        with pytest.raises(Fenced):
            await old.claim(1)
        with psycopg.connect(db_url) as c:
            assert c.execute("SELECT count(*) FROM rowcast.rows").fetchone() == (0,)
            assert c.execute("SELECT count(*) FROM rowcast.sessions").fetchone() == (0,)
            assert c.execute(
                "SELECT fence, last_ms, last_seq FROM rowcast.offsets WHERE stream = %s", (stream,)
            ).fetchone() == (2, 0, 0)
        pieces, rejected = await new.apply(2, (5, 0), (5, 0), [_valid("5-0", "f-s", "a", b"{}")])
        assert [r.sequence for _, rs in pieces for r in rs] == [0] and not rejected
    finally:
        await old.close()
        await new.close()


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_paused_leader_steps_down(
    writers: Writers, rsync: redis_sync.Redis, redis_url: str, db_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    with seeded("sigstop") as rng:
        items = Workload(rng, "z").entries(2000)
        sub = Subscriber(redis_url, keys.channel)
        sub.start()
        try:
            a = writers.start()
            a.wait_leading()
            producer = Producer(redis_url, keys.entries(SHARD), items, burst=40, pause=0.06)
            producer.start()
            time.sleep(rng.uniform(0.2, 1.2))
            a.signal(signal.SIGSTOP)
            b = writers.start()
            b.wait_leading()  # only after a's lease ran out
            time.sleep(rng.uniform(0.2, 1.5))
            a.signal(signal.SIGCONT)
            pushed = producer.finish()
            wait_applied(db_url, rsync, prefix, pushed[-1].id, 60, writers)
        finally:
            sub.close()
    # The paused writer never leads again (whether it logged its stepping down
    # depends on where it was paused), and the lease stays with b.
    assert a.leading() == 1, a.tail()
    assert holder_pid(lease_holder(rsync, prefix)) == b.pid
    got = check_rows(db_url, pushed)
    check_receipts(rsync, prefix, pushed, got)
    backwards = check_published(rsync, prefix, got, sub.changes())
    print(f"P:{{N}}:rows going backwards (see the recovery test): {backwards[:5]}")


# --------------------------------------------------------------------------
# 7. SIGTERM


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_sigterm_finishes_the_batch_and_releases_the_lease(
    writers: Writers, rsync: redis_sync.Redis, redis_url: str, db_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    # A lease far longer than the wait below: the standby can only take over
    # in time if the stopping writer released it.
    lease = {"ROWCAST_LEASE_MS": "30000"}
    with seeded("sigterm") as rng:
        items = Workload(rng, "e").entries(1500)
        a = writers.start(**lease)
        a.wait_leading()
        b = writers.start(**lease)
        producer = Producer(redis_url, keys.entries(SHARD), items, burst=40, pause=0.05)
        producer.start()
        time.sleep(rng.uniform(0.3, 1.5))
        a.signal(signal.SIGTERM)
        assert a.wait(15) == 0, a.tail()
    assert holder_pid(lease_holder(rsync, prefix)) in (None, b.pid)
    b.wait_leading(timeout=15)
    # The batch in hand was committed and announced: nothing for b to redo.
    assert b.count("re-publishing") == 0, b.tail()
    pushed = producer.finish()
    wait_applied(db_url, rsync, prefix, pushed[-1].id, 60, writers)
    got = check_rows(db_url, pushed)
    check_receipts(rsync, prefix, pushed, got)
    assert not check_published(rsync, prefix, got, None)
