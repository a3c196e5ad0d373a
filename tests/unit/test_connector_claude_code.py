"""Claude Code transcripts → rows: the pure mapping, on fixtures written from the
documented format (tests/fixtures/claude_code)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from rowcast.producers.connectors import claude_code
from rowcast.producers.connectors.row import RowOp

FIXTURES = Path(__file__).parent.parent / "fixtures" / "claude_code"
SESSION = "8f3c1a2e-4b5d-4e6f-9a7b-1c2d3e4f5a6b"
TRANSCRIPT = FIXTURES / "-home-dev-calc" / f"{SESSION}.jsonl"


def feed_file(path: Path, mapper: Any = None) -> tuple[list[RowOp], int]:
    """Every op of a file, in order (malformed lines skipped and counted)."""
    mapper = mapper or claude_code.Mapper()
    ops: list[RowOp] = []
    bad = 0
    offset = 0
    for raw in path.read_bytes().splitlines(keepends=True):
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            bad += 1
        else:
            ops.extend(mapper.feed(record, offset))
        offset += len(raw)
    return ops, bad


def apply(ops: list[RowOp]) -> dict[str, tuple[str, dict[str, Any], int]]:
    """What the writer makes of the ops: row -> (kind, body, revision), in sequence order."""
    rows: dict[str, tuple[str, dict[str, Any], int]] = {}
    for op in ops:
        if op.row not in rows:
            rows[op.row] = (op.kind, op.body, 0)
        elif op.op == "upsert":
            rows[op.row] = (op.kind, op.body, rows[op.row][2] + 1)
    return rows


U1 = "11111111-0000-4000-8000-000000000001"
A1 = "22222222-0000-4000-8000-000000000001"
A2 = "22222222-0000-4000-8000-000000000002"
A5 = "22222222-0000-4000-8000-000000000005"
SYS = "33333333-0000-4000-8000-000000000001"


def test_fixture_becomes_the_expected_rows() -> None:
    ops, bad = feed_file(TRANSCRIPT)
    assert bad == 1  # the line cut in half
    rows = apply(ops)
    assert list(rows) == [
        U1,
        A1,
        A2,
        "toolu_01Bash",
        "toolu_02Edit",
        A5,
        SYS,
        f"summary:{A5}",
    ]
    assert rows[U1][:2] == (
        "user",
        {"text": "The test for divide() fails, can you fix it?", "ts": "2026-08-10T12:00:00.100Z"},
    )
    assert rows[A1][0] == "thinking"
    assert rows[A1][1]["text"] == "Run the failing test first to see the error."
    assert rows[A2][0] == "assistant"
    assert rows[A2][1]["text"] == "Let me run the tests first."
    assert rows[A2][1]["model"] == "claude-sonnet-4-5-20250929"

    kind, bash, revision = rows["toolu_01Bash"]
    assert kind == "tool"
    assert bash["name"] == "Bash"
    assert bash["input"] == {
        "command": "pytest -q tests/test_calc.py",
        "description": "Run the calc tests",
    }
    assert bash["status"] == "failed"  # is_error: true
    assert "ZeroDivisionError" in bash["output"]
    assert revision == 2  # pending -> running -> failed

    edit = rows["toolu_02Edit"][1]
    assert edit["name"] == "Edit"
    assert edit["status"] == "completed"
    assert edit["output"] == "The file /home/dev/calc/calc.py has been updated."
    assert edit["input"]["file_path"] == "/home/dev/calc/calc.py"

    assert rows[SYS][:2] == (
        "system",
        {
            "text": "Conversation compacted",
            "subtype": "compact_boundary",
            "ts": "2026-08-10T12:00:10.000Z",
        },
    )
    assert rows[f"summary:{A5}"][:2] == ("summary", {"text": "Fix divide() by zero handling"})


def test_tool_rows_move_from_pending_to_running_to_done() -> None:
    ops, _ = feed_file(TRANSCRIPT)
    bash = [op for op in ops if op.row == "toolu_01Bash"]
    assert [op.op for op in bash] == ["upsert", "upsert", "upsert"]
    assert [op.body["status"] for op in bash] == ["pending", "running", "failed"]
    assert bash[1].body["output"] == "collecting ..."
    # Immutable records are appends (a re-read is a harmless duplicate).
    assert {op.op for op in ops if op.kind in ("user", "assistant", "thinking", "system")} == {
        "append"
    }


def test_row_ids_are_the_records_own_ids_so_a_reread_maps_identically() -> None:
    first, _ = feed_file(TRANSCRIPT)
    second, _ = feed_file(TRANSCRIPT)
    assert [(o.op, o.row, o.kind, o.body) for o in first] == [
        (o.op, o.row, o.kind, o.body) for o in second
    ]
    assert len({o.row for o in first if o.op == "append"}) == len(
        [o for o in first if o.op == "append"]
    )


def test_unknown_record_types_are_skipped_with_a_debug_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="rowcast.producers.connectors.claude_code")
    m = claude_code.Mapper()
    assert m.feed({"type": "hologram-snapshot", "uuid": "x"}, 0) == []
    assert "unknown type 'hologram-snapshot'" in caplog.text
    # bookkeeping lines are skipped quietly
    caplog.clear()
    assert m.feed({"type": "file-history-snapshot", "messageId": "m"}, 0) == []
    assert m.feed({"type": "queue-operation", "operation": "enqueue"}, 0) == []
    assert caplog.text == ""


def test_a_result_after_a_restart_keeps_the_calls_name_and_input() -> None:
    """The mapper's pending calls are part of its snapshot (saved with the offset)."""
    m = claude_code.Mapper()
    use = {
        "type": "assistant",
        "uuid": "a",
        "message": {
            "content": [
                {"type": "tool_use", "id": "toolu_9", "name": "Read", "input": {"file_path": "x"}}
            ]
        },
    }
    m.feed(use, 0)
    restored = claude_code.Mapper(orjson.loads(orjson.dumps(m.snapshot())))
    result = {
        "type": "user",
        "uuid": "u",
        "message": {
            "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "hi"}]
        },
    }
    (op,) = restored.feed(result, 100)
    assert op == RowOp(
        "upsert",
        "toolu_9",
        "tool",
        {"name": "Read", "input": {"file_path": "x"}, "status": "completed", "output": "hi"},
    )
    assert restored.pending == {}


