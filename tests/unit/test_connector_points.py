"""One test per point of issue 13, each failing on the connectors before it
(commit e86232f). Records are real lines from tests/fixtures/real where a real
sample exists; where none was found (see tests/fixtures/README.md) the record is
built from the field names of real records, and the test says so."""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from rowcast.contract.entry import Entry
from rowcast.ops.commands import connect
from rowcast.producers.connectors import claude_code, codex
from rowcast.producers.connectors.row import SANITIZED_NOTE, TOOL_BODY_LIMIT, RowOp
from rowcast.producers.connectors.tail import Tailer

REAL = Path(__file__).parent.parent / "fixtures" / "real"
ROLLOUT_066 = REAL / "codex" / "codex-0.66.0-shell-command-apply-patch.jsonl"


def feed(mapper: Any, records: list[dict[str, Any]]) -> list[RowOp]:
    ops: list[RowOp] = []
    for i, record in enumerate(records):
        ops.extend(mapper.feed(record, 1000 * i))
    return ops


def last(ops: list[RowOp], row: str) -> RowOp:
    return [op for op in ops if op.row == row][-1]


def real_line(path: Path, needle: str) -> dict[str, Any]:
    for raw in path.read_bytes().splitlines():
        if needle.encode() in raw:
            return orjson.loads(raw)  # type: ignore[no-any-return]
    raise AssertionError(needle)


# --- Codex: failures, exit codes, durations -------------------------------------------


def _codex_call(call: str, output: Any) -> list[dict[str, Any]]:
    """A function_call and its output, with the field names of the real 0.58/0.66 lines."""
    return [
        {
            "type": "response_item",
            "payload": {
                "type": "function_call",
                "name": "shell",
                "arguments": '{"command":["bash","-lc","python hoge.py"]}',
                "call_id": call,
            },
        },
        {
            "type": "response_item",
            "payload": {"type": "function_call_output", "call_id": call, "output": output},
        },
    ]


def test_codex_plain_text_output_with_exit_code_1_is_failed_with_code_and_duration() -> None:
    call = "call_5j2yJgrbOClvto1R8nvfSoJS"  # real 0.66 lines: Exit code: 1, Wall time: 0.1
    ops = feed(
        codex.Mapper(),
        [
            real_line(ROLLOUT_066, call),
            real_line(
                ROLLOUT_066, '"output":"Exit code: 1\\nWall time: 0.1 seconds\\nOutput:\\n/opt'
            ),
        ],
    )
    body = last(ops, call).body
    assert (body["status"], body["exit_code"], body["duration_ms"]) == ("failed", 1, 100)
    assert body["output"].endswith("error: target shim binary not found\n")
    assert not body["output"].startswith("Exit code")


def test_codex_json_output_keeps_its_exit_code_and_duration() -> None:
    ok = '{"output":"done\\n","metadata":{"exit_code":0,"duration_seconds":1.5}}'
    bad = '{"output":"boom\\n","metadata":{"exit_code":2,"duration_seconds":0.25}}'
    ops = feed(codex.Mapper(), _codex_call("c1", ok) + _codex_call("c2", bad))
    assert {
        k: last(ops, "c1").body[k] for k in ("status", "exit_code", "duration_ms", "output")
    } == {"status": "completed", "exit_code": 0, "duration_ms": 1500, "output": "done\n"}
    assert (last(ops, "c2").body["status"], last(ops, "c2").body["exit_code"]) == ("failed", 2)


@pytest.mark.parametrize(
    "text",
    [  # the texts codex-rs writes for these failures (no real rollout line was found)
        "failed in sandbox MacosSeatbelt with execution error: sandbox denied exec",
        "patch rejected by user",
        "execution error: No such file or directory (os error 2)",
        '{"output":"execution error: No such file or directory (os error 2)","metadata":{}}',
    ],
)
def test_codex_error_texts_are_failures(text: str) -> None:
    ops = feed(codex.Mapper(), _codex_call("c", text))
    assert last(ops, "c").body["status"] == "failed"


