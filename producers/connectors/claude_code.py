"""Claude Code session transcripts → rows.

Claude Code writes one JSONL file per session under
``~/.claude/projects/<munged-cwd>/<session-uuid>.jsonl`` (``$CLAUDE_CONFIG_DIR/projects``
when set); subagents write ``<session-uuid>/subagents/agent-<id>.jsonl``. The format
is internal to Claude Code and changes between releases; what we rely on:

- every line is a JSON object with a ``type``. ``user`` and ``assistant`` lines wrap an
  Anthropic Messages API ``message`` in an envelope with ``uuid``, ``parentUuid``,
  ``sessionId``, ``timestamp``, ``isSidechain``, ``cwd``, ``version``.
- ``message.content`` is a string or a list of blocks: ``text``, ``thinking``,
  ``tool_use`` (``id``, ``name``, ``input``) on assistant lines, ``tool_result``
  (``tool_use_id``, ``content``, ``is_error``) on user lines, ``image``.
  One API response is usually split over several lines (one block each) sharing
  ``message.id``, each with its own ``uuid``.
- ``progress`` lines with ``data.type == "bash_progress"`` report a running command
  (``parentToolUseID`` names the tool call, ``data.output`` its latest output).
- ``system`` lines (``subtype``, ``content``), ``summary`` lines (``summary``,
  ``leafUuid``); bookkeeping lines (``file-history-snapshot``, ``queue-operation``, …).

Mapping (row ids are the records' own ids, so reading a file again never
duplicates a row):

| record | row id | op | kind |
|---|---|---|---|
| user text | ``uuid`` (``uuid:i`` for the i-th of several blocks) | append | ``user`` |
| assistant text / thinking | same | append | ``assistant`` / ``thinking`` |
| ``tool_use`` block | the block's ``id`` | upsert, status ``pending`` | ``tool`` |
| ``bash_progress`` of that call | same | upsert, status ``running`` | ``tool`` |
| ``tool_result`` block | its ``tool_use_id`` | upsert, ``completed`` or ``failed`` | ``tool`` |
| ``system`` | ``uuid`` | append | ``system`` |
| ``summary`` | ``summary:leafUuid`` | upsert | ``summary`` |

The mapper remembers the name and input of the calls still waiting for their
result (an upsert replaces the whole body, and a result line carries neither).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from rowcast.producers.connectors.row import (
    RowOp,
    clipped_input,
    text_body,
    tool_body,
)
from rowcast.producers.connectors.tail import Source

log = logging.getLogger(__name__)

NAME = "claude-code"
_MAX_PENDING = 500

# Bookkeeping lines with nothing to show.
_QUIET = frozenset(
    {
        "file-history-snapshot",
        "queue-operation",
        "custom-title",
        "ai-title",
        "agent-name",
        "last-prompt",
        "attachment",
        "permission-mode",
        "mode",
        "pr-link",
        "file-history-delta",
        "saved_hook_context",
    }
)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def session_of(path: Path, root: Path) -> str | None:
    """``claude-code:<session uuid>``; a subagent's file is a session of its own,
    ``claude-code:<session uuid>:<agent>``."""
    if path.suffix != ".jsonl":
        return None
    if path.parent.name == "subagents" and _UUID.fullmatch(path.parent.parent.name):
        return f"{NAME}:{path.parent.parent.name}:{path.stem}"
    if "tool-results" in path.relative_to(root).parts:
        return None
    return f"{NAME}:{path.stem}"


def flatten(content: Any) -> str:
    """Text of a tool result's ``content``: a string or a list of text/image blocks."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict):
                if block.get("type") == "text":
                    parts.append(str(block.get("text", "")))
                elif block.get("type") == "image":
                    parts.append("[image]")
                else:
                    parts.append(f"[{block.get('type', 'block')}]")
            else:
                parts.append(str(block))
        return "\n".join(parts)
    return str(content)


