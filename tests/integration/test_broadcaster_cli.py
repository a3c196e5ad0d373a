"""``rowcast token`` and ``rowcast broadcaster`` as processes: tokens, the
refusal to listen beyond loopback without a secret, the heartbeat key, and a
clean stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import orjson
import pytest

from rowcast.broadcaster.auth import verify
from rowcast.contract.keys import Keys
from tests.integration.test_broadcaster_harness import SECRET, free_socket

ROWCAST = os.path.join(os.path.dirname(sys.executable), "rowcast")


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("ROWCAST_")}
    out.update(extra)
    return out


def test_token_command_prints_a_verifiable_token_or_refuses_without_a_secret():
    r = subprocess.run(
        [ROWCAST, "token", "--session", "a", "--session", "b", "--ttl", "60"],
        env=env(ROWCAST_SECRET=SECRET),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    grant = verify(SECRET, r.stdout.strip())
    assert grant.sessions == frozenset({"a", "b"})
    r = subprocess.run(
        [ROWCAST, "token", "--session", "a"], env=env(), capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "ROWCAST_SECRET" in r.stderr
    r = subprocess.run(
        [ROWCAST, "token", "--session", "a"],
        env=env(ROWCAST_SECRET="short"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_broadcaster_without_a_secret_refuses_to_listen_beyond_loopback(redis_url, db_url, prefix):
    r = subprocess.run(
        [ROWCAST, "broadcaster", "--host", "0.0.0.0", "--port", "0"],
        env=env(ROWCAST_REDIS_URL=redis_url, ROWCAST_DATABASE_URL=db_url, ROWCAST_PREFIX=prefix),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "ROWCAST_SECRET" in r.stderr


@pytest.mark.timeout(90)
def test_broadcaster_process_serves_beats_and_stops_cleanly_on_sigterm(
    redis_url, db_url, prefix, rsync, tmp_path
):
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    log = tmp_path / "broadcaster.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [ROWCAST, "broadcaster", "--port", str(port)],
            env=env(
                ROWCAST_REDIS_URL=redis_url, ROWCAST_DATABASE_URL=db_url, ROWCAST_PREFIX=prefix
            ),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        keys = list(rsync.scan_iter(match=Keys(prefix).broadcaster_pattern()))
        assert len(keys) == 1
        beat = orjson.loads(rsync.get(keys[0]))
        assert set(beat) >= {
            "instance",
            "host",
            "port",
            "connections",
            "subscriptions",
            "started_at",
        }
        assert beat["port"] == port and beat["host"] == "127.0.0.1"
        assert 0 < rsync.ttl(keys[0]) <= 15
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
        assert not list(rsync.scan_iter(match=Keys(prefix).broadcaster_pattern()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
