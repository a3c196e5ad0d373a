"""rowcast.ops.embedded on its own: real Valkey and PostgreSQL from the pip packages, in a
temporary data dir, started, found, restarted with their data, stopped by PID."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

from rowcast.contract.errors import ConfigError
from rowcast.ops.embedded import servers as embedded


@pytest.fixture
def started() -> Iterator[list[embedded.Embedded]]:
    """Every Embedded a test starts is stopped afterwards, whatever happened."""
    out: list[embedded.Embedded] = []
    yield out
    for emb in out:
        emb.stop()


def _procs(emb: embedded.Embedded) -> list[psutil.Process]:
    return list(embedded.processes(emb))


def test_free_ports_are_never_the_default_ones() -> None:
    assert embedded.free_port(6379) not in (6379, 5432)
    assert embedded.free_port(5432) not in (6379, 5432)
    assert all(embedded.free_port() not in (6379, 5432) for _ in range(20))


def test_start_discover_lock_stop(tmp_path: Path, started: list[embedded.Embedded]) -> None:
    data = tmp_path / "data"
    assert embedded.discover(data) is None
    emb = embedded.start(data)
    started.append(emb)
    assert emb.redis is not None and emb.postgres is not None
    assert {emb.redis.port, emb.postgres.port}.isdisjoint({6379, 5432})
    assert embedded.discover(data) == (emb.redis.url, emb.postgres.url)
    r = redis.Redis.from_url(emb.redis.url)
    assert r.ping()
    r.close()
    with psycopg.connect(emb.postgres.url) as c:
        assert c.execute("SELECT current_database()").fetchone() == ("rowcast",)

    with pytest.raises(ConfigError, match="another `rowcast up`"):
        embedded.start(data)

    procs = _procs(emb)
    assert len(procs) >= 3  # valkey, postmaster and its helpers
    emb.stop()
    _, alive = psutil.wait_procs(procs, timeout=5)
    assert alive == []
    assert embedded.discover(data) is None
    state = json.loads((data / "embedded.json").read_text())
    assert state["redis"]["pid"] is None and state["postgres"]["pid"] is None


def test_data_survives_a_restart_on_the_same_ports(
    tmp_path: Path, started: list[embedded.Embedded]
) -> None:
    data = tmp_path / "data"
    emb = embedded.start(data)
    started.append(emb)
    assert emb.redis is not None and emb.postgres is not None
    ports = (emb.redis.port, emb.postgres.port)
    r = redis.Redis.from_url(emb.redis.url)
    r.xadd("s", {"a": "1"})
    r.close()
    with psycopg.connect(emb.postgres.url) as c:
        c.execute("CREATE TABLE kept (x int)")
        c.execute("INSERT INTO kept VALUES (42)")
    emb.stop()

    emb2 = embedded.start(data)
    started.append(emb2)
    assert emb2.redis is not None and emb2.postgres is not None
    assert (emb2.redis.port, emb2.postgres.port) == ports
    r = redis.Redis.from_url(emb2.redis.url)
    assert r.xlen("s") == 1
    r.close()
    with psycopg.connect(emb2.postgres.url) as c:
        assert c.execute("SELECT x FROM kept").fetchone() == (42,)


def test_a_stranger_with_a_recorded_pid_is_neither_adopted_nor_killed(
    tmp_path: Path, started: list[embedded.Embedded]
) -> None:
    """PIDs get reused: a state file naming a live process that is not our server."""
    data = tmp_path / "data"
    data.mkdir()
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (data / "embedded.json").write_text(
            json.dumps(
                {
                    "version": 1,
                    "redis": {"pid": stranger.pid, "port": 1},
                    "postgres": {"pid": stranger.pid, "port": 2},
                }
            )
        )
        emb = embedded.start(data)
        started.append(emb)
        assert emb.redis is not None and emb.postgres is not None
        assert not emb.redis.adopted and not emb.postgres.adopted
        assert stranger.pid not in emb.pids
        emb.stop()
        assert stranger.poll() is None  # untouched
    finally:
        stranger.kill()
        stranger.wait()


def test_servers_left_by_a_crash_are_adopted(
    tmp_path: Path, started: list[embedded.Embedded]
) -> None:
    data = tmp_path / "data"
    code = (
        "import os, sys; from rowcast.ops.embedded import servers;"
        " e = servers.start(sys.argv[1]);"
        " print(*e.pids, flush=True); os._exit(9)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(data)], capture_output=True, text=True, timeout=120
    )
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2, out.stderr
    left = [psutil.Process(p) for p in pids]
    try:
        emb = embedded.start(data)
        started.append(emb)
        assert emb.redis is not None and emb.postgres is not None
        assert emb.redis.adopted and emb.postgres.adopted
        assert sorted(emb.pids) == sorted(pids)
        emb.stop()
        _, alive = psutil.wait_procs(left, timeout=5)
        assert alive == []
    finally:
        for p in left:
            if p.is_running():
                p.kill()
