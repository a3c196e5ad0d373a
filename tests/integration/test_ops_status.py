"""`rowcast status` against a state built by hand in real Redis and PostgreSQL."""

from __future__ import annotations

import orjson
import psycopg
import redis

from rowcast.contract.keys import CONSUMER, GROUP, Keys
from tests.integration.test_ops_support import run_cli, server_args, settings_for


def test_status_json_reflects_a_known_state(
    redis_url: str, db_url: str, prefix: str, rsync: redis.Redis
) -> None:
    s = settings_for(redis_url, db_url, prefix, shards=2)
    k = Keys(prefix)
    entries = k.entries(0)
    ids = [rsync.xadd(entries, {"op": "append", "n": str(i)}).decode() for i in range(7)]
    rsync.xgroup_create(entries, GROUP, id="0")
    # 3 delivered to the writer's consumer, 1 of them acknowledged: 2 pending, 4 unread.
    rsync.xreadgroup(GROUP, CONSUMER, {entries: ">"}, count=3)
    rsync.xack(entries, GROUP, ids[0])
    for i in range(2):
        rsync.xadd(k.dead(0), {"op": "nope", "error": f"bad {i}", "source": ids[i]})
    rsync.xadd(k.dead(1), {"op": "nope", "error": "bad", "source": "1-1"})
    for i in range(5):
        rsync.xadd(k.rows(0), {"session": "s", "row": str(i)})
    rsync.set(k.lease(0), "host:42:abcd", px=60_000)
    rsync.set(k.fence(0), 7)
    rsync.set(k.broadcaster("b1"), orjson.dumps({"connections": 3, "subscriptions": 5}), ex=60)
    ms, seq = ids[0].split("-")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO rowcast.offsets (stream, last_ms, last_seq, fence) VALUES (%s, %s, %s, 7)",
            (entries, int(ms), int(seq)),
        )

    code, out, err = run_cli(["status", "--json", *server_args(s)])
    assert code == 0, err
    doc = orjson.loads(out)
    s0, s1 = doc["shards"]
    assert s0["shard"] == 0
    assert s0["length"] == 7
    assert s0["lag"] == 4
    assert s0["pending"] == 2
    assert s0["oldest_pending_age_ms"] is not None and s0["oldest_pending_age_ms"] >= 0
    assert s0["last_applied"] == ids[0]
    assert s0["last_delivered"] == ids[2]
    assert s0["dead"] == 2
    assert s0["rows_length"] == 5
    assert s0["lease"] == {"holder": "host:42:abcd", "fence": 7}
    # Shard 1 has never seen anything: zeros, not errors.
    assert s1 == {
        "shard": 1,
        "length": 0,
        "lag": 0,
        "pending": 0,
        "last_applied": None,
        "dead": 1,
        "rows_length": 0,
        "lease": {"holder": None, "fence": None},
        "oldest_pending_age_ms": None,
        "last_delivered": None,
    }
    assert doc["broadcasters"] == [{"instance": "b1", "connections": 3, "subscriptions": 5}]
    assert doc["verify"] is None

    # The table names the same facts.
    code, out, _ = run_cli(["status", *server_args(s)])
    assert code == 0
    assert "host:42:abcd" in out and ids[0] in out
    assert "b1" in out


def test_status_of_a_fresh_deployment_is_all_zeros(
    redis_url: str, db_url: str, prefix: str
) -> None:
    s = settings_for(redis_url, db_url, prefix, shards=1)
    code, out, err = run_cli(["status", "--json", *server_args(s)])
    assert code == 0, err
    doc = orjson.loads(out)
    assert doc["shards"][0]["length"] == 0
    assert doc["shards"][0]["lag"] == 0
    assert doc["shards"][0]["pending"] == 0
    assert doc["shards"][0]["lease"] == {"holder": None, "fence": None}
    assert doc["broadcasters"] == []


def test_status_counts_lag_when_redis_cannot(
    redis_url: str, db_url: str, prefix: str, rsync: redis.Redis
) -> None:
    """After an XDEL above the group's position Redis reports no lag: it is counted."""
    s = settings_for(redis_url, db_url, prefix)
    entries = Keys(prefix).entries(0)
    ids = [rsync.xadd(entries, {"n": str(i)}) for i in range(5)]
    rsync.xgroup_create(entries, GROUP, id="0")
    rsync.xreadgroup(GROUP, CONSUMER, {entries: ">"}, count=1)
    rsync.xdel(entries, ids[3])
    code, out, err = run_cli(["status", "--json", *server_args(s)])
    assert code == 0, err
    assert orjson.loads(out)["shards"][0]["lag"] == 3


def test_status_without_postgresql_still_shows_redis(redis_url: str, prefix: str) -> None:
    s = settings_for(redis_url, "postgresql://postgres@127.0.0.1:1/none", prefix)
    code, out, err = run_cli(["status", "--json", *server_args(s)])
    assert code == 1
    doc = orjson.loads(out)
    assert doc["shards"][0]["last_applied"] is None
    assert "PostgreSQL" in doc["errors"][0]
    assert err.count("\n") == 1 and err.startswith("rowcast: PostgreSQL")
