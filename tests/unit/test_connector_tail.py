"""The file follower: complete lines only, offsets saved after the push, new files
and appended lines followed, malformed lines reported and skipped, Redis outages
waited out. A fake producer records what would be pushed."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import orjson
import pytest

from rowcast.contract.entry import Entry
from rowcast.contract.errors import Unavailable
from rowcast.producers.connectors import claude_code, codex
from rowcast.producers.connectors.tail import Tailer, state_path

FIXTURES = Path(__file__).parent.parent / "fixtures"
CC_SESSION = "8f3c1a2e-4b5d-4e6f-9a7b-1c2d3e4f5a6b"


class FakeProducer:
    max_body = 1 << 20

    def __init__(self, failures: int = 0) -> None:
        self.pushed: list[Entry] = []
        self.failures = failures

    async def push_many(self, entries: list[Entry]) -> list[str]:
        if self.failures:
            self.failures -= 1
            raise Unavailable("Redis: connection refused")
        self.pushed.extend(entries)
        return [str(i) for i in range(len(entries))]


def _tailer(root: Path, state: Path, producer: FakeProducer, source=claude_code.SOURCE) -> Tailer:
    return Tailer(source, root, state, producer, poll=0.01)  # type: ignore[arg-type]


def _line(**record: object) -> bytes:
    return orjson.dumps(record) + b"\n"


def _user(uuid: str, text: str) -> bytes:
    return _line(type="user", uuid=uuid, message={"role": "user", "content": text})


@pytest.fixture
def claude_root(tmp_path: Path) -> Path:
    root = tmp_path / "projects"
    shutil.copytree(FIXTURES / "claude_code" / "-home-dev-calc", root / "-home-dev-calc")
    return root


async def test_reads_fixture_then_follows_appends_and_new_files(
    claude_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    p = FakeProducer()
    t = _tailer(claude_root, tmp_path / "state.json", p)
    await t.poll_once()
    assert {e.session for e in p.pushed} == {f"claude-code:{CC_SESSION}"}
    assert len(p.pushed) == 11  # 8 rows; the tool rows upserted 2 and 3 times
    assert t.stats.malformed == 1
    assert f"{CC_SESSION}.jsonl:15: skipped a line that is not JSON" in caplog.text

    transcript = claude_root / "-home-dev-calc" / f"{CC_SESSION}.jsonl"
    with transcript.open("ab") as f:
        f.write((FIXTURES / "claude_code" / "appended.jsonl.txt").read_bytes())
    new = claude_root / "-home-other" / "aaaaaaaa-0000-4000-8000-000000000000.jsonl"
    new.parent.mkdir()
    new.write_bytes(_user("n1", "hello from another project"))
    before = len(p.pushed)
    await t.poll_once()
    added = p.pushed[before:]
    assert [(e.session.split(":")[1][:8], e.row) for e in added if e.kind == "user"] == [
        ("8f3c1a2e", "11111111-0000-4000-8000-000000000004"),
        ("aaaaaaaa", "n1"),
    ]
    assert await t.poll_once() == 0  # nothing new


async def test_a_restart_resumes_from_the_saved_offsets(claude_root: Path, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    p1 = FakeProducer()
    t1 = _tailer(claude_root, state, p1)
    await t1.poll_once()
    assert p1.pushed
    p2 = FakeProducer()
    t2 = _tailer(claude_root, state, p2)
    t2.load()
    assert await t2.poll_once() == 0
    assert p2.pushed == []
    # A call pending at the restart still completes with its name (mapper state persisted).
    transcript = claude_root / "-home-dev-calc" / f"{CC_SESSION}.jsonl"
    with transcript.open("ab") as f:
        use = {"type": "tool_use", "id": "toolu_9", "name": "Grep", "input": {"pattern": "x"}}
        f.write(_line(type="assistant", uuid="a9", message={"content": [use]}))
    await t2.poll_once()
    p3 = FakeProducer()
    t3 = _tailer(claude_root, state, p3)
    t3.load()
    with transcript.open("ab") as f:
        result = {"type": "tool_result", "tool_use_id": "toolu_9", "content": "1 match"}
        f.write(_line(type="user", uuid="u9", message={"content": [result]}))
    await t3.poll_once()
    (done,) = p3.pushed
    body = orjson.loads(done.body)
    assert (done.row, body["name"], body["status"]) == ("toolu_9", "Grep", "completed")


async def test_a_line_still_being_written_waits_for_its_newline(tmp_path: Path) -> None:
    root = tmp_path / "projects"
    f = root / "p" / "bbbbbbbb-0000-4000-8000-000000000000.jsonl"
    f.parent.mkdir(parents=True)
    whole = _user("u1", "first")
    f.write_bytes(whole[:-10])
    p = FakeProducer()
    t = _tailer(root, tmp_path / "s.json", p)
    assert await t.poll_once() == 0
    with f.open("ab") as out:
        out.write(whole[-10:])
    assert await t.poll_once() == 1
    assert p.pushed[0].row == "u1"


async def test_a_truncated_or_replaced_file_is_read_again(tmp_path: Path) -> None:
    root = tmp_path / "projects"
    f = root / "p" / "cccccccc-0000-4000-8000-000000000000.jsonl"
    f.parent.mkdir(parents=True)
    f.write_bytes(_user("u1", "one") + _user("u2", "two"))
    p = FakeProducer()
    t = _tailer(root, tmp_path / "s.json", p)
    await t.poll_once()
    f.write_bytes(_user("u3", "three"))  # shorter: truncated and rewritten
    await t.poll_once()
    assert [e.row for e in p.pushed] == ["u1", "u2", "u3"]


async def test_redis_outage_is_waited_out_without_losing_lines(
    claude_root: Path, tmp_path: Path
) -> None:
    p = FakeProducer(failures=2)
    t = _tailer(claude_root, tmp_path / "s.json", p)
    await t.poll_once(asyncio.Event())
    assert len(p.pushed) == 11


async def test_stopping_during_an_outage_marks_nothing_as_read(
    claude_root: Path, tmp_path: Path
) -> None:
    state = tmp_path / "s.json"
    t = _tailer(claude_root, state, FakeProducer(failures=10**6))
    stop = asyncio.Event()
    task = asyncio.create_task(t.poll_once(stop))
    await asyncio.sleep(0.3)
    stop.set()
    assert await asyncio.wait_for(task, 10) == 0
    p2 = FakeProducer()
    t2 = _tailer(claude_root, state, p2)
    t2.load()
    await t2.poll_once()
    assert len(p2.pushed) == 11


async def test_run_follows_until_stopped(tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    src = FIXTURES / "codex" / "2026"
    shutil.copytree(src, root / "2026")
    p = FakeProducer()
    t = _tailer(root, tmp_path / "s.json", p, source=codex.SOURCE)
    stop = asyncio.Event()
    task = asyncio.create_task(t.run(stop))
    for _ in range(500):
        if p.pushed:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert {e.session for e in p.pushed} == {"codex:0199a3c4-7d1e-7b2a-9c3d-4e5f6a7b8c9d"}


async def test_one_follower_per_state_file(tmp_path: Path) -> None:
    from rowcast.contract.errors import ConfigError

    root = tmp_path / "r"
    root.mkdir()
    t1 = _tailer(root, tmp_path / "s.json", FakeProducer())
    t2 = _tailer(root, tmp_path / "s.json", FakeProducer())
    with (
        t1.locked(),
        pytest.raises(ConfigError, match="another `rowcast connect claude-code`"),
        t2.locked(),
    ):
        pass


async def test_a_huge_line_is_skipped_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    root = tmp_path / "projects"
    f = root / "p" / "dddddddd-0000-4000-8000-000000000000.jsonl"
    f.parent.mkdir(parents=True)
    f.write_bytes(_user("big", "x" * 5000) + _user("small", "ok"))
    p = FakeProducer()
    t = Tailer(claude_code.SOURCE, root, tmp_path / "s.json", p, chunk=512, max_line=1024)  # type: ignore[arg-type]
    for _ in range(5):
        await t.poll_once()
    assert [e.row for e in p.pushed] == ["small"]
    assert "skipped a line of" in caplog.text


def test_state_path_is_per_source_and_folder(tmp_path: Path) -> None:
    a = state_path(tmp_path, "codex", Path("/x/sessions"))
    b = state_path(tmp_path, "codex", Path("/y/sessions"))
    c = state_path(tmp_path, "claude-code", Path("/x/sessions"))
    assert len({a, b, c}) == 3
    assert a.parent == tmp_path / "connectors"
