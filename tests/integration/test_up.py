"""``rowcast up`` as a user runs it: a subprocess with no server URLs (embedded
Valkey and PostgreSQL in a temporary ROWCAST_DATA_DIR), polled over its HTTP API,
stopped with SIGTERM; every process it started must be gone afterwards.

The finalizer kills whatever is left by PID (the process tree and the PIDs in
the state file), so a failing test leaves nothing running either.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

ROWCAST = str(Path(sys.executable).with_name("rowcast"))
FIXTURES = Path(__file__).parent.parent / "fixtures"
CODEX_FILE = Path(
    "2026/08/10/rollout-2026-08-10T13-02-51-0199a3c4-7d1e-7b2a-9c3d-4e5f6a7b8c9d.jsonl"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(p: psutil.Process) -> bool:
    """Running and not a zombie (``is_running`` also rules out a reused PID)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _server(pid: int, data_dir: Path) -> list[psutil.Process]:
    """A PID from the state file, with its children, if it still runs a server on our
    data dir (never a stranger that got the PID since)."""
    try:
        p = psutil.Process(pid)
        if p.name() in ("valkey-server", "postgres") and str(data_dir) in (
            p.cwd() + " ".join(p.cmdline())
        ):
            return [p, *p.children(recursive=True)]
    except psutil.Error:
        pass
    return []