def test_odd_shapes_never_raise_past_the_mapper_boundary() -> None:
    m = claude_code.Mapper()
    assert m.feed({"type": "user"}, 0) == []
    assert m.feed({"type": "user", "uuid": "u", "message": "not an object"}, 0) == []
    assert m.feed({"type": "assistant", "uuid": "a", "message": {"content": 42}}, 0) == []
    assert (
        m.feed({"type": "user", "uuid": "u", "isMeta": True, "message": {"content": "caveat"}}, 0)
        == []
    )
    assert m.feed({"type": "system", "uuid": "s", "subtype": "turn_duration"}, 0) == []
    with pytest.raises(ValueError):  # reported and skipped by the tailer
        m.feed({"type": "user", "uuid": "u", "message": {"content": [{"type": "tool_result"}]}}, 0)


def test_streaming_lines_without_uuid_become_upserts_of_the_message() -> None:
    m = claude_code.Mapper()
    a = m.feed(
        {"type": "assistant", "message": {"id": "msg_1", "content": "work", "stop_reason": None}}, 0
    )
    b = m.feed(
        {
            "type": "assistant",
            "message": {"id": "msg_1", "content": "working on it", "stop_reason": "end_turn"},
        },
        50,
    )
    assert [(o.op, o.row, o.body["text"], o.body["streaming"]) for o in a + b] == [
        ("upsert", "msg_1", "work", True),
        ("upsert", "msg_1", "working on it", False),
    ]


def test_long_outputs_are_clipped() -> None:
    m = claude_code.Mapper()
    m.feed(
        {
            "type": "assistant",
            "uuid": "a",
            "message": {
                "content": [
                    {"type": "tool_use", "id": "t", "name": "Bash", "input": {"command": "yes"}}
                ]
            },
        },
        0,
    )
    (op,) = m.feed(
        {
            "type": "user",
            "uuid": "u",
            "message": {
                "content": [{"type": "tool_result", "tool_use_id": "t", "content": "y\n" * 100_000}]
            },
        },
        1,
    )
    assert op.body["truncated"] is True
    assert len(op.body["output"]) < 40_000


def test_session_ids_from_paths(tmp_path: Path) -> None:
    root = tmp_path
    assert (
        claude_code.session_of(root / "-home-x" / f"{SESSION}.jsonl", root)
        == f"claude-code:{SESSION}"
    )
    sub = root / "-home-x" / SESSION / "subagents" / "agent-a1b2.jsonl"
    assert claude_code.session_of(sub, root) == f"claude-code:{SESSION}:agent-a1b2"
    assert (
        claude_code.session_of(root / "-home-x" / SESSION / "tool-results" / "r.jsonl", root)
        is None
    )
    assert claude_code.session_of(root / "notes.txt", root) is None
