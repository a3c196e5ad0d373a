"""The processes and ports of the embedded servers: finding a free
port, spawning a server in its own session, waiting for it to answer, and
stopping it by PID without ever touching a stranger's process.

Shared by valkey.py and postgres.py; it imports neither, so nothing here is
circular.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from rowcast.contract.errors import Unavailable

log = logging.getLogger("rowcast.ops.embedded")

DEFAULT_PORTS = frozenset({6379, 5432})
"""Ports we never take: a real Redis or PostgreSQL may want them."""

DATABASE = "rowcast"
HOST = "127.0.0.1"


@dataclass
class Server:
    kind: str  # "redis" or "postgres"
    pid: int
    port: int
    adopted: bool = False
    """True when found running from an earlier (crashed) run rather than started now."""
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        if self.kind == "redis":
            return f"redis://{HOST}:{self.port}/0"
        return f"postgresql://postgres@{HOST}:{self.port}/{DATABASE}"


def port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the servers bind: a port in TIME_WAIT from our own last run is free to them.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port(hint: int | None = None) -> int:
    """A free TCP port on the loopback: ``hint`` when it is free (and not a default
    port), else one the kernel picks from its ephemeral range."""
    if hint and hint not in DEFAULT_PORTS and 1024 < hint < 65536 and _port_free(hint):
        return hint
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port: int = s.getsockname()[1]
        if port not in DEFAULT_PORTS:
            return port


def runs(
    pid: int | None, name: str, owns: Callable[[psutil.Process], bool]
) -> psutil.Process | None:
    """The process ``pid`` if it is alive, is named ``name`` and ``owns`` says it works
    on our data dir. Guards against PID reuse: never adopt, nor stop, a stranger."""
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE or Path(p.exe()).name != name:
            return None
        return p if owns(p) else None
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
        return None


def _wait_gone(srv: Server, timeout: float) -> bool:
    if srv.popen is not None:
        try:
            srv.popen.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        psutil.Process(srv.pid).wait(timeout)
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        return False
    return True


def stop_pid(srv: Server, sig: signal.Signals, grace: float) -> None:
    try:
        children = psutil.Process(srv.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    with contextlib.suppress(ProcessLookupError):
        os.kill(srv.pid, sig)
    if not _wait_gone(srv, grace):
        log.warning("%s (pid %d) did not stop within %gs; killing it", srv.kind, srv.pid, grace)
        with contextlib.suppress(ProcessLookupError):
            os.kill(srv.pid, signal.SIGKILL)
        _wait_gone(srv, 10.0)
    # A killed postmaster's backends notice and exit on their own; don't leave them
    # to chance.
    for c in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            c.kill()
    psutil.wait_procs(children, timeout=5.0)


def wait_ready(srv: Server, ready: Callable[[], bool], timeout: float, logfile: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if srv.popen is not None and srv.popen.poll() is not None:
            raise Unavailable(
                f"embedded {srv.kind} exited with status {srv.popen.returncode}: " + tail(logfile)
            )
        if ready():
            return
        time.sleep(0.1)
    raise Unavailable(f"embedded {srv.kind} did not answer within {timeout:g}s: " + tail(logfile))


def tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return f"(no log at {path})"
    return " | ".join(text[-lines:]) or f"(empty log {path})"


def spawn(
    argv: list[str], logfile: Path, cwd: Path, user: pwd.struct_passwd | None
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "REDIS"))}
    env["LC_ALL"] = "C"
    extra: dict[str, Any] = {}
    if user is not None:
        env["HOME"] = user.pw_dir if os.path.isdir(user.pw_dir) else str(cwd)
        extra = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    with open(logfile, "ab") as out:
        # Own session: a Ctrl-C on the terminal reaches `rowcast up` only, which
        # stops the writer before the servers it writes to.
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
            **extra,
        )


def spawn_on_free_port(
    name: str,
    argv_for: Callable[[int], list[str]],
    answers: Callable[[int], bool],
    stop: Callable[[Server], None],
    *,
    logfile: Path,
    cwd: Path,
    user: pwd.struct_passwd | None,
    timeout: float,
    preferred: int | None,
) -> Server:
    """Starts a server on a free port (the preferred one first) and waits until
    it answers; stops it again on any failure."""
    for attempt in range(3):
        port = free_port(preferred if attempt == 0 else None)
        popen = spawn(argv_for(port), logfile, cwd, user)
        srv = Server(name, popen.pid, port, popen=popen)
        try:
            wait_ready(srv, functools.partial(answers, port), timeout, logfile)
        except Unavailable:
            # Most often the port was taken between our check and its bind (ports in
            # the ephemeral range come and go): try another one.
            if popen.poll() is not None and attempt < 2:
                log.warning("embedded %s did not start on port %d; trying another", name, port)
                continue
            stop(srv)
            raise
        except BaseException:
            stop(srv)
            raise
        log.info("embedded %s on port %d (pid %d)", name, port, popen.pid)
        return srv
    raise Unavailable(f"embedded {name}: no free port")  # pragma: no cover
