"""Codex rollouts → rows: the pure mapping, on fixtures written from the documented
format (tests/fixtures/codex)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from rowcast.producers.connectors import codex
from rowcast.producers.connectors.row import RowOp

FIXTURES = Path(__file__).parent.parent / "fixtures" / "codex"
SESSION = "0199a3c4-7d1e-7b2a-9c3d-4e5f6a7b8c9d"
ROLLOUT = FIXTURES / "2026" / "08" / "10" / f"rollout-2026-08-10T13-02-51-{SESSION}.jsonl"


def feed_file(path: Path, mapper: Any = None, start: int = 0) -> tuple[list[RowOp], int]:
    mapper = mapper or codex.Mapper()
    ops: list[RowOp] = []
    bad = 0
    offset = start
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
    rows: dict[str, tuple[str, dict[str, Any], int]] = {}
    for op in ops:
        if op.row not in rows:
            rows[op.row] = (op.kind, op.body, 0)
        elif op.op == "upsert":
            rows[op.row] = (op.kind, op.body, rows[op.row][2] + 1)
    return rows


def offset_of(path: Path, needle: str) -> str:
    """The row id of the line containing ``needle``: its byte offset."""
    offset = 0
    for raw in path.read_bytes().splitlines(keepends=True):
        if needle.encode() in raw:
            return f"@{offset}"
        offset += len(raw)
    raise AssertionError(needle)


def test_fixture_becomes_the_expected_rows() -> None:
    ops, bad = feed_file(ROLLOUT)
    assert bad == 1
    rows = apply(ops)
    user = offset_of(ROLLOUT, '"text":"Why does the cart total')
    thinking = offset_of(ROLLOUT, '"type":"reasoning"')
    answer = offset_of(ROLLOUT, '"role":"assistant"')
    assert list(rows) == [user, thinking, "call_A1", "call_B2", "call_C3", answer]

    assert rows[user][:2] == (
        "user",
        {"text": "Why does the cart total ignore discounts?", "ts": "2026-08-10T13:02:58.010Z"},
    )
    assert rows[thinking][0] == "thinking"
    assert rows[thinking][1]["text"].startswith("**Looking for the total computation**")

    kind, a1, revision = rows["call_A1"]
    assert kind == "tool"
    assert a1["name"] == "shell"
    assert a1["input"] == {
        "command": ["bash", "-lc", "rg -n 'def total' shop/"],
        "workdir": "/home/dev/shop",
    }
    assert a1["status"] == "completed"
    assert a1["exit_code"] == 0
    assert a1["output"] == "shop/cart.py:41:    def total(self):\n"
    assert revision == 2  # pending -> running -> completed; the output mirror is ignored

    b2 = rows["call_B2"][1]
    assert b2["name"] == "apply_patch"
    assert b2["input"].startswith("*** Begin Patch")
    assert (b2["status"], b2["output"]) == (
        "completed",
        "Success. Updated the following files:\nM shop/cart.py\n",
    )

    c3 = rows["call_C3"][1]
    assert (c3["status"], c3["output"]) == ("failed", "1 failed, 11 passed")

    assert rows[answer][0] == "assistant"
    assert rows[answer][1]["model"] == "gpt-5-codex"
    assert rows[answer][1]["text"].startswith("total() summed the item prices")


def test_scaffolding_and_mirrors_are_not_rows() -> None:
    ops, _ = feed_file(ROLLOUT)
    texts = [op.body.get("text", "") for op in ops]
    assert not any("<environment_context>" in t or "permissions instructions" in t for t in texts)
    users = [op for op in ops if op.kind == "user"]
    assert len(users) == 1  # the event_msg user_message mirror is not a second row
    assert len([op for op in ops if op.kind == "assistant"]) == 1


def test_appended_lines_continue_the_same_calls(tmp_path: Path) -> None:
    m = codex.Mapper()
    first, _ = feed_file(ROLLOUT, m)
    more, bad = feed_file(FIXTURES / "appended.jsonl.txt", m, start=ROLLOUT.stat().st_size)
    assert bad == 0
    rows = apply(first + more)
    d4 = rows["call_D4"][1]
    assert (d4["status"], d4["exit_code"], d4["output"]) == ("completed", 0, "12 passed in 0.50s\n")
    assert [op.body["status"] for op in more if op.row == "call_D4"] == [
        "pending",
        "running",
        "completed",
    ]
    assert sum(1 for op in first + more if op.kind == "assistant") == 2


def test_row_ids_are_stable_across_rereads() -> None:
    a, _ = feed_file(ROLLOUT)
    b, _ = feed_file(ROLLOUT)
    assert a == b


def test_unknown_types_and_items_are_skipped_with_a_debug_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="rowcast.producers.connectors.codex")
    m = codex.Mapper()
    assert m.feed({"timestamp": "t", "type": "quantum_state", "payload": {"x": 1}}, 0) == []
    assert "unknown type 'quantum_state'" in caplog.text
    assert m.feed({"type": "response_item", "payload": {"type": "ghost_snapshot"}}, 0) == []
    assert "'ghost_snapshot'" in caplog.text
    assert m.feed({"type": "event_msg", "payload": {"type": "token_count"}}, 0) == []


def test_legacy_rollouts_without_envelope() -> None:
    m = codex.Mapper()
    assert (
        m.feed({"id": SESSION, "timestamp": "2025-05-01T10:00:00Z", "instructions": None}, 0) == []
    )
    assert m.feed({"record_type": "state"}, 80) == []
    (op,) = m.feed(
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}, 120
    )
    assert (op.op, op.row, op.kind, op.body["text"]) == ("append", "@120", "user", "hi")
    (call,) = m.feed(
        {
            "type": "function_call",
            "name": "shell",
            "arguments": '{"command":["ls"]}',
            "call_id": "c1",
        },
        200,
    )
    assert call.body["input"] == {"command": ["ls"]}
    (out,) = m.feed(
        {
            "type": "function_call_output",
            "call_id": "c1",
            "output": {"content": "a\nb", "success": True},
        },
        300,
    )
    assert (out.body["status"], out.body["output"], out.body["name"]) == (
        "completed",
        "a\nb",
        "shell",
    )


def test_a_result_without_its_call_still_becomes_a_row() -> None:
    m = codex.Mapper()
    (op,) = m.feed(
        {
            "type": "event_msg",
            "payload": {
                "type": "exec_command_end",
                "call_id": "x",
                "command": ["ls"],
                "exit_code": 2,
                "aggregated_output": "no such file",
            },
        },
        0,
    )
    assert (op.row, op.body["name"], op.body["status"], op.body["exit_code"]) == (
        "x",
        "shell",
        "failed",
        2,
    )
    with pytest.raises(ValueError):
        m.feed({"type": "response_item", "payload": {"type": "function_call", "name": "shell"}}, 0)


def test_session_ids_from_file_names(tmp_path: Path) -> None:
    assert codex.session_of(ROLLOUT, FIXTURES) == f"codex:{SESSION}"
    assert codex.session_of(tmp_path / "rollout-2025-01-01T00-00-00-odd.jsonl", tmp_path) == (
        "codex:rollout-2025-01-01T00-00-00-odd"
    )
    assert codex.session_of(tmp_path / "history.jsonl", tmp_path) is None