def test_codex_unified_exec_header_gives_exit_code() -> None:
    # the header of 0.1xx exec_command results (field layout as in public parsers of real files)
    out = "Chunk ID: de3818\nWall time: 0.0512 seconds\nProcess exited with code 3\nOriginal token count: 4\nOutput:\nnope\n"  # noqa: E501
    body = last(feed(codex.Mapper(), _codex_call("c", out)), "c").body
    assert (body["status"], body["exit_code"], body["duration_ms"], body["output"]) == (
        "failed",
        3,
        51,
        "nope\n",
    )


def test_codex_exec_command_end_stores_exit_code_and_duration() -> None:
    # exec_command_end: field names of codex-rs's ExecCommandEndEvent (no real line found)
    call, end = (
        _codex_call("c", "mirror")[0],
        {
            "type": "event_msg",
            "payload": {
                "type": "exec_command_end",
                "call_id": "c",
                "exit_code": 1,
                "aggregated_output": "ls: x: No such file",
                "duration": {"secs": 2, "nanos": 5_000_000},
            },
        },
    )
    ops = feed(codex.Mapper(), [call, end, _codex_call("c", "mirror")[1]])
    body = last(ops, "c").body
    assert (body["status"], body["exit_code"], body["duration_ms"]) == ("failed", 1, 2005)
    assert body["output"] == "ls: x: No such file"


def test_codex_turn_aborted_is_an_interruption_row() -> None:
    # turn_aborted: {"type","turn_id","reason"} as Codex writes it (no real rollout line found)
    (op,) = codex.Mapper().feed(
        {
            "type": "event_msg",
            "payload": {"type": "turn_aborted", "turn_id": "t", "reason": "interrupted"},
        },
        77,
    )
    assert (op.op, op.row, op.kind, op.body["reason"]) == (
        "append",
        "@77",
        "interruption",
        "interrupted",
    )


def test_codex_user_rows_lose_the_ide_context_preamble() -> None:
    # the VS Code extension's preamble (marker text as public parsers of real files match it)
    text = "# Context from my IDE setup:\n\n## Active file: src/pay.ts\n\n## Open tabs:\n- pay.ts\n\n## My request for Codex:\nadd retry to charge\n"  # noqa: E501
    (op,) = codex.Mapper().feed(
        {
            "type": "response_item",
            "payload": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": text}],
            },
        },
        5,
    )
    assert op.body["text"] == "add retry to charge"


def test_codex_blank_assistant_text_and_compaction() -> None:
    m = codex.Mapper()
    blank = {
        "type": "response_item",
        "payload": {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "\n\n"}],
        },
    }
    assert m.feed(blank, 0) == []
    # `compacted` lines: {"message": summary} (RolloutItem::Compacted; no real line found)
    (op,) = m.feed({"type": "compacted", "payload": {"message": "Summary of the work so far"}}, 9)
    assert (op.row, op.kind, op.body["text"]) == ("@9", "compaction", "Summary of the work so far")


# --- Claude Code -------------------------------------------------------------------


def _cc(uuid: str, role: str, content: Any, **extra: Any) -> dict[str, Any]:
    return {
        "type": role,
        "uuid": uuid,
        "sessionId": "s-1",
        "timestamp": "2026-01-01T00:00:00Z",
        "message": {"role": role, "content": content},
        **extra,
    }


def test_claude_summary_waits_for_its_leaf_in_the_same_file() -> None:
    m = claude_code.Mapper()
    assert (
        m.feed(
            {
                "type": "summary",
                "summary": "Title",
                "leafUuid": "abcdef01-0000-4000-8000-000000000000",
            },
            0,
        )
        == []
    )
    ops = m.feed(_cc("abcdef01-0000-4000-8000-000000000000", "user", "hello"), 10)
    assert [(o.row, o.kind) for o in ops] == [
        ("summary:abcdef01-0000-4000-8000-000000000000", "summary"),
        ("abcdef01-0000-4000-8000-000000000000", "user"),
    ]


