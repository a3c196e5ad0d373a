"""jobs: trim arithmetic, writer states, configuration, the CLI and the scheduler."""

from __future__ import annotations

import threading
from dataclasses import replace

import fakeredis
import pytest
from rq import Queue

from rowcast.contract.errors import ConfigError
from rowcast.contract.streamid import MAX_PART
from rowcast.ops import cli
from rowcast.ops.admin.health import ShardHealth, WriterState, writer_state
from rowcast.ops.admin.jobs import QUEUE, _names, options, schedule, summary
from rowcast.ops.admin.maintenance import JobConfig, age_cut, next_id, safe_minid, trim_target
from rowcast.ops.settings import Settings


def test_next_id() -> None:
    assert next_id((5, 1)) == (5, 2)
    assert next_id((5, MAX_PART)) == (6, 0)


def test_safe_minid_is_the_lowest_bound() -> None:
    assert safe_minid(None, None, (9, 0)) is None  # nothing applied
    assert safe_minid((9, 0), None, None) is None  # no consumer group
    assert safe_minid((9, 0), None, (12, 0)) == (9, 1)  # applied bounds
    assert safe_minid((9, 0), (4, 0), (12, 0)) == (4, 0)  # applied but still pending
    # applied ahead of delivery (never expected): the delivery bounds
    assert safe_minid((20, 0), None, (12, 0)) == (12, 1)


def test_trim_target() -> None:
    assert trim_target((9, 1), [None, None]) is None  # no retention asked
    assert trim_target(None, [(5, 0)]) is None
    assert trim_target((9, 1), [(5, 0)]) == (5, 0)
    assert trim_target((9, 1), [(5, 0), (7, 0)]) == (7, 0)  # outside either bound goes
    assert trim_target((9, 1), [(50, 0)]) == (9, 1)
    assert age_cut(10_000, None) is None
    assert age_cut(10_000, 4_000) == (6_000, 0)
    assert age_cut(1_000, 4_000) == (0, 0)


def test_writer_state() -> None:
    assert writer_state(None, 0, None, None, 1000) == "absent"
    assert writer_state("h", 0, None, 99_999, 1000) == "ok"  # idle, nothing waiting
    assert writer_state("h", 5, 500, 99_999, 1000) == "ok"  # backlog is fresh
    assert writer_state("h", 5, 5000, 200, 1000) == "ok"  # still moving
    assert writer_state("h", 5, 5000, 5000, 1000) == "stuck"
    assert writer_state("h", 5, 5000, None, 1000) == "stuck"


def test_health_problems() -> None:
    shard = ShardHealth(1, 5, "h", WriterState.OK, 9000, 8000, [])
    assert shard.problems(100) == []
    assert replace(shard, writer=WriterState.ABSENT).problems(100) == [
        "shard 1: no writer holds the lease (5 entries waiting)"
    ]
    (stuck,) = replace(shard, writer=WriterState.STUCK).problems(100)
    assert "writer h is stuck: 5 entries waiting, the oldest for 9000 ms" in stuck
    (stale,) = replace(shard, stale_pending=["1-0"] * 10).problems(100)
    assert stale == "shard 1: 10+ pending entries idle over 100 ms (first 1-0)"


def test_config_from_env() -> None:
    c = JobConfig.from_env({})
    assert c == JobConfig()
    c = JobConfig.from_env(
        {"ROWCAST_ENTRIES_MAXLEN": "0", "ROWCAST_ENTRIES_MAX_AGE_MS": "60000"},
        pending_stale_ms=5,
    )
    assert (c.entries_maxlen, c.entries_max_age_ms, c.pending_stale_ms) == (0, 60000, 5)
    with pytest.raises(ConfigError, match="ROWCAST_ENTRIES_MAXLEN"):
        JobConfig.from_env({"ROWCAST_ENTRIES_MAXLEN": "lots"})
    with pytest.raises(ConfigError, match="ROWCAST_PENDING_STALE_MS"):
        JobConfig.from_env({"ROWCAST_PENDING_STALE_MS": "0"})


def test_job_names_and_summaries() -> None:
    assert _names([]) == ["trim-entries", "trim-rows", "health", "verify"]
    assert _names(["health", "health"]) == ["health"]
    with pytest.raises(ConfigError, match="unknown job"):
        _names(["vacuum"])
    assert summary({"job": "x", "skipped": "locked"}) == "x: skipped (locked)"
    assert summary({"job": "health", "ok": False, "problems": ["a", "b"]}) == "health: a; b"
    assert (
        summary({"job": "trim-entries", "shards": [{"shard": 0, "removed": 3, "minid": "5-0"}]})
        == "trim-entries: shard 0 -3 (kept from 5-0)"
    )


def test_cli_parses_the_jobs_command() -> None:
    args, _ = cli.parse_args(["jobs", "schedule", "--every", "5", "--queue", "q"])
    assert (args.command, args.action, args.every, args.verify_every, args.queue) == (
        "jobs",
        "schedule",
        5.0,
        3600.0,
        "q",
    )
    args, _ = cli.parse_args(["jobs", "run", "health", "verify", "--json"])
    assert args.names == ["health", "verify"] and args.json


def test_schedule_enqueues_each_job_every_period() -> None:
    fake = fakeredis.FakeRedis()
    settings = Settings.from_env({}, prefix="p", shards=3)
    stop = threading.Event()
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    periods = {"health": 0.1, "verify": 100.0}
    count = schedule(fake, QUEUE, settings, JobConfig(), periods, stop)
    timer.join()
    jobs = Queue(QUEUE, connection=fake).get_jobs()
    assert count == len(jobs) >= 3
    names = [j.args[0] for j in jobs]
    assert names.count("verify") == 1 and names.count("health") == count - 1
    # a queued job carries settings but never a server URL
    assert jobs[0].kwargs == options(settings, JobConfig())
    assert jobs[0].kwargs["prefix"] == "p" and jobs[0].kwargs["shards"] == 3
    assert not any("url" in k for k in jobs[0].kwargs)
