"""Processes of the writer's fault tests: ``rowcast writer`` subprocesses to
kill, pause or stop, with their logs (JSON lines) to wait on; a private Redis
to restart; who holds the lease; and what a writer killed at the worst moment
leaves behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg
import redis as redis_sync

from rowcast.contract.keys import CONSUMER, GROUP, Keys
from rowcast.contract.streamid import parse as parse_id
from rowcast.writer.batch import Read, sort_out
from rowcast.writer.store import Store

ROWCAST = str(Path(sys.executable).with_name("rowcast"))
SHARD = 0


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


class WriterProcess:
    """One ``rowcast writer`` subprocess with its log (JSON lines on stderr)."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in reap()
        self.proc = subprocess.Popen(
            [ROWCAST, "writer"], env=env, stdout=subprocess.DEVNULL, stderr=self._log
        )
        self.pid = self.proc.pid

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for raw in self.log_path.read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                out.append(orjson.loads(raw))
        return out

    def messages(self) -> list[str]:
        return [str(line.get("msg", "")) for line in self.lines()]

    def count(self, fragment: str) -> int:
        return sum(fragment in m for m in self.messages())

    def leading(self) -> int:
        """How many times this process started leading a shard."""
        return self.count("leading with fence")

    def wait_leading(self, times: int = 1, timeout: float = 15.0) -> None:
        def check() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"writer {self.pid} exited: {self.tail()}")
            return self.leading() >= times

        wait_for(f"writer {self.pid} to lead", check, timeout)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def reap(self) -> None:
        """Make sure the process is gone (continued first, in case a test
        stopped it) and close its log."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
                os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()

    def tail(self, n: int = 15) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])


class Writers:
    """Starts writer processes for one test and reaps every one of them."""

    def __init__(self, tmp: Path, redis_url: str, db_url: str, prefix: str) -> None:
        self.tmp = tmp
        # Nothing of the caller's rowcast configuration (metrics port, shards...).
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ROWCAST_")},
            "ROWCAST_REDIS_URL": redis_url,
            "ROWCAST_DATABASE_URL": db_url,
            "ROWCAST_PREFIX": prefix,
            "ROWCAST_LEASE_MS": "1000",
        }
        self.started: list[WriterProcess] = []

    def start(self, **env: str) -> WriterProcess:
        w = WriterProcess({**self.env, **env}, self.tmp / f"writer-{len(self.started)}.log")
        self.started.append(w)
        return w

    def reap(self) -> None:
        for w in self.started:
            w.reap()

    def logs(self) -> str:
        return "\n".join(f"--- writer {w.pid}\n{w.tail()}" for w in self.started)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of the test's own, without persistence: a restart loses
    everything, as an unconfigured production Redis would."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def start(self) -> None:
        log = open(self.tmp / f"redis-{self.restarts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
                "--dir", str(self.tmp),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        self.restarts += 1

        def ping() -> bool:
            try:
                with redis_sync.Redis.from_url(self.url, socket_timeout=1) as r:
                    return bool(r.ping())
            except redis_sync.exceptions.ConnectionError:
                return False

        wait_for("the private redis-server to answer", ping, 15)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def client(self) -> redis_sync.Redis:
        return redis_sync.Redis.from_url(self.url)


# --------------------------------------------------------------------------
# Leadership, and faults outside the writer process


def terminate_backends(db_url: str) -> int:
    """pg_terminate_backend on every connection of the writer to this database."""
    dbname = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    with psycopg.connect(db_url, autocommit=True) as c:
        rows = c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'rowcast-writer' AND datname = %s"
            " AND pid <> pg_backend_pid()",
            (dbname,),
        ).fetchall()
    return sum(1 for (ok,) in rows if ok)


def lease_holder(r: redis_sync.Redis, prefix: str) -> str | None:
    raw: Any = r.get(Keys(prefix).lease(SHARD))
    return raw.decode() if raw is not None else None


def holder_pid(holder: str | None) -> int | None:
    """The pid in a holder id ``host:pid:random``."""
    return None if holder is None else int(holder.split(":")[-2])


async def commit_unannounced(db_url: str, r: redis_sync.Redis, prefix: str) -> None:
    """What a writer killed between COMMIT and its Redis side effects leaves:
    the entries pending for the group's consumer and stored in PostgreSQL
    (with a fresh fence, as a new leader would)."""
    keys = Keys(prefix)
    stream = keys.entries(SHARD)
    got: Any = r.xreadgroup(GROUP, CONSUMER, {stream: ">"})
    items = [(i, f) for i, f in got[0][1]]
    fence = int(r.incr(keys.fence(SHARD)))
    store = await Store.connect(db_url, stream, 1000)
    try:
        await store.claim(fence)
        # The entries the writer's checks refuse are only dead-lettered after
        # COMMIT, with the rest: here, never.
        valid, _ = sort_out([Read(i, f) for i, f in items], 1 << 20)
        await store.apply(fence, parse_id(items[0][0]), parse_id(items[-1][0]), valid)
    finally:
        await store.close()