def test_claude_prompt_queued_while_busy_is_shown_at_once_and_only_once() -> None:
    m = claude_code.Mapper()
    enqueue = {
        "type": "queue-operation",
        "operation": "enqueue",
        "timestamp": "t",
        "content": "also fix the docs",
    }
    (queued,) = m.feed(enqueue, 500)
    assert (queued.op, queued.row, queued.kind, queued.body["queued"]) == (
        "upsert",
        "queued:500",
        "user",
        True,
    )
    assert m.feed({"type": "queue-operation", "operation": "dequeue", "timestamp": "t"}, 600) == []
    (delivered,) = m.feed(_cc("u-9", "user", "also fix the docs"), 700)
    assert (delivered.op, delivered.row, delivered.kind) == ("upsert", "queued:500", "user")
    assert "queued" not in delivered.body


def test_claude_compaction_summary_is_its_own_kind() -> None:
    # the isCompactSummary / isVisibleInTranscriptOnly user line of a real 2.1.36 file
    rec = real_line(
        REAL / "claude_code" / "cc-2.1.36-subagent-compaction-progress.jsonl",
        '"isCompactSummary":true',
    )
    (op,) = claude_code.Mapper().feed(rec, 0)
    assert (op.kind, op.row) == ("compaction", rec["uuid"])
    assert op.body["text"].startswith("This session is being continued")


def test_claude_blank_text_is_dropped() -> None:
    # a real assistant line of 2.1.36 whose only block is the text "\n\n"
    rec = real_line(REAL / "claude_code" / "agent-acompact-6da528.jsonl", '"text":"\\n\\n"}')
    assert rec["message"]["content"] == [{"type": "text", "text": "\n\n"}]
    assert claude_code.Mapper().feed(rec, 0) == []


def test_claude_commands_lose_their_tags_and_ansi_codes() -> None:
    # system local_command lines of 2.x (field names as in real files; no real sample found)
    m = claude_code.Mapper()
    name = {
        "type": "system",
        "subtype": "local_command",
        "uuid": "s-1",
        "content": "<command-name>/model</command-name>\n"
        "<command-message>model</command-message>\n<command-args></command-args>",
    }
    out = {
        "type": "system",
        "subtype": "local_command",
        "uuid": "s-2",
        "content": "<local-command-stdout>Set model to \u001b[1mopus\u001b[22m"
        "</local-command-stdout>",
    }
    (a,) = m.feed(name, 0)
    (b,) = m.feed(out, 1)
    assert (a.kind, a.body["text"]) == ("command", "/model")
    assert (b.kind, b.body["text"], b.body["subtype"]) == (
        "system",
        "Set model to opus",
        "command_output",
    )


def test_claude_interrupt_text_is_an_interruption_row() -> None:
    rec = real_line(
        REAL / "claude_code" / "cc-2.1.128-queue-titles-interrupt.jsonl",
        "[Request interrupted by user]",
    )
    (op,) = claude_code.Mapper().feed(rec, 0)
    assert op.kind == "interruption"


def test_claude_sidechain_flag_is_on_tool_and_thinking_rows() -> None:
    m = claude_code.Mapper()
    thinking = _cc(
        "a-1",
        "assistant",
        [{"type": "thinking", "thinking": "hmm", "signature": "x"}],
        isSidechain=True,
        agentId="a1b2",
    )
    use = _cc(
        "a-2",
        "assistant",
        [{"type": "tool_use", "id": "t1", "name": "Read", "input": {}}],
        isSidechain=True,
        agentId="a1b2",
    )
    result = _cc(
        "u-1",
        "user",
        [{"type": "tool_result", "tool_use_id": "t1", "content": "x"}],
        isSidechain=True,
        agentId="a1b2",
    )
    ops = feed(m, [thinking, use, result])
    assert all(op.body.get("sidechain") is True and op.body.get("agent") == "a1b2" for op in ops)
    assert [op.kind for op in ops] == ["thinking", "tool", "tool"]


