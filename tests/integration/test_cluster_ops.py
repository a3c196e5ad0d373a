"""Commands against a cluster named wrongly or moving under them: exact reports,
never a silent zero or an "unexpected error"; and the jobs' cluster rules."""

from __future__ import annotations

import orjson
import pytest

from rowcast.contract.keys import Keys, shard_of
from rowcast.producers.producer import Producer, make_entry
from tests.integration.cluster import LocalCluster
from tests.integration.cluster_pipeline import (
    SHARDS,
    cluster_client,
    cluster_fixture,  # noqa: F401 - the cluster fixture
    cprefix_fixture,  # noqa: F401 - the cprefix fixture
    rowcast,
    rowcast_env,
)


def lines_for(sessions: list[str]) -> bytes:
    return b"".join(
        orjson.dumps({"op": "append", "session": s, "row": "r", "kind": "user", "body": {}}) + b"\n"
        for s in sessions
    )


def one_node_url(cluster: LocalCluster) -> tuple[str, int]:
    port = cluster.master_ports()[0]
    return f"redis://127.0.0.1:{port}/0", port


@pytest.mark.timeout(120)
def test_produce_to_one_node_of_a_cluster_reports_each_line(cluster, cprefix, db_url):
    url, port = one_node_url(cluster)
    keys = Keys(cprefix)
    sessions = [f"m-{i}" for i in range(12)]
    here = [s for s in sessions if cluster.node_for_key(keys.entries(shard_of(s, SHARDS))) == port]
    assert here and len(here) < len(sessions)
    out = rowcast(rowcast_env(url, db_url, cprefix), "produce", stdin=lines_for(sessions))
    assert out.returncode == 2
    err = out.stderr.decode().splitlines()
    not_queued = {int(line.split()[2][:-1]) for line in err if ": not queued" in line}
    want = {i + 1 for i, s in enumerate(sessions) if s not in here}
    assert not_queued == want, err
    assert all("MOVED" in line and "redis+cluster://" in line for line in err[:-1]), err
    assert err[-1].startswith(f"rowcast: {len(want)} of 12 entries of lines 1..12 not queued")
    # Exactly the lines not reported are stored, each once.
    r = cluster_client(cluster.url)
    try:
        stored = [
            f[b"session"].decode() for n in range(SHARDS) for _, f in r.xrange(keys.entries(n))
        ]
    finally:
        r.close()
    assert sorted(stored) == sorted(here)


@pytest.mark.timeout(120)
def test_commands_on_one_node_of_a_cluster_say_so(cluster, cprefix, db_url):
    url, _ = one_node_url(cluster)
    env = rowcast_env(url, db_url, cprefix)
    r = cluster_client(cluster.url)
    try:
        for n in range(SHARDS):  # a stream in every shard, on every node
            r.xadd(Keys(cprefix).entries(n), {"op": "append"})
    finally:
        r.close()
    for args in (("replay", "--from", "0"), ("status",), ("dlq", "list")):
        out = rowcast(env, *args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        err = out.stderr.decode().strip().splitlines()
        assert len(err) == 1 and "MOVED" in err[0] and "redis+cluster://" in err[0], (args, err)
        # replay re-fed the shards on this node and stopped at the first
        # shard on another one: what it printed is what it did, no silent zero.
        assert "re-fed 0 entries" not in out.stdout.decode()


@pytest.mark.timeout(120)
def test_writer_and_broadcaster_refuse_one_node_of_a_cluster(cluster, cprefix, db_url):
    # Through one node they would serve only that node's shards and retry the
    # others for ever: refused at start, with the URL form that works.
    url, _ = one_node_url(cluster)
    env = rowcast_env(url, db_url, cprefix)
    for args in (("writer",), ("broadcaster", "--port", "0")):
        out = rowcast(env, *args, timeout=60)
        err = out.stderr.decode().strip().splitlines()
        assert out.returncode == 2, (args, out.stderr)
        assert len(err) == 1 and "redis+cluster://" in err[0], (args, err)


@pytest.mark.timeout(60)
def test_bad_redis_urls_are_configuration_errors(db_url):
    for url, why in (
        ("redis+cluster://", "host"),
        ("redis+cluster://127.0.0.1:notaport", "port"),
        ("redis+cluster://127.0.0.1:7000/3", "database 0"),
        ("http://127.0.0.1:6379", "scheme"),
        ("redis+cluster://127.0.0.1:1", "Redis"),  # nothing answers
    ):
        out = rowcast(rowcast_env(url, db_url, "cluster-bad"), "status")
        err = out.stderr.decode().strip().splitlines()
        assert out.returncode == 2, (url, out.stderr)
        assert len(err) == 1 and why in err[0], (url, err)


@pytest.mark.timeout(120)
def test_jobs_run_on_a_cluster_and_rq_needs_a_plain_redis(cluster, cprefix, db_url, redis_url):
    env = rowcast_env(cluster.url, db_url, cprefix)
    out = rowcast(env, "jobs", "run", "trim-entries", "trim-rows", "verify", "health", "--json")
    results = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert [x["job"] for x in results] == ["trim-entries", "trim-rows", "verify", "health"]
    assert all(x["ok"] for x in results[:3]), results
    assert len(results[3]["shards"]) == SHARDS
    assert out.returncode == (0 if results[3]["ok"] else 1), out.stderr

    for action in ("enqueue", "schedule"):
        out = rowcast(env, "jobs", action)
        err = out.stderr.decode().strip().splitlines()
        assert out.returncode == 2 and len(err) == 1, (action, out.stderr)
        assert "RQ does not support Redis Cluster" in err[0] and "--rq-url" in err[0]
    # With a plain Redis for the queue, enqueueing works beside a cluster.
    out = rowcast(env, "jobs", "enqueue", "health", "--rq-url", redis_url, "--queue", cprefix)
    assert out.returncode == 0 and b"enqueued health" in out.stdout, out.stderr


@pytest.mark.timeout(120)
@pytest.mark.parametrize("durable", [False, True])
async def test_a_producer_follows_a_slot_that_moved(cluster, cprefix, durable):
    """A client whose map is stale gets MOVED: redis-py follows it; every entry
    is stored once, on the new owner."""
    keys = Keys(cprefix)
    session = "moving"
    stream = keys.entries(shard_of(session, SHARDS))
    p = Producer.from_url(cluster.url, prefix=cprefix, shards=SHARDS, durable=durable)
    r = cluster_client(cluster.url)
    before = cluster.node_for_key(stream)
    try:
        await p.append(session, "r0", "user", {})  # the producer reads the map now
        dst = next(m for m in cluster.master_ports() if m != before)
        cluster.move_slot(r.keyslot(stream), dst)
        ids = await p.push_many(
            [make_entry("append", session, f"r{i}", "user", {}) for i in range(5)]
        )
        assert len(ids) == 5
        assert cluster.node_for_key(stream) == dst
        assert [f[b"row"] for _, f in r.xrange(stream)] == [b"r0"] + [
            f"r{i}".encode() for i in range(5)
        ]
    finally:
        await p.close()
        # Give the slot back: other tests expect the usual spread.
        if cluster.node_for_key(stream) != before:
            cluster.move_slot(r.keyslot(stream), before)
        r.close()