class Mapper:
    """Maps the records of one transcript, in file order."""

    def __init__(self, saved: dict[str, Any] | None = None) -> None:
        saved = saved or {}
        # tool_use id -> {"name", "input", "ts"}: calls still waiting for their result
        self.pending: dict[str, dict[str, Any]] = dict(saved.get("pending") or {})

    def snapshot(self) -> dict[str, Any]:
        return {"pending": self.pending}

    def feed(self, record: dict[str, Any], offset: int) -> list[RowOp]:
        kind = record.get("type")
        if kind == "user":
            return self._user(record)
        if kind == "assistant":
            return self._assistant(record)
        if kind == "progress":
            return self._progress(record)
        if kind == "system":
            return self._system(record)
        if kind == "summary":
            leaf = record.get("leafUuid")
            text = record.get("summary")
            if not isinstance(text, str) or not leaf:
                return []
            return [RowOp("upsert", f"summary:{leaf}", "summary", text_body(text))]
        if kind in _QUIET:
            return []
        log.debug("claude-code: skipping a record of unknown type %r", kind)
        return []

    # --- records ------------------------------------------------------------------

    def _user(self, rec: dict[str, Any]) -> list[RowOp]:
        uuid = rec.get("uuid")
        message = rec.get("message")
        if not isinstance(uuid, str) or not isinstance(message, dict):
            log.debug("claude-code: user record without uuid or message skipped")
            return []
        ts = rec.get("timestamp")
        content = message.get("content")
        if isinstance(content, str):
            if rec.get("isMeta"):  # injected context (caveats, skill text), not typed by anyone
                return []
            return [RowOp("append", uuid, "user", self._with_flags(rec, text_body(content, ts=ts)))]
        if not isinstance(content, list):
            return []
        ops: list[RowOp] = []
        texts = [b for b in content if isinstance(b, dict) and b.get("type") in ("text", "image")]
        for i, block in enumerate(content):
            if not isinstance(block, dict):
                continue
            btype = block.get("type")
            if btype == "tool_result":
                ops.append(self._result(block, ts))
            elif btype in ("text", "image") and not rec.get("isMeta"):
                text = block.get("text", "") if btype == "text" else "[image]"
                row = uuid if len(texts) == 1 else f"{uuid}:{i}"
                body = self._with_flags(rec, text_body(str(text), ts=ts))
                ops.append(RowOp("append", row, "user", body))
        return ops

    def _result(self, block: dict[str, Any], ts: Any) -> RowOp:
        call = str(block.get("tool_use_id") or "")
        if not call:
            raise ValueError("tool_result without tool_use_id")
        known = self.pending.pop(call, None) or {}
        failed = bool(block.get("is_error"))
        body = tool_body(
            known.get("name", "unknown"),
            known.get("input"),
            "failed" if failed else "completed",
            flatten(block.get("content")),
            ts=known.get("ts"),
            ended=ts,
        )
        return RowOp("upsert", call, "tool", body)

    def _assistant(self, rec: dict[str, Any]) -> list[RowOp]:
        message = rec.get("message")
        if not isinstance(message, dict):
            return []
        uuid = rec.get("uuid")
        ts = rec.get("timestamp")
        model = message.get("model")
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if not isinstance(content, list):
            return []
        if not isinstance(uuid, str):
            # No line id: fall back on the API message id. Lines that share it are
            # streaming updates of the same text, hence upserts.
            mid = message.get("id")
            if not isinstance(mid, str):
                log.debug("claude-code: assistant record without uuid or message id skipped")
                return []
            text = "\n".join(
                str(b.get("text", ""))
                for b in content
                if isinstance(b, dict) and b.get("type") == "text"
            )
            streaming = message.get("stop_reason") is None
            body = text_body(text, model=model, ts=ts, streaming=streaming)
            return [RowOp("upsert", mid, "assistant", body)]
        ops: list[RowOp] = []
        shown = [
            b for b in content if isinstance(b, dict) and b.get("type") in ("text", "thinking")
        ]
        for i, block in enumerate(content):
            if not isinstance(block, dict):
                continue
            btype = block.get("type")
            row = uuid if len(shown) == 1 else f"{uuid}:{i}"
            if btype == "text":
                body = self._with_flags(
                    rec, text_body(str(block.get("text", "")), model=model, ts=ts)
                )
                ops.append(RowOp("append", row, "assistant", body))
            elif btype == "thinking":
                text = str(block.get("thinking") or "")
                if text:  # newer releases keep only the signature
                    ops.append(RowOp("append", row, "thinking", text_body(text, ts=ts)))
            elif btype == "tool_use":
                ops.append(self._tool_use(block, ts))
            else:
                log.debug("claude-code: skipping a %r block", btype)
        return ops

    def _tool_use(self, block: dict[str, Any], ts: Any) -> RowOp:
        call = block.get("id")
        if not isinstance(call, str) or not call:
            raise ValueError("tool_use without id")
        name = str(block.get("name") or "unknown")
        tool_input, cut = clipped_input(block.get("input"))
        self.pending[call] = {"name": name, "input": tool_input, "ts": ts}
        while len(self.pending) > _MAX_PENDING:  # calls whose results never came
            self.pending.pop(next(iter(self.pending)))
        body = tool_body(name, tool_input, "pending", ts=ts, truncated=True if cut else None)
        return RowOp("upsert", call, "tool", body)

    def _progress(self, rec: dict[str, Any]) -> list[RowOp]:
        data = rec.get("data")
        call = rec.get("parentToolUseID")
        if not isinstance(data, dict) or data.get("type") != "bash_progress":
            return []
        known = self.pending.get(call) if isinstance(call, str) else None
        if known is None:
            return []
        output = data.get("output")
        body = tool_body(
            known["name"], known["input"], "running",
            output if isinstance(output, str) else None, ts=known.get("ts"),
        )  # fmt: skip
        return [RowOp("upsert", call, "tool", body)]  # type: ignore[arg-type]

    def _system(self, rec: dict[str, Any]) -> list[RowOp]:
        uuid = rec.get("uuid")
        content = rec.get("content")
        if not isinstance(uuid, str) or not isinstance(content, str) or not content:
            return []  # bookkeeping (turn durations, hook summaries) carries no text
        body = text_body(content, subtype=rec.get("subtype"), ts=rec.get("timestamp"))
        return [RowOp("append", uuid, "system", body)]

    @staticmethod
    def _with_flags(rec: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        if rec.get("isSidechain"):
            body["sidechain"] = True
        return body


SOURCE = Source(NAME, session_of, Mapper)