def test_claude_task_row_links_to_its_subagent_session() -> None:
    # Agent tool result with toolUseResult.agentId (field names of Claude Code 2.1; no real sample)
    use = _cc(
        "a-1",
        "assistant",
        [
            {
                "type": "tool_use",
                "id": "t1",
                "name": "Agent",
                "input": {"description": "look", "prompt": "find it", "subagent_type": "Explore"},
            }
        ],
    )
    result = _cc(
        "u-1",
        "user",
        [
            {
                "type": "tool_result",
                "tool_use_id": "t1",
                "content": [{"type": "text", "text": "found"}],
            }
        ],
        toolUseResult={"status": "completed", "agentId": "a4f2c91", "totalDurationMs": 4200},
    )
    session = "7f2abd2d-7cfc-4447-9ddd-3ca8d14e02e9"
    use["sessionId"] = result["sessionId"] = session
    body = last(feed(claude_code.Mapper(), [use, result]), "t1").body
    assert (body["agent_id"], body["subagent"], body["duration_ms"]) == (
        "a4f2c91",
        f"claude-code:{session}:agent-a4f2c91",
        4200,
    )
    path = Path(f"/r/-p/{session}/subagents/agent-a4f2c91.jsonl")  # the subagent's own file
    assert claude_code.session_of(path, Path("/r")) == body["subagent"]


# --- bodies that jsonb or the size limit would refuse --------------------------------


class Pushed:
    max_body = 1 << 20

    def __init__(self) -> None:
        self.entries: list[Entry] = []

    async def push_many(self, entries: list[Entry]) -> list[str]:
        self.entries.extend(entries)
        return ["0"] * len(entries)


def _tail(tmp_path: Path, lines: list[bytes], **kw: Any) -> list[dict[str, Any]]:
    root = tmp_path / "projects"
    (root / "-p").mkdir(parents=True, exist_ok=True)
    (root / "-p" / "s-1.jsonl").write_bytes(b"".join(lines))
    producer = Pushed()
    tailer = Tailer(claude_code.SOURCE, root, tmp_path / "state.json", producer, **kw)  # type: ignore[arg-type]
    while asyncio.run(tailer.poll_once()):  # a poll reads about a chunk of each file
        pass
    return [{"row": e.row, "body": orjson.loads(e.body)} for e in producer.entries]


def _use(call: str, name: str, tool_input: Any) -> bytes:
    return (
        orjson.dumps(
            _cc(
                "a-" + call,
                "assistant",
                [{"type": "tool_use", "id": call, "name": name, "input": tool_input}],
            )
        )
        + b"\n"
    )


@pytest.mark.parametrize("escape", ["\\u0000", "\\ud800", "\\udfff tail"])
def test_nul_and_lone_surrogates_still_finish_the_call(tmp_path: Path, escape: str) -> None:
    result = (
        '{"type":"user","uuid":"u-1","message":{"role":"user","content":[{"type":"tool_result",'
        f'"tool_use_id":"t1","content":"bin{escape}ary"}}]}}}}\n'
    ).encode()
    pushed = _tail(tmp_path, [_use("t1", "Bash", {"command": "cat x"}), result])
    final = [p for p in pushed if p["row"] == "t1"][-1]["body"]
    assert final["status"] == "completed"
    assert final["sanitized"] == SANITIZED_NOTE
    assert "\x00" not in final["output"] and final["output"].startswith("bin")


def test_an_80_edit_multiedit_still_gives_a_tool_row(tmp_path: Path) -> None:
    edits = [
        {"old_string": f"{i}" + "a" * 8000, "new_string": f"{i}" + "b" * 8000} for i in range(80)
    ]
    result = (
        orjson.dumps(
            _cc(
                "u-1",
                "user",
                [{"type": "tool_result", "tool_use_id": "t1", "content": "Applied 80 edits"}],
            )
        )
        + b"\n"
    )
    pushed = _tail(
        tmp_path, [_use("t1", "MultiEdit", {"file_path": "/x.py", "edits": edits}), result]
    )
    bodies = [p["body"] for p in pushed if p["row"] == "t1"]
    assert [b["status"] for b in bodies] == ["pending", "completed"]
    for b in bodies:
        assert b["truncated"] is True and len(orjson.dumps(b)) <= TOOL_BODY_LIMIT
        assert len(b["input"]["edits"]) == 80 and b["input"]["file_path"] == "/x.py"


