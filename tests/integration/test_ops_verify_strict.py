"""`rowcast verify` holds the contract exactly (issue 10, point 9): a head
whose last_change is ahead of every row's change is a violation."""

from __future__ import annotations

import orjson
import psycopg

from tests.integration.test_ops_support import apply_rows, run_cli, server_args, settings_for


def test_a_head_ahead_of_its_rows_fails_verify(redis_url, db_url, prefix):
    args = server_args(settings_for(redis_url, db_url, prefix))
    apply_rows(db_url, [("append", s, f"r{i}", "{}") for s in ("ok", "ahead") for i in range(3)])
    code, out, err = run_cli(["verify", "--json", *args])
    assert code == 0, err
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE rowcast.sessions SET last_change = 7 WHERE session_id = 'ahead'")
    code, out, err = run_cli(["verify", "--json", *args])
    doc = orjson.loads(out)
    assert code == 1 and doc["violations_total"] == 1
    (v,) = doc["violations"]
    assert v["session"] == "ahead" and v["problems"] == ["last_change"]
    assert v["last_change"] == 7 and v["max_change"] == 3
