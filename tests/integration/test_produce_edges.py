"""Waits that honour their timeout (issue 10, point 4) and `rowcast produce`
input edges (point 8): blank lines answered in place, plain reasons for
invalid UTF-8 and deep nesting."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import orjson
import psycopg
import pytest
from redis.asyncio import Redis

from rowcast.contract.errors import ReceiptTimeout
from rowcast.ops.commands.produce import produce
from rowcast.producers.producer import Producer
from tests.integration.test_broadcaster_harness import writer

ROWCAST = os.path.join(os.path.dirname(sys.executable), "rowcast")


async def test_a_wait_longer_than_the_socket_timeout_ends_as_a_receipt_timeout(redis_url, prefix):
    # No writer runs: the receipt never comes. The client's socket timeout
    # (0.5 s) is shorter than the wait (2 s); the wait must still be the one
    # that ends it.
    p = Producer(Redis.from_url(redis_url, socket_timeout=0.5), prefix=prefix)
    try:
        with pytest.raises(ReceiptTimeout, match="within 2s"):
            await p.append("s", "r", "user", {}, wait=True, timeout=2)
    finally:
        await p.close()


async def produce_lines(
    lines: list[bytes], redis_url: str, db_url: str, prefix: str
) -> tuple[int, list[dict]]:
    """``rowcast produce --wait`` on these lines, a writer running: its exit
    status and its output lines."""
    stdin = io.BytesIO(b"\n".join(lines) + b"\n")
    stdout = io.BytesIO()
    p = Producer(Redis.from_url(redis_url), prefix=prefix)
    try:
        async with writer(redis_url, db_url, prefix):
            code = await produce(p, stdin, stdout, wait=True, timeout=30)
    finally:
        await p.close()
    return code, [orjson.loads(x) for x in stdout.getvalue().splitlines()]


def produce_without_writer(
    lines: list[bytes], timeout: str, redis_url: str, prefix: str
) -> subprocess.CompletedProcess[bytes]:
    """The ``rowcast produce --wait`` command, with no writer to answer."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROWCAST_")}
    env.update(ROWCAST_REDIS_URL=redis_url, ROWCAST_DATABASE_URL="postgresql://x@127.0.0.1:1/x")
    env.update(ROWCAST_PREFIX=prefix)
    return subprocess.run(
        [ROWCAST, "produce", "--wait", "--timeout", timeout],
        input=b"\n".join(lines) + b"\n",
        env=env,
        capture_output=True,
        timeout=120,
    )


def test_produce_wait_timeout_is_the_one_given(redis_url, prefix):
    line = orjson.dumps({"op": "append", "session": "s", "row": "r", "kind": "k", "body": {}})
    r = produce_without_writer([line], "7", redis_url, prefix)
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert "no receipt" in err and "within 7s" in err and "Timeout reading" not in err
    assert err.count("\n") == 1


def test_a_receipt_that_does_not_come_is_answered_and_the_rest_still_are(redis_url, prefix):
    line = {"op": "append", "session": "s", "kind": "k", "body": {}}
    # No writer runs: neither receipt comes.
    lines = [orjson.dumps({**line, "row": "a"}), orjson.dumps({**line, "row": "b"})]
    r = produce_without_writer(lines, "0.5", redis_url, prefix)
    assert r.returncode == 1  # a receipt that did not come is a failed check
    out = [orjson.loads(x) for x in r.stdout.splitlines()]
    assert [(o["ok"], o["timeout"]) for o in out] == [(False, True)] * 2  # one per line
    assert out[0]["error"].startswith("line 1: no receipt for row 'a'")
    assert out[1]["error"].startswith("line 2: no receipt for row 'b'")
    assert r.stderr.decode().count("\n") == 2


async def test_every_input_line_gets_its_output_line(redis_url, db_url, prefix):
    good = orjson.dumps({"op": "append", "session": "s", "row": "a", "kind": "k", "body": {}})
    deep = b'{"op":"append","session":"s","row":"d","kind":"k","body":' + b"[" * 1100
    deep += b"]" * 1100 + b"}"
    mid = b'{"op":"append","session":"s","row":"m","kind":"k","body":' + b"[" * 600
    mid += b"]" * 600 + b"}"
    lines = [good, b"", b"   ", b'{"op":"append","session":"\xff"}', deep, mid]
    code, out = await produce_lines(lines, redis_url, db_url, prefix)
    assert code == 1 and len(out) == len(lines)
    assert out[0]["ok"] and out[5]["ok"]
    assert "line 2: blank line" in out[1]["error"] and "line 3: blank" in out[2]["error"]
    assert "not UTF-8" in out[3]["error"] and "surrogates" not in out[3]["error"]
    assert "nested deeper than 1024 levels" in out[4]["error"]


async def test_a_body_is_stored_as_written(redis_url, db_url, prefix):
    """The line's body goes on as its own text: a number past a double keeps
    every digit (re-encoding it would round it), and what orjson refuses but
    jsonb takes (1e999, 1,000 levels) is not refused here either."""
    head = b'{"op":"append","session":"exact","kind":"k","row":'
    digits = b"123456789012345678901234567890"
    lines = [
        head + b'"n","body":{"n": ' + digits + b"}}",
        head + b'"inf","body":{"x":1e999}}',
        head + b'"deep","body":' + b"[" * 1000 + b"]" * 1000 + b"}",
    ]
    code, out = await produce_lines(lines, redis_url, db_url, prefix)
    assert code == 0 and [o["ok"] for o in out] == [True] * 3, out
    with psycopg.connect(db_url) as conn:
        stored = dict(
            conn.execute("SELECT row_id, body::text FROM rowcast.rows").fetchall()  # type: ignore[arg-type]
        )
    assert stored["n"] == '{"n": ' + digits.decode() + "}"
    assert stored["inf"].startswith('{"x": 1000')
