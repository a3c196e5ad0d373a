"""Real transcripts (tests/fixtures/real, origins in tests/fixtures/README.md) →
rows, by the pure mappers: each file gives the row list checked in beside it
(written by reading the file, not by running this code), and a mapper restored
from its snapshot at any line maps the rest exactly as one that never stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rowcast.producers.connectors import claude_code, codex
from rowcast.producers.connectors.row import RowOp, sanitize

REAL = Path(__file__).parent.parent / "fixtures" / "real"
MANIFEST: list[dict[str, str]] = orjson.loads((REAL / "MANIFEST.json").read_bytes())
MAPPERS: dict[str, Any] = {"claude-code": claude_code.Mapper, "codex": codex.Mapper}
LINKS = ("sidechain", "agent", "agent_id", "subagent", "queued")
"""Compared on every row, absent or not; other keys only where the expectation names them."""


def records(path: Path) -> list[tuple[dict[str, Any], int]]:
    out, offset = [], 0
    for raw in path.read_bytes().splitlines(keepends=True):
        out.append((orjson.loads(raw), offset))
        offset += len(raw)
    return out


def apply(ops: list[RowOp]) -> dict[str, tuple[str, dict[str, Any]]]:
    """What the writer makes of the ops: row -> (kind, body), in sequence order."""
    rows: dict[str, tuple[str, dict[str, Any]]] = {}
    for op in ops:
        if op.row not in rows or op.op == "upsert":
            rows[op.row] = (op.kind, sanitize(op.body))
    return rows


def project(row: str, kind: str, body: dict[str, Any], like: dict[str, Any]) -> dict[str, Any]:
    keys = [k for k in like if k not in ("row", "kind")] + [k for k in LINKS if k not in like]
    seen = {"row": row, "kind": kind}
    seen.update({k: body[k] for k in keys if k in body})
    return seen


def expected(case: dict[str, str]) -> list[dict[str, Any]]:
    name = Path(case["fixture"]).stem + ".json"
    return orjson.loads((REAL / "expected" / name).read_bytes())  # type: ignore[no-any-return]


def compare(rows: list[tuple[str, str, dict[str, Any]]], want: list[dict[str, Any]]) -> None:
    got = [project(r, k, b, w) for (r, k, b), w in zip(rows, want, strict=False)]
    assert got == want[: len(got)]
    assert [r for r, _, _ in rows] == [w["row"] for w in want]


def feed_all(case: dict[str, str]) -> list[RowOp]:
    mapper = MAPPERS[case["source"]]()
    ops: list[RowOp] = []
    for record, offset in records(REAL / case["fixture"]):
        ops.extend(mapper.feed(record, offset))
    return ops


@pytest.mark.parametrize("case", MANIFEST, ids=[Path(c["fixture"]).stem for c in MANIFEST])
def test_each_real_fixture_gives_its_expected_rows(case: dict[str, str]) -> None:
    rows = apply(feed_all(case))
    compare([(r, k, b) for r, (k, b) in rows.items()], expected(case))


@pytest.mark.parametrize("case", MANIFEST, ids=[Path(c["fixture"]).stem for c in MANIFEST])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_a_mapper_restored_at_any_lines_maps_like_one_that_never_stopped(
    case: dict[str, str], data: st.DataObject
) -> None:
    recs = records(REAL / case["fixture"])
    cuts = set(data.draw(st.lists(st.integers(0, len(recs)), max_size=6)))
    new = MAPPERS[case["source"]]
    mapper = new()
    ops: list[RowOp] = []
    for i, (record, offset) in enumerate(recs):
        if i in cuts:  # what the follower saves with the offset, read back after a restart
            mapper = new(orjson.loads(orjson.dumps(mapper.snapshot())))
        ops.extend(mapper.feed(record, offset))
    assert ops == feed_all(case)


def test_assistant_rows_carry_model_and_token_usage() -> None:
    claude = apply(feed_all(MANIFEST[0]))
    assistant = [b for k, b in claude.values() if k == "assistant"]
    assert assistant and all(b["model"] == "claude-sonnet-4-5-20250929" for b in assistant)
    assert all(b["usage"]["output_tokens"] > 0 for b in assistant)
    assert all(b["message"].startswith("msg_") for b in assistant)  # to count a message once
    rollout = next(c for c in MANIFEST if "0.66.0" in c["fixture"])
    rows = apply(feed_all(rollout))
    # the token_count that follows each answer (lines 24 and 55 of the rollout)
    assert rows["@10223"][1]["usage"]["output_tokens"] == 26
    assert rows["@26633"][1]["usage"]["output_tokens"] == 38
    assert rows["@26633"][1]["model"] == "gpt-5.1-codex-max"


def test_summaries_of_other_sessions_are_not_rows() -> None:
    """The 1.0.98 file starts with the title of another session: its leafUuid is in no
    line of the (whole, 774 KB) original file."""
    case = next(c for c in MANIFEST if "1.0.98" in c["fixture"])
    first = records(REAL / case["fixture"])[0][0]
    assert first["type"] == "summary"
    rows = apply(feed_all(case))
    assert not [r for r in rows if r.startswith("summary:")]
    assert f"summary:{first['leafUuid']}" not in rows


def test_an_api_error_written_as_an_assistant_line_is_a_system_row() -> None:
    """Claude Code writes "Prompt is too long" as an assistant line (model
    ``<synthetic>``, ``isApiErrorMessage``): the model never said it."""
    case = next(c for c in MANIFEST if "acompact-51e7d1" in c["fixture"])
    line = records(REAL / case["fixture"])[1][0]
    assert line["isApiErrorMessage"] and line["message"]["model"] == "<synthetic>"
    (op,) = claude_code.Mapper().feed(line, 0)
    assert (op.row, op.kind) == (line["uuid"], "system")
    assert op.body["text"] == "Prompt is too long"
    assert (op.body["subtype"], op.body["error"]) == ("api_error", "invalid_request")
    assert "model" not in op.body and "usage" not in op.body


def test_codex_error_texts_of_a_2025_rollout_are_failures() -> None:
    """Real outputs of a rollout without envelope (2025-09-10): an MCP tool's "tool call
    error: …", apply_patch's "error: Failed to find expected lines …", and "failed in
    sandbox … exit code: 1, stdout: …", whose exit code is kept."""
    case = next(c for c in MANIFEST if "legacy-string-outputs" in c["fixture"])
    rows = apply(feed_all(case))
    mcp = rows["call_0buWmmEYNZqteH4lF3WCglBB"][1]
    assert mcp["output"].startswith("tool call error:") and mcp["status"] == "failed"
    patch = rows["call_kTssyblCLaxCji2CluN4RNDn"][1]
    assert patch["output"].startswith("error: Failed to find expected lines")
    assert patch["status"] == "failed"
    sandbox = rows["call_VdZx66nLNfPJ7Nv7USk4j7zz"][1]
    assert sandbox["output"].startswith("failed in sandbox")
    assert (sandbox["status"], sandbox["exit_code"]) == ("failed", 1)
    plan = rows["call_TyytImVLpcPjtfPSBX4yCxlX"][1]  # a plain output that is no error
    assert (plan["output"], plan["status"]) == ("Plan updated", "completed")


def test_a_command_that_prints_error_and_exits_0_is_not_failed() -> None:
    """Codex's "error: …" is a failure only as the whole output of a call, not as the
    output of a command that exited 0 (the 0.58 JSON shape)."""
    meta = '"metadata":{"exit_code":0,"duration_seconds":0.1}'
    ok = '{"output":"error: nothing to commit\\n",' + meta + "}"
    m = codex.Mapper()
    call = {"type": "function_call", "name": "shell", "arguments": "{}", "call_id": "c1"}
    m.feed({"type": "response_item", "payload": call}, 0)
    out = {"type": "function_call_output", "call_id": "c1", "output": ok}
    (op,) = m.feed({"type": "response_item", "payload": out}, 1)
    assert (op.body["status"], op.body["exit_code"]) == ("completed", 0)
