"""Shared pieces of the Redis Cluster tests (no tests here): the cluster and a
key prefix per test, ``rowcast`` commands run against the cluster, pushing a
workload to the shards' streams, and waiting until the writers applied it."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from redis.cluster import RedisCluster

from rowcast.contract.connection import sync_client
from rowcast.contract.keys import GROUP, Keys, shard_of
from rowcast.contract.streamid import parse as parse_id
from tests.integration.cluster import LocalCluster, shared
from tests.integration.processes import ROWCAST, Writers, wait_for
from tests.integration.workload import Pushed

SHARDS = 8


@pytest.fixture(name="cluster")
def cluster_fixture() -> LocalCluster:
    """The shared cluster (import this beside the tests; request ``cluster``)."""
    return shared()


@pytest.fixture(name="cprefix")
def cprefix_fixture(cluster: LocalCluster) -> Iterator[str]:
    """A key prefix of this test's own on the cluster; its keys go afterwards."""
    p = f"cluster{secrets.token_hex(4)}"
    yield p
    r = cluster_client(cluster.url)
    try:
        for key in r.scan_iter(match=f"{p}:*", count=1000):
            r.delete(key)
    finally:
        r.close()


def cluster_client(url: str) -> RedisCluster:
    r = sync_client(url)
    assert isinstance(r, RedisCluster)
    return r


def rotated(cluster: LocalCluster, first: int) -> str:
    """The cluster's URL starting from another node (a client bootstraps from
    the first node that answers)."""
    nodes = cluster.startup_nodes
    nodes = nodes[first:] + nodes[:first]
    return "redis+cluster://" + ",".join(f"{h}:{p}" for h, p in nodes)


def rowcast_env(url: str, db_url: str, prefix: str, shards: int = SHARDS) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("ROWCAST_")},
        "ROWCAST_REDIS_URL": url,
        "ROWCAST_DATABASE_URL": db_url,
        "ROWCAST_PREFIX": prefix,
        "ROWCAST_SHARDS": str(shards),
    }


def rowcast(env: dict[str, str], *args: str, stdin: bytes = b"", timeout: float = 90) -> Any:
    return subprocess.run(
        [ROWCAST, *args], env=env, input=stdin, capture_output=True, timeout=timeout
    )


def push(r: RedisCluster, prefix: str, items: list[Pushed], shards: int = SHARDS) -> None:
    """XADD each entry to its session's shard (one pipeline: redis-py splits
    it by node); records each entry's id."""
    keys = Keys(prefix)
    pipe = r.pipeline(transaction=False)
    for it in items:
        pipe.xadd(keys.entries(shard_of(it.key[0], shards)), it.fields)  # type: ignore[arg-type]
    for it, raw in zip(items, pipe.execute(), strict=True):
        it.id = raw.decode()


def last_ids(items: list[Pushed], shards: int = SHARDS) -> dict[int, str]:
    out: dict[int, str] = {}
    for it in items:
        n = shard_of(it.key[0], shards)
        if n not in out or parse_id(it.id) > parse_id(out[n]):
            out[n] = it.id
    return out


def wait_applied(
    db_url: str,
    r: RedisCluster,
    prefix: str,
    want: dict[int, str],
    timeout: float,
    writers: Writers | None = None,
) -> None:
    """Until PostgreSQL's offset of every shard reached ``want[shard]`` and no
    entry is pending (every batch's Redis side effects went out)."""
    keys = Keys(prefix)

    def done() -> bool:
        if writers and all(w.proc.poll() is not None for w in writers.started):
            raise AssertionError(f"every writer exited\n{writers.logs()}")
        with psycopg.connect(db_url) as c:
            rows = c.execute("SELECT stream, last_ms, last_seq FROM rowcast.offsets").fetchall()
        offsets = {s: (ms, seq) for s, ms, seq in rows}
        for n, last in want.items():
            got = offsets.get(keys.entries(n))
            if got is None or got < parse_id(last):
                return False
            if int(r.xpending(keys.entries(n), GROUP)["pending"]):
                return False
        return True

    try:
        wait_for("the writers to apply every entry", done, timeout, every=0.2)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{writers.logs() if writers else ''}") from None
