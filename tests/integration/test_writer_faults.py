"""Fault tests of the write path, around leadership: real ``rowcast writer``
processes killed at random points, run two at once, paused past their lease,
stopped with SIGTERM, or fenced out, while a known workload is produced;
afterwards PostgreSQL and Redis are compared with what was produced (nothing
lost, nothing duplicated, order kept). The faults of the servers around the
writer (and poison isolation) are in test_writer_faults_servers.py.

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

import psycopg
import pytest
import redis as redis_sync

from rowcast.contract.entry import Entry
from rowcast.contract.errors import Fenced
from rowcast.contract.keys import Keys
from rowcast.writer.batch import Valid
from rowcast.writer.store import Store
from tests.integration.checks import (
    check_dead,
    check_published,
    check_receipts,
    check_rows,
    refused_by_postgres,
    wait_applied,
)
from tests.integration.processes import (
    SHARD,
    Writers,
    commit_unannounced,
    holder_pid,
    lease_holder,
    wait_for,
)
from tests.integration.workload import Producer, Pushed, Subscriber, Workload, entry, push, seeded


@pytest.fixture
def writers(tmp_path: Path, redis_url: str, db_url: str, prefix: str) -> Iterator[Writers]:
    w = Writers(tmp_path, redis_url, db_url, prefix)
    yield w
    w.reap()


def _mix(rng: random.Random, items: list[Pushed], extra: list[Pushed]) -> list[Pushed]:
    """``extra`` spread at random places of ``items``, each after every entry
    of its row (a later upsert merged over a refused body is another case:
    test_refused_body_under_a_later_upsert_of_its_row_is_dead_lettered, in
    test_writer_faults_servers.py)."""
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
                # restart, see test_restart_after_a_kill_inside_the_migration_lock
                # in test_writer_faults_servers.py.)
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
def test_recovery_never_publishes_a_session_backwards(
    writers: Writers, rsync: redis_sync.Redis, redis_url: str, db_url: str, prefix: str
) -> None:
    stream = Keys(prefix).entries(SHARD)
    first = [entry("append", "b-s", "a", b"1"), entry("append", "b-s", "b", b"2")]
    push(rsync, stream, first)
    w = writers.start()
    wait_applied(db_url, rsync, prefix, first[-1].id, 30, writers)
    w.signal(signal.SIGTERM)
    assert w.wait(15) == 0
    # Changes 1 (a) and 2 (b) are out. Then b is replaced (change 3) and a
    # producer's retry of a arrives (no change); the writer dies after COMMIT.
    second = [entry("upsert", "b-s", "b", b"3"), entry("append", "b-s", "a", b"1")]
    push(rsync, stream, second)
    asyncio.run(commit_unannounced(db_url, rsync, prefix))
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


async def test_a_claim_must_be_above_every_fence_seen(db_url: str, prefix: str) -> None:
    """After Redis restarts without persistence its counter starts again, so a
    new leader may draw the number the old one holds: that claim is refused
    (with PostgreSQL's number, to climb past), or two holders of one number
    could both commit."""
    stream = Keys(prefix).entries(SHARD)
    old = await Store.connect(db_url, stream, 1000)
    new = await Store.connect(db_url, stream, 1000)
    try:
        await old.claim(1)
        with pytest.raises(Fenced) as refused:
            await new.claim(1, "a-new-stream")
        assert refused.value.held == 1
        await new.claim(2, "a-new-stream")
        with pytest.raises(Fenced):
            await old.apply(1, (5, 0), (5, 0), [_valid("5-0", "f-s", "a", b"{}")])
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
