"""A fleet of real ``rowcast writer`` processes on one Redis: the shards
spread over the live processes (⌊S/W⌋ or ⌈S/W⌉ each), follow a kill and a
restart, and one shard's trouble stays in that shard. Throughout, the data
equals the model and no shard has two leaders at one fence.

``rowcast status --json`` is sampled all along (the operator's view); the
writers' logs give every leadership with its fencing number.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import redis as redis_sync

from rowcast.contract.keys import GROUP, Keys, shard_of
from tests.integration.checks import check_rows
from tests.integration.processes import ROWCAST, WriterProcess, Writers, holder_pid, wait_for
from tests.integration.workload import Pushed, Workload, seeded

SHARDS = 6
LEASE_MS = 1000


@pytest.fixture
def writers(tmp_path: Path, redis_url: str, db_url: str, prefix: str) -> Iterator[Writers]:
    w = Writers(tmp_path, redis_url, db_url, prefix)
    yield w
    w.reap()


class Producer(threading.Thread):
    """Pushes the workload to each entry's own shard, a burst at a time,
    until told to stop."""

    def __init__(self, url: str, prefix: str, wl: Workload, burst: int, pause: float) -> None:
        super().__init__(daemon=True)
        self.url, self.keys, self.wl = url, Keys(prefix), wl
        self.burst, self.pause = burst, pause
        self.pushed: list[Pushed] = []
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        r = redis_sync.Redis.from_url(self.url)
        try:
            while not self.halt.is_set():
                chunk = self.wl.entries(self.burst)
                pipe = r.pipeline(transaction=False)
                for it in chunk:
                    stream = self.keys.entries(shard_of(it.key[0], SHARDS))
                    pipe.xadd(stream, it.fields)  # type: ignore[arg-type]
                for it, raw in zip(chunk, pipe.execute(), strict=True):
                    it.id = raw.decode()
                self.pushed += chunk
                time.sleep(self.pause)
        except Exception as e:
            self.error = e
        finally:
            r.close()

    def finish(self) -> list[Pushed]:
        self.halt.set()
        self.join(30)
        if self.error is not None:
            raise self.error
        return self.pushed


class StatusSampler(threading.Thread):
    """Runs ``rowcast status --json`` over and over, keeping every answer."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.env = env
        self.samples: list[tuple[float, dict[str, Any]]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            got = subprocess.run(
                [ROWCAST, "status", "--json"], env=self.env, capture_output=True, timeout=60
            )
            if got.returncode == 0:
                self.samples.append((time.monotonic(), orjson.loads(got.stdout)))

    def close(self) -> list[tuple[float, dict[str, Any]]]:
        self.halt.set()
        self.join(90)
        return self.samples


def lead_counts(holders: list[str | None]) -> Counter[int | None]:
    """pid -> how many shards it holds."""
    return Counter(holder_pid(h) for h in holders)


def status(env: dict[str, str]) -> dict[str, Any]:
    got = subprocess.run([ROWCAST, "status", "--json"], env=env, capture_output=True, timeout=60)
    assert got.returncode == 0, got.stderr
    doc: dict[str, Any] = orjson.loads(got.stdout)
    return doc


def wait_spread(
    r: redis_sync.Redis, env: dict[str, str], pids: list[int], want: list[int], what: str
) -> float:
    """Until exactly these processes lead ``want`` shards each (sorted), read
    from the leases; then ``rowcast status --json`` must say the same.
    Returns how long it took."""
    keys = Keys(env["ROWCAST_PREFIX"])
    start = time.monotonic()

    def settled() -> bool:
        raw: Any = r.mget([keys.lease(n) for n in range(SHARDS)])
        counts = lead_counts([x.decode() if x else None for x in raw])
        return set(counts) == set(pids) and sorted(counts.values()) == want

    wait_for(what, settled, 60, every=0.02)
    took = time.monotonic() - start
    doc = status(env)
    counts = lead_counts([s["lease"]["holder"] for s in doc["shards"]])
    assert set(counts) == set(pids) and sorted(counts.values()) == want, doc
    assert sorted(holder_pid(w["holder"]) for w in doc["writers"]) == sorted(pids), doc
    return took


def offsets(db_url: str) -> dict[str, tuple[int, int, int]]:
    with psycopg.connect(db_url) as c:
        return {s: (ms, seq, f) for s, ms, seq, f in c.execute(
            "SELECT stream, last_ms, last_seq, fence FROM rowcast.offsets")}  # fmt: skip


def wait_all_applied(
    db_url: str, r: redis_sync.Redis, prefix: str, pushed: list[Pushed], writers: Writers
) -> None:
    keys = Keys(prefix)
    last: dict[int, tuple[int, int]] = {}
    for p in pushed:
        n = shard_of(p.key[0], SHARDS)
        ms, seq = p.id.split("-")
        last[n] = max(last.get(n, (0, 0)), (int(ms), int(seq)))

    def done() -> bool:
        if all(w.proc.poll() is not None for w in writers.started):
            raise AssertionError(f"every writer exited\n{writers.logs()}")
        got = offsets(db_url)
        for n, want in last.items():
            o = got.get(keys.entries(n))
            if o is None or (o[0], o[1]) < want:
                return False
            if int(r.xpending(keys.entries(n), GROUP)["pending"]) != 0:
                return False
        return True

    try:
        wait_for("every shard to be applied", done, 90, every=0.2)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{writers.logs()}") from None


def leaderships(ws: list[WriterProcess]) -> list[tuple[int, int, int]]:
    """(shard, fence, pid) of every time a process started leading a shard."""
    out = []
    for w in ws:
        for line in w.lines():
            msg = str(line.get("msg", ""))
            if "leading with fence" in msg:
                shard = int(msg.split(":")[0].split()[1])
                fence = int(msg.split("leading with fence ")[1].split(",")[0])
                out.append((shard, fence, w.pid))
    return out


def check_never_two_leaders(
    samples: list[tuple[float, dict[str, Any]]], ws: list[WriterProcess]
) -> None:
    """No fencing number was given to two leaderships of one shard, and in
    every status sample each shard's fence only grows, a new holder always
    with a higher one."""
    led = leaderships(ws)
    by_fence = Counter((s, f) for s, f, _ in led)
    twice = [k for k, n in by_fence.items() if n > 1]
    assert not twice, f"two leaderships with one fence (shard, fence): {twice}"
    last: dict[int, tuple[str | None, int]] = {}
    for _, doc in samples:
        for s in doc["shards"]:
            holder, fence = s["lease"]["holder"], s["lease"]["fence"] or 0
            prev = last.get(s["shard"])
            if prev is not None:
                assert fence >= prev[1], f"shard {s['shard']}: fence went back {prev} -> {fence}"
                if holder is not None and prev[0] is not None and holder != prev[0]:
                    assert fence > prev[1], f"shard {s['shard']}: new holder, same fence"
            last[s["shard"]] = (holder, fence)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_six_shards_spread_over_three_writers_follow_a_kill_and_a_restart(
    writers: Writers, rsync: redis_sync.Redis, redis_url: str, db_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    env = {**writers.env, "ROWCAST_SHARDS": str(SHARDS), "ROWCAST_LEASE_MS": str(LEASE_MS)}
    writers.env = env
    sampler = StatusSampler(env)
    with seeded("fleet") as rng:
        producer = Producer(redis_url, prefix, Workload(rng, "f", sessions=60), 30, 0.05)
        a, b, c = writers.start(), writers.start(), writers.start()
        sampler.start()
        producer.start()
        try:
            spread = wait_spread(rsync, env, [a.pid, b.pid, c.pid], [2, 2, 2], "2/2/2")
            victim = rng.choice([a, b, c])
            survivors = [w for w in (a, b, c) if w is not victim]
            doc = status(env)
            orphans = [
                s["shard"] for s in doc["shards"] if holder_pid(s["lease"]["holder"]) == victim.pid
            ]
            before = offsets(db_url)
            killed_at = time.monotonic()
            victim.signal(signal.SIGKILL)
            victim.wait(10)

            # Takeover: each orphan's first commit by a new holder (a higher fence).
            def taken_over() -> bool:
                got = offsets(db_url)
                return all(
                    (o := got.get(keys.entries(n))) is not None
                    and o[2] > before[keys.entries(n)][2]
                    and o[:2] > before[keys.entries(n)][:2]
                    for n in orphans
                )

            wait_for("the orphaned shards to commit again", taken_over, 60, every=0.02)
            takeover = time.monotonic() - killed_at
            after_kill = wait_spread(rsync, env, [w.pid for w in survivors], [3, 3], "3/3")
            after_kill += takeover
            d = writers.start()
            started_at = time.monotonic()

            def joined() -> bool:
                members: Any = rsync.zrange(keys.writers(), 0, -1)
                return any(holder_pid(m.decode()) == d.pid for m in members)

            wait_for("the new writer to join", joined, 60, every=0.02)
            start_up = time.monotonic() - started_at
            rejoin = wait_spread(
                rsync, env, [*(w.pid for w in survivors), d.pid], [2, 2, 2], "2/2/2 again"
            )
            pushed = producer.finish()
            wait_all_applied(db_url, rsync, prefix, pushed, writers)
        finally:
            with contextlib.suppress(Exception):
                producer.finish()
            samples = sampler.close()
    check_rows(db_url, pushed)
    check_never_two_leaders(samples, writers.started)
    # A clean stop hands everything back and leaves the fleet.
    for w in (*survivors, d):
        w.signal(signal.SIGTERM)
    for w in (*survivors, d):
        assert w.wait(30) == 0, w.tail()
    assert rsync.zcard(keys.writers()) == 0
    assert all(rsync.get(keys.lease(n)) is None for n in range(SHARDS))
    print(
        f"{len(pushed)} entries over {SHARDS} shards, {len(samples)} status samples; "
        f"2/2/2 after {spread:.1f}s; SIGKILL -> first commit by the new holders "
        f"{takeover:.2f}s (lease {LEASE_MS} ms); 3/3 {after_kill:.1f}s after the kill; "
        f"2/2/2 again {rejoin:.1f}s after the new writer joined ({start_up:.1f}s to start)"
    )


@pytest.mark.timeout(180)
def test_one_shard_failing_leaves_the_others_committing_then_recovers(
    writers: Writers, rsync: redis_sync.Redis, redis_url: str, db_url: str, prefix: str
) -> None:
    """A poisoned dependency, no test hook: shard 1's record of its last lease
    acquisition is a list, so every attempt to lead it fails with an error
    the writer does not expect (WRONGTYPE). The other shards go on; the process stays up and says so
    loudly; status and health name the unserved shard; once the key is
    repaired the shard recovers and nothing was lost."""
    keys = Keys(prefix)
    shards = 3
    env = {**writers.env, "ROWCAST_SHARDS": str(shards)}
    rsync.rpush(keys.acquired(1), "not a record")
    with seeded("one-shard") as rng:
        wl = Workload(rng, "o", sessions=30)
        items = wl.entries(600)
    by_shard: dict[int, list[Pushed]] = {}
    for it in items:
        by_shard.setdefault(shard_of(it.key[0], shards), []).append(it)
    assert set(by_shard) == {0, 1, 2}
    w = WriterProcess(env, writers.tmp / "writer-one-shard.log")
    writers.started.append(w)

    def push_all() -> None:
        pipe = rsync.pipeline(transaction=False)
        for it in items:
            pipe.xadd(keys.entries(shard_of(it.key[0], shards)), it.fields)  # type: ignore[arg-type]
        for it, raw in zip(items, pipe.execute(), strict=True):
            it.id = raw.decode()

    push_all()

    def applied(n: int) -> bool:
        last = max(tuple(int(x) for x in p.id.split("-")) for p in by_shard[n])
        o = offsets(db_url).get(keys.entries(n))
        return o is not None and (o[0], o[1]) >= last

    wait_for("shards 0 and 2 to commit", lambda: applied(0) and applied(2), 60)
    wait_for("a loud error for shard 1", lambda: w.count("unexpected error") >= 2, 30)
    assert w.proc.poll() is None, w.tail()
    assert not applied(1)
    loud = [x for x in w.lines() if "unexpected error" in str(x.get("msg"))]
    assert all(x.get("shard") == 1 and x.get("level") == "error" for x in loud), loud[:2]

    cli = {**env}
    doc = status(cli)
    assert [s["lease"]["holder"] is None for s in doc["shards"]] == [False, True, False]
    assert [x["holder"] for x in doc["writers"]] == [doc["shards"][0]["lease"]["holder"]]
    assert doc["writers"][0]["shards"] == [0, 2]
    text = subprocess.run([ROWCAST, "status"], env=cli, capture_output=True, timeout=60)
    assert "no writer leads shard 1" in text.stdout.decode()
    health = subprocess.run(
        [ROWCAST, "jobs", "run", "health"], env=cli, capture_output=True, timeout=60
    )
    assert health.returncode == 1
    assert b"shard 1: no writer holds the lease" in health.stdout
    assert b"although 1 writers are alive" in health.stdout

    rsync.delete(keys.acquired(1))  # repaired: the shard's loop picks up by itself
    wait_for("shard 1 to recover", lambda: applied(1), 60)
    assert w.proc.poll() is None
    check_rows(db_url, items)
