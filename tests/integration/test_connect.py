"""The Claude Code and Codex connectors against real Redis and PostgreSQL: fixture
transcripts become the expected rows; lines appended while the connector runs
add rows; a restarted connector pushes nothing twice."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from redis.asyncio import Redis

from rowcast.contract.keys import Keys
from rowcast.ops.commands.runner import run_writers
from rowcast.ops.settings import Settings
from rowcast.producers.connectors import claude_code, codex
from rowcast.producers.connectors.tail import Source, Tailer
from rowcast.producers.producer import Producer

FIXTURES = Path(__file__).parent.parent / "fixtures"
ROWCAST = str(Path(sys.executable).with_name("rowcast"))


@dataclass(frozen=True)
class Case:
    source: Source
    fixture: Path  # copied to the same relative place under the test's root
    session: str
    rows: int  # rows of the fixture
    final: dict[str, str]  # tool row -> its final status
    appended_rows: int


CLAUDE = Case(
    claude_code.SOURCE,
    Path("-home-dev-calc/8f3c1a2e-4b5d-4e6f-9a7b-1c2d3e4f5a6b.jsonl"),
    "claude-code:8f3c1a2e-4b5d-4e6f-9a7b-1c2d3e4f5a6b",
    8,
    {"toolu_01Bash": "failed", "toolu_02Edit": "completed"},
    3,
)
CODEX = Case(
    codex.SOURCE,
    Path("2026/08/10/rollout-2026-08-10T13-02-51-0199a3c4-7d1e-7b2a-9c3d-4e5f6a7b8c9d.jsonl"),
    "codex:0199a3c4-7d1e-7b2a-9c3d-4e5f6a7b8c9d",
    6,
    {"call_A1": "completed", "call_B2": "completed", "call_C3": "failed"},
    3,
)
FIXTURE_DIR = {claude_code.NAME: "claude_code", codex.NAME: "codex"}


def _rows(db_url: str, session: str) -> list[tuple[str, int, int, int, str, Any]]:
    with psycopg.connect(db_url) as c:
        return c.execute(
            "SELECT row_id, sequence, revision, change, kind, body FROM rowcast.rows"
            " WHERE session_id = %s ORDER BY sequence",
            (session,),
        ).fetchall()


async def _until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _copy(case: Case, root: Path) -> Path:
    src = FIXTURES / FIXTURE_DIR[case.source.name]
    target = root / case.fixture
    target.parent.mkdir(parents=True)
    shutil.copy(src / case.fixture, target)
    return target


@pytest.fixture
async def writer(redis_url: str, db_url: str, prefix: str) -> AsyncIterator[Settings]:
    settings = Settings(redis_url=redis_url, database_url=db_url, prefix=prefix)
    stop = asyncio.Event()
    task = asyncio.create_task(run_writers(settings, [0], stop))
    yield settings
    stop.set()
    await asyncio.wait_for(task, 30)


def _user_line(case: Case, text: str) -> bytes:
    if case is CLAUDE:
        record: dict[str, Any] = {
            "type": "user",
            "uuid": "11111111-0000-4000-8000-0000000000ff",
            "timestamp": "2026-08-10T12:05:00.000Z",
            "message": {"role": "user", "content": text},
        }
    else:
        record = {
            "timestamp": "2026-08-10T13:09:00.000Z",
            "type": "response_item",
            "payload": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": text}],
            },
        }
    return orjson.dumps(record) + b"\n"


@pytest.mark.parametrize("case", [CLAUDE, CODEX], ids=["claude-code", "codex"])
async def test_connector_rows_appends_and_restart(
    case: Case, writer: Settings, tmp_path: Path, aredis: Redis
) -> None:
    settings = writer
    assert settings.database_url is not None
    db = settings.database_url
    root = tmp_path / "transcripts"
    transcript = _copy(case, root)
    state = tmp_path / "state.json"
    producer = Producer(aredis, prefix=settings.prefix)
    entries = Keys(settings.prefix).entries(0)

    # 1. the fixture becomes the expected rows
    stop = asyncio.Event()
    t1 = Tailer(case.source, root, state, producer, poll=0.05)
    task = asyncio.create_task(t1.run(stop))

    def settled(n: int) -> Callable[[], bool]:
        def check() -> bool:
            rows = _rows(db, case.session)
            status = {r[0]: r[5].get("status") for r in rows if r[4] == "tool"}
            return len(rows) == n and all(status.get(k) == v for k, v in case.final.items())

        return check

    await _until(settled(case.rows), "the fixture's rows")
    rows = _rows(db, case.session)
    assert [r[1] for r in rows] == list(range(case.rows))  # dense sequences
    kinds = [r[4] for r in rows]
    assert kinds[0] == "user" and "assistant" in kinds and "tool" in kinds

    # 2. lines appended while it runs add rows
    with transcript.open("ab") as f:
        f.write((FIXTURES / FIXTURE_DIR[case.source.name] / "appended.jsonl.txt").read_bytes())
    total = case.rows + case.appended_rows
    await _until(lambda: len(_rows(db, case.session)) == total, "the appended rows")
    stop.set()
    await asyncio.wait_for(task, 10)
    pushed = await aredis.xlen(entries)
    before = _rows(db, case.session)

    # 3. a restarted connector pushes nothing twice: only the line added since
    stop2 = asyncio.Event()
    t2 = Tailer(case.source, root, state, producer, poll=0.05)
    task2 = asyncio.create_task(t2.run(stop2))
    with transcript.open("ab") as f:
        f.write(_user_line(case, "one more thing"))
    await _until(lambda: len(_rows(db, case.session)) == total + 1, "the row added after restart")
    stop2.set()
    await asyncio.wait_for(task2, 10)
    assert await aredis.xlen(entries) == pushed + 1
    after = _rows(db, case.session)
    assert after[:-1] == before  # same rows, same revisions and change numbers
    assert (after[-1][4], after[-1][5]["text"]) == ("user", "one more thing")


async def test_rowcast_connect_command(
    writer: Settings, tmp_path: Path, redis_url: str, prefix: str, aredis: Redis
) -> None:
    """`rowcast connect codex --dir` as a process: rows arrive, SIGTERM stops it (exit
    0), and a second run resumes where the first stopped."""
    assert writer.database_url is not None
    db = writer.database_url
    root = tmp_path / "sessions"
    transcript = _copy(CODEX, root)
    env = {
        **os.environ,
        "ROWCAST_REDIS_URL": redis_url,
        "ROWCAST_PREFIX": prefix,
        "ROWCAST_DATA_DIR": str(tmp_path / "data"),
    }
    env.pop("ROWCAST_DATABASE_URL", None)
    cmd = [ROWCAST, "connect", "codex", "--dir", str(root)]
    entries = Keys(prefix).entries(0)

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    proc = start()
    try:
        await _until(lambda: len(_rows(db, CODEX.session)) == CODEX.rows, "rows from the command")
        await _until(
            lambda: any((tmp_path / "data" / "connectors").glob("codex-*.json")), "its state file"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    pushed = await aredis.xlen(entries)

    proc = start()
    try:
        with transcript.open("ab") as f:
            f.write(_user_line(CODEX, "and again"))
        await _until(lambda: len(_rows(db, CODEX.session)) == CODEX.rows + 1, "the new row")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert await aredis.xlen(entries) == pushed + 1


def test_connect_without_urls_or_running_up_is_a_config_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROWCAST_")}
    env["ROWCAST_DATA_DIR"] = str(tmp_path / "nothing-here")
    res = subprocess.run(
        [ROWCAST, "connect", "claude-code", "--dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1
    assert "no `rowcast up` is running" in res.stderr
