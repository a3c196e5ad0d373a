"""The maintenance jobs against real Redis and PostgreSQL."""

from __future__ import annotations

import logging
import time

import fakeredis
import orjson
import psycopg
import pytest
import redis
from rq import Queue, SimpleWorker

from rowcast.contract.keys import CONSUMER, GROUP, Keys
from rowcast.ops.admin.jobs import QUEUE, enqueue, execute
from rowcast.ops.admin.maintenance import JobConfig
from rowcast.producers import Producer, make_entry
from tests.integration.test_ops_support import (
    apply_rows,
    run_cli,
    running_writer,
    server_args,
    settings_for,
    snapshot,
    wait_applied,
)


def _set_offset(db_url: str, stream: str, entry_id: str) -> None:
    ms, seq = (int(x) for x in entry_id.split("-"))
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO rowcast.offsets (stream, last_ms, last_seq) VALUES (%s, %s, %s)"
            " ON CONFLICT (stream) DO UPDATE SET last_ms = %s, last_seq = %s",
            (stream, ms, seq, ms, seq),
        )


def _ids(r: redis.Redis, key: str) -> list[str]:
    return [i.decode() for i, _ in r.xrange(key)]


@pytest.mark.timeout(120)
async def test_trim_never_removes_an_entry_that_is_not_applied(
    redis_url: str, db_url: str, prefix: str, rsync: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings_for(redis_url, db_url, prefix)
    args = server_args(s)
    key = Keys(prefix).entries(0)
    producer = Producer.from_url(redis_url, prefix=prefix)
    try:
        async with running_writer(s):
            await producer.push_and_wait(
                [make_entry("append", "s", f"a{i:02d}", "user", {"i": i}) for i in range(30)],
                timeout=60,
            )
        # The writer is stopped: a backlog builds up, part of it delivered
        # but never applied (a writer that died in the middle of a batch).
        backlog = await producer.push_many(
            [make_entry("append", "s", f"b{i:02d}", "user", {"i": i}) for i in range(20)]
        )
        rsync.xreadgroup(GROUP, CONSUMER, {key: ">"}, count=5)
        monkeypatch.setenv("ROWCAST_ENTRIES_MAXLEN", "0")  # keep nothing it may drop
        code, out, err = run_cli(["jobs", "run", "trim-entries", "--json", *args])
        assert code == 0, err
        result = orjson.loads(out)
        assert result["shards"][0]["removed"] == 30
        assert result["shards"][0]["limited_by"] == "unapplied"
        assert _ids(rsync, key) == backlog
        # Twice is harmless.
        code, out, err = run_cli(["jobs", "run", "trim-entries", *args])
        assert code == 0 and "shard 0 -0" in out
        assert _ids(rsync, key) == backlog

        async with running_writer(s):
            await wait_applied(db_url, key, backlog[-1])
    finally:
        await producer.close()
    rows = snapshot(db_url)["rows"]
    assert len(rows) == 50
    assert sorted(r for _, r in rows) == [f"a{i:02d}" for i in range(30)] + [
        f"b{i:02d}" for i in range(20)
    ]
    code, out, _ = run_cli(["verify", *args])
    assert code == 0, out


def test_trim_bounds_retention_pending_and_offset(
    redis_url: str, db_url: str, prefix: str, rsync: redis.Redis
) -> None:
    """A hand-built stream: 40 entries, one every second ending a minute ago."""
    s = settings_for(redis_url, db_url, prefix)
    key = Keys(prefix).entries(0)
    now_ms = int(time.time() * 1000)
    ids = [
        rsync.xadd(key, {"n": str(i)}, id=f"{now_ms - 99_500 + 1000 * i}-0").decode()
        for i in range(40)
    ]
    rsync.xgroup_create(key, GROUP, id="0")
    rsync.xreadgroup(GROUP, CONSUMER, {key: ">"}, count=40)
    rsync.xack(key, GROUP, *ids[:35])

    def trim(**cfg: int | None) -> dict:
        return execute("trim-entries", s, JobConfig(**cfg))["shards"][0]  # type: ignore[arg-type]

    # Nothing applied yet: nothing goes, whatever the retention says.
    assert trim(entries_maxlen=0)["removed"] == 0
    _set_offset(db_url, key, ids[30])
    # Length retention: keep the newest 35.
    assert trim(entries_maxlen=35)["removed"] == 5
    assert _ids(rsync, key) == ids[5:]
    # Age retention (and no length limit): keep the last 80 s.
    assert trim(entries_maxlen=None, entries_max_age_ms=80_000)["removed"] == 15
    assert _ids(rsync, key) == ids[20:]
    # Everything may go... up to the applied offset (ids[30]).
    assert trim(entries_maxlen=0)["minid"] == f"{ids[30].split('-')[0]}-1"
    assert _ids(rsync, key) == ids[31:]
    # An entry applied but still pending (acknowledgement lost) stays too.
    _set_offset(db_url, key, ids[38])
    result = trim(entries_maxlen=0)
    assert result["minid"] == ids[35] and result["limited_by"] == "unapplied"
    assert _ids(rsync, key) == ids[35:]


def test_trim_rows_to_their_configured_length(
    redis_url: str, db_url: str, prefix: str, rsync: redis.Redis
) -> None:
    s = settings_for(redis_url, db_url, prefix, rows_maxlen=500)
    key = Keys(prefix).rows(0)
    pipe = rsync.pipeline(transaction=False)
    for i in range(3000):
        pipe.xadd(key, {"row": str(i)})
    pipe.execute()
    result = execute("trim-rows", s, JobConfig())
    assert result["shards"][0]["removed"] >= 2000
    # Approximate trimming removes whole nodes: between maxlen and maxlen + one node.
    assert 500 <= rsync.xlen(key) < 1000


@pytest.mark.timeout(60)
async def test_health_reports_an_absent_writer_and_stale_pending(
    redis_url: str,
    db_url: str,
    prefix: str,
    rsync: redis.Redis,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = settings_for(redis_url, db_url, prefix)
    args = server_args(s)
    key = Keys(prefix).entries(0)
    async with running_writer(s):
        producer = Producer.from_url(redis_url, prefix=prefix)
        try:
            await producer.append("s", "r", "user", {}, wait=True, timeout=30)
        finally:
            await producer.close()
        code, out, err = run_cli(["jobs", "run", "health", *args])
        assert code == 0 and "health: ok" in out, out + err
    for i in range(3):
        rsync.xadd(key, {"n": str(i)})
    rsync.xreadgroup(GROUP, CONSUMER, {key: ">"}, count=2)
    time.sleep(0.01)
    monkeypatch.setenv("ROWCAST_PENDING_STALE_MS", "1")
    with caplog.at_level(logging.WARNING, logger="rowcast.ops.admin.jobs"):
        code, out, err = run_cli(["jobs", "run", "health", "--json", *args])
    assert code == 1
    result = orjson.loads(out)
    shard = result["shards"][0]
    assert shard["writer"] == "absent"
    assert shard["lag"] == 1 and shard["pending"] == 2
    assert len(shard["stale_pending"]) == 2
    assert any("no writer holds the lease" in p for p in result["problems"])
    assert any("pending entries idle" in p for p in result["problems"])
    assert any("no writer holds the lease" in r.getMessage() for r in caplog.records)


def test_verify_job_records_its_result_for_status(
    redis_url: str, db_url: str, prefix: str, rsync: redis.Redis
) -> None:
    s = settings_for(redis_url, db_url, prefix)
    args = server_args(s)
    apply_rows(db_url, [("append", "s", f"r{i}", "{}") for i in range(5)])
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE rowcast.sessions SET next_sequence = 1")
    code, out, _ = run_cli(["jobs", "run", "verify", *args])
    assert code == 1 and "1 broken sessions" in out
    code, out, _ = run_cli(["status", "--json", *args])
    v = orjson.loads(out)["verify"]
    assert v["ok"] is False and v["violations"][0]["session"] == "s"
    code, out, _ = run_cli(["status", *args])
    assert "last verify: FAILED" in out

    # A run while another holds the lock is skipped.
    keys = Keys(prefix)
    rsync.set(keys.job_lock("verify"), "someone", px=10_000)
    assert execute("verify", s, JobConfig())["skipped"]
    rsync.delete(keys.job_lock("verify"))
    run_cli(["repair", *args])
    code, out, _ = run_cli(["jobs", "run", "trim-entries", "trim-rows", "verify", *args])
    assert code == 0, out
    assert "verify: ok (1 sessions, 5 rows)" in out
    code, out, _ = run_cli(["jobs", "run", *args])  # every job: health finds no writer
    assert code == 1 and "no writer holds the lease" in out
    assert orjson.loads(rsync.get(keys.verify_result()) or b"{}")["ok"] is True
    assert rsync.get(keys.job_lock("verify")) is None  # released


def test_an_rq_worker_runs_the_jobs(
    redis_url: str, db_url: str, prefix: str, rsync: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queue lives in a fake Redis (RQ's keys have no prefix of ours); the
    job itself reaches the real servers named by the worker's environment."""
    s = settings_for(redis_url, db_url, prefix)
    monkeypatch.setenv("ROWCAST_REDIS_URL", redis_url)
    monkeypatch.setenv("ROWCAST_DATABASE_URL", db_url)
    apply_rows(db_url, [("append", "s", "r", "{}")])
    fake = fakeredis.FakeRedis()
    job_id = enqueue(fake, QUEUE, "verify", s, JobConfig())
    queue = Queue(QUEUE, connection=fake)
    SimpleWorker([queue], connection=fake).work(burst=True)
    job = queue.fetch_job(job_id)
    assert job is not None and job.return_value() is not None
    assert job.return_value()["ok"] is True
    assert orjson.loads(rsync.get(Keys(prefix).verify_result()) or b"{}")["rows"] == 1
