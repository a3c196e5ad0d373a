"""Real transcripts through the real follower, Redis, writer and PostgreSQL: each
fixture ends as the row list checked in beside it; appending a fixture line by
line while the connector runs, or restarting the connector at random lines, ends
in exactly the rows of a bulk import; bodies that jsonb or the size limit would
refuse still give tool rows that reach their final status."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
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
from rowcast.producers.connectors.row import TOOL_BODY_LIMIT
from rowcast.producers.connectors.tail import Source, Tailer
from rowcast.producers.producer import Producer
from tests.unit.test_connector_real import MANIFEST, REAL, compare, expected

SOURCES: dict[str, Source] = {"claude-code": claude_code.SOURCE, "codex": codex.SOURCE}
Row = tuple[str, int, str, dict[str, Any]]


def _rows(db_url: str, session: str) -> list[Row]:
    with psycopg.connect(db_url) as c:
        return c.execute(
            "SELECT row_id, sequence, kind, body FROM rowcast.rows"
            " WHERE session_id = %s ORDER BY sequence",
            (session,),
        ).fetchall()


async def _until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _settled(db: str, session: str, want: list[dict[str, Any]]) -> Callable[[], bool]:
    """The session has its expected rows, each tool row at its expected status."""
    final = {w["row"]: w["status"] for w in want if "status" in w}

    def check() -> bool:
        rows = _rows(db, session)
        status = {r[0]: r[3].get("status") for r in rows}
        return len(rows) == len(want) and all(status.get(k) == v for k, v in final.items())

    return check


@pytest.fixture
async def writer(redis_url: str, db_url: str, prefix: str) -> AsyncIterator[Settings]:
    settings = Settings(redis_url=redis_url, database_url=db_url, prefix=prefix)
    stop = asyncio.Event()
    task = asyncio.create_task(run_writers(settings, [0], stop))
    yield settings
    stop.set()
    await asyncio.wait_for(task, 30)


class Follower:
    """A Tailer of one source running in the background, restartable."""

    def __init__(self, source: Source, root: Path, state: Path, producer: Producer) -> None:
        self.source, self.root, self.state, self.producer = source, root, state, producer
        self.stop = asyncio.Event()
        self.tailer = Tailer(source, root, state, producer, poll=0.02)
        self.task = asyncio.create_task(self.tailer.run(self.stop))

    async def caught_up(self, path: Path) -> None:
        key = str(path.relative_to(self.root))
        size = path.stat().st_size

        def check() -> bool:
            fs = self.tailer.files.get(key)
            return fs is not None and fs.offset == size

        await _until(check, f"the follower to read {key}")

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)


async def test_every_real_fixture_ends_as_its_expected_rows(
    writer: Settings, tmp_path: Path, aredis: Redis
) -> None:
    db = writer.database_url
    assert db is not None
    producer = Producer(aredis, prefix=writer.prefix)
    followers = []
    for name, source in SOURCES.items():
        root = tmp_path / name
        for case in (c for c in MANIFEST if c["source"] == name):
            target = root / case["target"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REAL / case["fixture"], target)
        followers.append(Follower(source, root, tmp_path / f"{name}.json", producer))
    try:
        for case in MANIFEST:
            want = expected(case)
            await _until(_settled(db, case["session"], want), case["fixture"])
            rows = _rows(db, case["session"])
            assert [r[1] for r in rows] == list(range(len(want)))
            compare([(r[0], r[2], r[3]) for r in rows], want)
    finally:
        for f in followers:
            await f.close()


CHURN = [c for c in MANIFEST if "2.0.28" in c["fixture"] or "0.66.0" in c["fixture"]]


@pytest.mark.parametrize("case", CHURN, ids=[c["source"] for c in CHURN])
async def test_line_by_line_and_restarts_end_in_the_rows_of_a_bulk_import(
    case: dict[str, str], writer: Settings, tmp_path: Path, aredis: Redis
) -> None:
    """Three copies of one fixture, as three sessions: copied whole; appended line by
    line (some lines in two writes) while the connector runs; appended while the
    connector is stopped and restarted at random lines."""
    db = writer.database_url
    assert db is not None
    seed = int(os.environ.get("ROWCAST_FAULT_SEED") or random.randrange(1 << 30))
    print(f"seed {seed}")
    rnd = random.Random(seed)
    source = SOURCES[case["source"]]
    lines = (REAL / case["fixture"]).read_bytes().splitlines(keepends=True)
    root = tmp_path / "root"
    target = root / case["target"]
    stem = target.stem
    # a new file name (so a new session id) per copy: the same rows in three sessions
    paths = [target.with_name(stem[:-1] + str(i) + target.suffix) for i in range(3)]
    sessions = [source.session_of(p, root) for p in paths]
    assert len(set(sessions)) == 3
    target.parent.mkdir(parents=True)
    paths[0].write_bytes(b"".join(lines))
    paths[1].touch()
    paths[2].touch()
    producer = Producer(aredis, prefix=writer.prefix)
    state = tmp_path / "state.json"
    follower = Follower(source, root, state, producer)
    try:
        with paths[1].open("ab") as live:
            for line in lines:
                if rnd.random() < 0.3:  # half a line first: it must wait for its end
                    cut = rnd.randrange(1, len(line))
                    live.write(line[:cut])
                    live.flush()
                    await asyncio.sleep(rnd.random() * 0.03)
                    line = line[cut:]
                live.write(line)
                live.flush()
                await asyncio.sleep(rnd.random() * 0.03)
        await follower.caught_up(paths[1])
        restarts = sorted(rnd.sample(range(1, len(lines)), min(5, len(lines) - 1)))
        done = 0
        for at in [*restarts, len(lines)]:
            with paths[2].open("ab") as f:
                f.write(b"".join(lines[done:at]))
            done = at
            await follower.caught_up(paths[2])
            await follower.close()
            follower = Follower(source, root, state, producer)  # a new mapper from the state
        await follower.caught_up(paths[0])
    finally:
        await follower.close()
    want = expected(case)
    for s in sessions:
        await _until(_settled(db, str(s), want), f"the rows of {s}")
    bulk, live_rows, restarted = (_rows(db, str(s)) for s in sessions)
    assert live_rows == bulk
    assert restarted == bulk
    compare([(r[0], r[2], r[3]) for r in bulk], want)


def _cc(uuid: str, content: Any, role: str = "user") -> bytes:
    message = {"role": role, "content": content}
    return orjson.dumps({"type": role, "uuid": uuid, "sessionId": "s", "message": message}) + b"\n"


def _use(call: str, name: str, tool_input: Any) -> bytes:
    return _cc(
        "a-" + call,
        [{"type": "tool_use", "id": call, "name": name, "input": tool_input}],
        "assistant",
    )


def _result(call: str, content: str) -> bytes:
    return _cc("u-" + call, [{"type": "tool_result", "tool_use_id": call, "content": content}])


async def test_oversized_and_jsonb_hostile_calls_reach_their_final_status(
    writer: Settings, tmp_path: Path, aredis: Redis
) -> None:
    db = writer.database_url
    assert db is not None
    session = "claude-code:connectors-hostile"
    edits = [{"old_string": "a" * 9000, "new_string": "b" * 9000} for _ in range(80)]
    big = "x" * 79 + "\n"
    lines = [
        _use("multi", "MultiEdit", {"file_path": "/f.py", "edits": edits}),
        _use("big", "Bash", {"command": "cat"}),
        _use("nul", "Read", {"file_path": "/b"}),
        _use("sur", "Read", {"file_path": "/c"}),
        _result("multi", "80 edits applied"),
        _result("big", big * (5 * 1024 * 1024 // 80)),
        b'{"type":"user","uuid":"u3","message":{"role":"user","content":[{"type":"tool_result",'
        b'"tool_use_id":"nul","content":"a\\u0000b"}]}}\n',
        b'{"type":"user","uuid":"u4","message":{"role":"user","content":[{"type":"tool_result",'
        b'"tool_use_id":"sur","content":"a\\ud83db","is_error":true}]}}\n',
    ]
    root = tmp_path / "projects"
    (root / "-p").mkdir(parents=True)
    (root / "-p" / "connectors-hostile.jsonl").write_bytes(b"".join(lines))
    follower = Follower(
        claude_code.SOURCE, root, tmp_path / "s.json", Producer(aredis, prefix=writer.prefix)
    )
    final = {"multi": "completed", "big": "completed", "nul": "completed", "sur": "failed"}

    def done() -> bool:
        return {r[0]: r[3].get("status") for r in _rows(db, session)} == final

    try:
        await _until(done, "the four calls to finish")
    finally:
        await follower.close()
    rows = {r[0]: r[3] for r in _rows(db, session)}
    assert rows["multi"]["truncated"] is True and len(rows["multi"]["input"]["edits"]) == 80
    assert rows["big"]["truncated"] is True
    assert all(len(orjson.dumps(b)) <= TOOL_BODY_LIMIT for b in rows.values())
    assert rows["nul"]["output"] == "ab" and "sanitized" in rows["nul"]
    assert rows["sur"]["output"] == "a\ufffdb" and "sanitized" in rows["sur"]
    assert await aredis.xlen(Keys(writer.prefix).dead(0)) == 0


async def test_connect_since_skips_old_files_and_refuses_a_bad_duration(
    writer: Settings, tmp_path: Path, redis_url: str
) -> None:
    """`rowcast connect codex --since 2d` as a process: a rollout last written a week
    ago stays out, a recent one comes in; a bad duration is exit 2 with one line."""
    db = writer.database_url
    assert db is not None
    rowcast = str(Path(sys.executable).with_name("rowcast"))
    root = tmp_path / "sessions"
    old, new = (c for c in MANIFEST if "0.58.0" in c["fixture"] or "0.135.0" in c["fixture"])
    for case in (old, new):
        target = root / case["target"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REAL / case["fixture"], target)
    week_ago = time.time() - 7 * 86400
    os.utime(root / old["target"], (week_ago, week_ago))
    env = {**os.environ, "ROWCAST_REDIS_URL": redis_url, "ROWCAST_PREFIX": writer.prefix,
           "ROWCAST_DATA_DIR": str(tmp_path / "data")}  # fmt: skip
    env.pop("ROWCAST_DATABASE_URL", None)

    bad = subprocess.run([rowcast, "connect", "codex", "--dir", str(root), "--since", "yesterday"],
                         env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "duration" in bad.stderr

    cmd = [rowcast, "connect", "codex", "--dir", str(root), "--since", "2d"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        await _until(_settled(db, new["session"], expected(new)), "the recent rollout's rows")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert _rows(db, old["session"]) == []