def _tree(pid: int) -> list[psutil.Process]:
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@dataclass
class Up:
    proc: subprocess.Popen[str]
    port: int
    data_dir: Path
    log: Any = None  # its stderr, a file in the test's tmp dir

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
            body = r.read()
            return json.loads(body) if r.headers.get_content_type() == "application/json" else body

    def try_get(self, path: str) -> Any:
        try:
            return self.get(path)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.data_dir / "embedded.json").read_text())
            return data
        except (OSError, ValueError):
            return {}

    def server_pids(self) -> list[int]:
        st = self.state()
        return [st[k]["pid"] for k in ("redis", "postgres") if st.get(k) and st[k].get("pid")]

    def stop(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@dataclass
class Launcher:
    tmp: Path
    started: list[Up] = field(default_factory=list)
    procs: dict[int, psutil.Process] = field(default_factory=dict)
    """Processes seen, as psutil handles: they refuse to signal a reused PID."""

    def env(self, data_dir: Path, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROWCAST_")}
        env["ROWCAST_DATA_DIR"] = str(data_dir)
        env.update(extra)
        return env

    def start(self, data_dir: Path, *args: str, **env: str) -> Up:
        port = _free_port()
        log = open(self.tmp / f"up-{len(self.started)}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [ROWCAST, "up", "--port", str(port), *args],
            env=self.env(data_dir, **env),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        up = Up(proc, port, data_dir, log)
        self.started.append(up)
        self.track(proc.pid)
        return up

    def track(self, pid: int) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            self.procs.setdefault(pid, psutil.Process(pid))

    def remember(self, up: Up) -> list[psutil.Process]:
        """Every process of ``up``'s tree and of its servers (kept for the final sweep)."""
        mine = {p.pid: p for p in _tree(up.proc.pid)}
        for pid in up.server_pids():
            mine.update({p.pid: p for p in _server(pid, up.data_dir)})
        for pid, p in mine.items():
            self.procs.setdefault(pid, p)
        return list(mine.values())

    def cleanup(self) -> None:
        for up in self.started:
            self.remember(up)
        procs = list(self.procs.values())
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(procs, timeout=10)
        for up in self.started:
            if up.proc.poll() is None:
                up.proc.wait(10)
            if up.proc.stdout:
                up.proc.stdout.close()
            up.log.close()


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    lau = Launcher(tmp_path)
    try:
        yield lau
    finally:
        lau.cleanup()


def _until(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _demo_sessions(up: Up) -> list[dict[str, Any]]:
    found = up.try_get("/api/sessions") or {"sessions": []}
    return [s for s in found["sessions"] if s["session"].startswith("demo:") and s["row_count"]]


def _all_rows(up: Up, session: str) -> list[dict[str, Any]]:
    """Every row of a session, ascending, paging back with ``before``."""
    path = f"/api/sessions/{urllib.parse.quote(session, safe=':')}/rows"
    page = up.get(f"{path}?limit=500")
    rows: list[dict[str, Any]] = page["rows"]
    while page["has_more_before"]:
        page = up.get(f"{path}?before={rows[0]['sequence']}&limit=500")
        rows = page["rows"] + rows
    return rows


def _rows_if_up(up: Up, session: str) -> list[dict[str, Any]] | None:
    try:
        return _all_rows(up, session)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def _run_of(row: dict[str, Any]) -> str:
    """The demo's row ids start with a token of the run that wrote them."""
    return str(row["row"]).split("-")[0]


def _assert_all_gone(procs: list[psutil.Process]) -> None:
    alive = [p for p in procs if _alive(p)]
    assert alive == [], f"left behind: {alive}"


def test_up_demo_serves_live_sessions_then_sigterm_leaves_nothing(
    launcher: Launcher, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    started = time.monotonic()
    up = launcher.start(data, "--demo")
    sessions = _until(lambda: _demo_sessions(up), "demo rows over the HTTP API", timeout=15)
    elapsed = time.monotonic() - started
    assert elapsed < 15  # the promise to a newcomer: live sessions within 15 s
    assert up.proc.stdout is not None
    assert up.proc.stdout.readline().strip() == f"rowcast is up: http://127.0.0.1:{up.port}/"

    page = up.get("/")
    assert b"<html" in page.lower()
    rows = up.get(f"/api/sessions/{urllib.parse.quote(sessions[0]['session'])}/rows")["rows"]
    assert rows and rows[0]["kind"] == "user"

    st = up.state()
    ports = {st["redis"]["port"], st["postgres"]["port"]}
    assert not ports & {6379, 5432}
    procs = launcher.remember(up)
    assert {"valkey-server", "postgres"} <= {p.name() for p in procs}

    assert up.stop() == 0
    _assert_all_gone(procs)
    assert up.server_pids() == []


def test_up_restart_keeps_sessions_and_continues_sequences(
    launcher: Launcher, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    session = "demo:fix-flaky-test"
    up1 = launcher.start(data, "--demo")
    first = _until(lambda: len(r := _rows_if_up(up1, session) or []) >= 4 and r, "demo rows")
    launcher.remember(up1)
    assert up1.stop() == 0

    up2 = launcher.start(data, "--demo")

    def both_runs() -> list[dict[str, Any]] | None:
        rows = _rows_if_up(up2, session) or []
        runs = [_run_of(r) for r in rows]
        return rows if len(set(runs)) == 2 and runs.count(runs[-1]) >= 3 else None

    rows = _until(both_runs, "rows of the second run in the same session")
    assert [r["sequence"] for r in rows] == list(range(len(rows)))  # dense, no gap, no repeat
    run1 = _run_of(rows[0])
    assert run1 == _run_of(first[0])
    kept = [r for r in rows if _run_of(r) == run1]
    assert len(kept) >= len(first)  # the first run's rows are all still there...
    assert [r["sequence"] for r in kept] == list(range(len(kept)))  # ...and come first
    assert {r["row"] for r in first} <= {r["row"] for r in kept}

    # A connector with no URLs finds the embedded servers of the running `up`.
    sessions_dir = tmp_path / "codex"
    (sessions_dir / CODEX_FILE).parent.mkdir(parents=True)
    shutil.copy(FIXTURES / "codex" / CODEX_FILE, sessions_dir / CODEX_FILE)
    connect = subprocess.Popen(
        [ROWCAST, "connect", "codex", "--dir", str(sessions_dir)],
        env=launcher.env(data),
        stderr=subprocess.PIPE,
    )
    launcher.track(connect.pid)
    try:
        _until(
            lambda: any(
                s["session"].startswith("codex:") and s["row_count"] == 6
                for s in (up2.try_get("/api/sessions") or {"sessions": []})["sessions"]
            ),
            "the codex session",
        )
    finally:
        connect.send_signal(signal.SIGTERM)
        _, err = connect.communicate(timeout=30)
    assert connect.returncode == 0, err.decode()
    procs = launcher.remember(up2)
    assert up2.stop() == 0
    _assert_all_gone(procs)


def test_up_adopts_a_crashed_runs_servers_and_refuses_a_second_up(
    launcher: Launcher, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    up1 = launcher.start(data)
    _until(lambda: up1.try_get("/api/sessions") is not None, "the first run to serve")
    servers = up1.server_pids()
    assert len(servers) == 2
    first = launcher.remember(up1)

    # A second `rowcast up` on the same data dir is refused, in one line, exit 2.
    second = subprocess.run(
        [ROWCAST, "up", "--port", str(_free_port())],
        env=launcher.env(data),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 2
    assert second.stderr.count("\n") == 1 and "another `rowcast up`" in second.stderr

    # The first run crashes: its servers are left behind...
    up1.proc.send_signal(signal.SIGKILL)
    up1.proc.wait(10)
    left = [p for p in first if p.pid in servers]
    assert len(left) == 2 and all(_alive(p) for p in left)

    # ...and the next run adopts them instead of starting more.
    up2 = launcher.start(data, "--demo")
    _until(lambda: _demo_sessions(up2), "demo rows on the adopted servers")
    assert sorted(up2.server_pids()) == sorted(servers)
    assert _servers_on(data) == sorted(servers)  # one Valkey, one postmaster

    procs = launcher.remember(up2)
    assert up2.stop() == 0
    _assert_all_gone(procs + first)


def _servers_on(data: Path) -> list[int]:
    """PIDs of every Valkey and PostgreSQL postmaster working on ``data``."""
    found = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if (p.name() == "valkey-server" and Path(p.cwd()) == data / "redis") or (
                p.name() == "postgres" and str(data / "postgres") in p.cmdline()
            ):
                found.append(p.pid)
    return sorted(found)


def test_up_with_urls_set_uses_them_and_starts_no_server(
    launcher: Launcher, tmp_path: Path, redis_url: str, db_url: str, prefix: str
) -> None:
    data = tmp_path / "data"
    up = launcher.start(
        data,
        "--demo",
        ROWCAST_REDIS_URL=redis_url,
        ROWCAST_DATABASE_URL=db_url,
        ROWCAST_PREFIX=prefix,
    )
    _until(lambda: _demo_sessions(up), "demo rows in the given servers")
    children = _tree(up.proc.pid)[1:]
    assert not [p for p in children if p.name() in ("valkey-server", "postgres")]
    assert not (data / "embedded.json").exists()
    assert up.stop() == 0
