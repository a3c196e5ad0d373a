"""The README's quick start, verbatim, in a clean copy of the repository: the
install command makes a fresh virtual environment, then ``rowcast up --demo``
serves live demo sessions; SIGTERM leaves nothing behind.

Only the environment around the commands is the test's: a copy of the working
tree without any venv, caches or git (a clean clone), and XDG_DATA_HOME inside
the test's tmp dir so the embedded servers' data stays out of the home folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
# The README's two commands (test_readme_names_these_commands keeps them in step).
INSTALL = "python3 -m venv .venv && .venv/bin/pip install -e ."
UP = ".venv/bin/rowcast up --demo"
UP_PORT = 8000  # rowcast up's default
_NOT_CLONED = shutil.ignore_patterns(
    ".git", ".venv", "venv", "__pycache__", "*.egg-info", ".mypy_cache", ".ruff_cache",
    ".pytest_cache", ".hypothesis", "build", "dist", "artifacts",
)  # fmt: skip


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _demo_rows(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/sessions", timeout=5) as r:
            sessions = json.loads(r.read())["sessions"]
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
        return False
    return any(s["session"].startswith("demo:") and s["row_count"] > 0 for s in sessions)


def test_readme_names_these_commands() -> None:
    readme = ROOT / "README.md"
    if not readme.exists():
        pytest.skip("no README.md yet")
    text = readme.read_text()
    assert INSTALL in text and UP in text


@pytest.mark.timeout(400)
def test_quick_start_in_a_fresh_virtual_environment(tmp_path: Path) -> None:
    clone = tmp_path / "rowcast"
    shutil.copytree(ROOT, clone, ignore=_NOT_CLONED, symlinks=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROWCAST_", "VIRTUAL_ENV"))}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    install = subprocess.run(
        ["bash", "-c", INSTALL],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=360,
    )
    assert install.returncode == 0, install.stderr[-2000:]

    # Verbatim when the default port is free; otherwise the same command on another port.
    command, port = UP, UP_PORT
    if _port_taken(UP_PORT):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        command = f"{UP} --port {port}"
    log = open(tmp_path / "up.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {command}"],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    tree: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 60
        while not _demo_rows(port):
            assert proc.poll() is None, (tmp_path / "up.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "no demo rows within 60 s"
            time.sleep(0.2)
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(f"rowcast is up: http://127.0.0.1:{port}/")
        me = psutil.Process(proc.pid)
        tree = [me, *me.children(recursive=True)]
        assert {"valkey-server", "postgres"} <= {p.name() for p in tree}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        _, alive = psutil.wait_procs(tree, timeout=10)
        assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
    finally:
        procs = {p.pid: p for p in tree}
        if proc.poll() is None:  # not reaped yet: the PID is still this process's
            with contextlib.suppress(psutil.NoSuchProcess):
                me = psutil.Process(proc.pid)
                procs.update({p.pid: p for p in [me, *me.children(recursive=True)]})
        for p in procs.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(list(procs.values()), timeout=10)
        if proc.poll() is None:
            proc.wait(10)
        if proc.stdout:
            proc.stdout.close()
        log.close()