def test_a_5_mb_tool_result_is_clipped_and_completes(tmp_path: Path) -> None:
    big = "line of output\n" * (5 * 1024 * 1024 // 15)
    result = (
        orjson.dumps(
            _cc("u-1", "user", [{"type": "tool_result", "tool_use_id": "t1", "content": big}])
        )
        + b"\n"
    )
    pushed = _tail(tmp_path, [_use("t1", "Bash", {"command": "cat big"}), result])
    final = pushed[-1]["body"]
    assert (final["status"], final["truncated"]) == ("completed", True)
    assert len(orjson.dumps(final)) <= TOOL_BODY_LIMIT


# --- --since --------------------------------------------------------------------------


def test_since_skips_files_written_before_it_but_not_followed_ones(tmp_path: Path) -> None:
    root = tmp_path / "projects"
    (root / "-p").mkdir(parents=True)
    old, new = root / "-p" / "old.jsonl", root / "-p" / "new.jsonl"
    old.write_bytes(orjson.dumps(_cc("u-old", "user", "long ago")) + b"\n")
    new.write_bytes(orjson.dumps(_cc("u-new", "user", "today")) + b"\n")
    week_ago = time.time() - 7 * 86400
    os.utime(old, (week_ago, week_ago))
    producer = Pushed()
    since = time.time() - connect.duration("1d")
    tailer = Tailer(claude_code.SOURCE, root, tmp_path / "s.json", producer, since=since)  # type: ignore[arg-type]
    asyncio.run(tailer.poll_once())
    assert [e.row for e in producer.entries] == ["u-new"]
    with old.open("ab") as f:  # written to again: now it is recent, and read
        f.write(orjson.dumps(_cc("u-old2", "user", "back again")) + b"\n")
    asyncio.run(tailer.poll_once())
    assert [e.row for e in producer.entries] == ["u-new", "u-old", "u-old2"]


def test_since_durations() -> None:
    assert connect.duration("30d") == 30 * 86400
    assert connect.duration("1d12h") == 36 * 3600
    assert connect.duration("90m") == 5400
    with pytest.raises(argparse.ArgumentTypeError):
        connect.duration("yesterday")


def test_claude_agent_progress_links_the_running_task_to_its_subagent() -> None:
    # progress line of a running Task: parentToolUseID + data.agentId (field names of
    # Claude Code 2.1 progress lines; no real sample was found)
    session = "7f2abd2d-7cfc-4447-9ddd-3ca8d14e02e9"
    use = _cc("a-1", "assistant", [{"type": "tool_use", "id": "t1", "name": "Task", "input": {}}])
    data = {"type": "agent_progress", "agentId": "a22b0b39"}
    progress = {"type": "progress", "uuid": "p-1", "sessionId": session, "parentToolUseID": "t1",
                "toolUseID": "agent_msg_1", "data": data}  # fmt: skip
    again = {**progress, "uuid": "p-2"}
    result = _cc("u-1", "user", [{"type": "tool_result", "tool_use_id": "t1", "content": "done"}])
    ops = feed(claude_code.Mapper(), [use, progress, again, result])
    assert [op.body["status"] for op in ops] == ["pending", "running", "completed"]
    link = f"claude-code:{session}:agent-a22b0b39"
    assert all(op.body["subagent"] == link for op in ops[1:])


def test_claude_command_parsing_keeps_prose_that_quotes_tags() -> None:
    m = claude_code.Mapper()
    (prose,) = m.feed(_cc("u-1", "user", "why does <command-name>/x</command-name> show up?"), 0)
    assert (prose.kind, prose.body["text"]) == (
        "user",
        "why does <command-name>/x</command-name> show up?",
    )
    (bang,) = m.feed(_cc("u-2", "user", "<bash-input>ls -la</bash-input>"), 1)
    assert (bang.kind, bang.body["text"]) == ("command", "! ls -la")
    caveat = "<local-command-caveat>Caveat: the messages below …</local-command-caveat>"
    assert m.feed(_cc("u-3", "user", caveat), 2) == []
    assert m.feed(_cc("u-4", "user", "<local-command-stdout></local-command-stdout>"), 3) == []
