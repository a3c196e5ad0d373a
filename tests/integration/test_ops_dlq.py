"""`rowcast dlq`: list, retry a fixed entry, purge old ones."""

from __future__ import annotations

import orjson
import psycopg
import pytest
import redis

from rowcast.contract.keys import Keys
from rowcast.producers import Producer, Rejected
from tests.integration.test_ops_support import (
    arun_cli,
    run_cli,
    running_writer,
    server_args,
    settings_for,
    wait_applied,
)


@pytest.mark.timeout(90)
async def test_retry_of_a_fixed_entry_stores_it(
    redis_url: str, db_url: str, prefix: str, rsync: redis.Redis
) -> None:
    keys = Keys(prefix)
    strict = settings_for(redis_url, db_url, prefix, max_body=100)
    args = server_args(strict)
    body = {"text": "x" * 400}
    producer = Producer.from_url(redis_url, prefix=prefix)
    try:
        async with running_writer(strict):
            await producer.append("s1", "small", "user", {"ok": 1}, wait=True, timeout=30)
            with pytest.raises(Rejected, match="over the limit of 100"):
                await producer.append("s1", "big", "user", body, wait=True, timeout=30)
    finally:
        await producer.close()

    code, out, err = await arun_cli(["dlq", "list", "--json", *args])
    assert code == 0, err
    doc = orjson.loads(out)
    assert doc["totals"] == {"0": 1}
    (letter,) = doc["dead"]
    assert letter["row"] == "big" and letter["session"] == "s1" and letter["op"] == "append"
    assert "over the limit of 100" in letter["error"]
    assert letter["body_bytes"] == len(orjson.dumps(body))
    code, out, _ = await arun_cli(["dlq", "list", *args])
    assert code == 0 and "over the limit" in out and letter["id"] in out

    # Retried against a writer with the default limit, it is stored.
    relaxed = settings_for(redis_url, db_url, prefix)
    async with running_writer(relaxed):
        code, out, err = await arun_cli(["dlq", "retry", letter["id"], *args])
        assert code == 0, err
        new_id = out.strip().rsplit(" ", 1)[-1]
        await wait_applied(db_url, keys.entries(0), new_id)
    assert rsync.xlen(keys.dead(0)) == 0
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT sequence, body FROM rowcast.rows WHERE session_id = 's1' AND row_id = 'big'"
        ).fetchone()
    assert row == (1, body)
    # The re-injected entry is the original, without the writer's additions.
    (entry,) = rsync.xrange(keys.entries(0), new_id, new_id)
    assert b"error" not in entry[1] and b"source" not in entry[1]
    assert entry[1][b"body"] == orjson.dumps(body)

    # A repeated field name stays repeated, byte for byte.
    twice = [b"op", b"append", b"kind", b"a", b"kind", b"b"]
    rsync.execute_command("XADD", keys.dead(0), "*", *twice, "error", "e", "source", "1-0")
    (repeated,) = rsync.xrange(keys.dead(0))
    code, out, err = await arun_cli(["dlq", "retry", repeated[0].decode(), *args])
    assert code == 0, err
    new_id = out.strip().rsplit(" ", 1)[-1]
    raw = "return redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])"
    assert rsync.eval(raw, 1, keys.entries(0), new_id)[0][1] == twice  # type: ignore[index]

    code, out, err = await arun_cli(["dlq", "retry", letter["id"], *args])
    assert code == 1 and "no dead letter" in err


def test_purge_removes_only_older_letters(
    redis_url: str, db_url: str, prefix: str, rsync: redis.Redis
) -> None:
    s = settings_for(redis_url, db_url, prefix, shards=2)
    args = server_args(s)
    keys = Keys(prefix)
    for n in range(2):
        for i in range(1, 6):
            rsync.xadd(keys.dead(n), {"error": "e", "source": f"{i}-0"}, id=f"{i}-0")
    code, out, err = run_cli(["dlq", "purge", "--before", "3-0", *args])
    assert code == 0, err
    assert "shard 0: purged 2" in out and "shard 1: purged 2" in out
    for n in range(2):
        assert [i.decode() for i, _ in rsync.xrange(keys.dead(n))] == ["3-0", "4-0", "5-0"]
    code, out, err = run_cli(["dlq", "purge", "--before", "5", "--shard", "1", *args])
    assert code == 0 and "shard 1: purged 2" in out
    assert rsync.xlen(keys.dead(0)) == 3

    code, _, err = run_cli(["dlq", "purge", "--before", "last-week", *args])
    assert code == 2 and err.count("\n") == 1 and "--before" in err
    code, _, err = run_cli(["dlq", "retry", "12x", *args])
    assert code == 2 and "ID" in err
    code, _, err = run_cli(["dlq", "list", "--shard", "9", *args])
    assert code == 2 and "--shard" in err
