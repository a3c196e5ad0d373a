"""Codex rollout files → rows.

Codex appends every session to ``~/.codex/sessions/YYYY/MM/DD/rollout-<time>-<uuid>.jsonl``
(``$CODEX_HOME/sessions`` when set). Each line is an envelope
``{"timestamp", "type", "payload"}`` (upstream's ``RolloutLine``):

- ``session_meta`` (header: ``id``, ``cwd``, ``cli_version``, …), ``turn_context``
  (``model``, ``cwd``, policies);
- ``response_item``: the protocol log. ``payload.type`` is ``message`` (``role``,
  ``content`` of ``input_text``/``output_text``/``input_image``), ``reasoning``
  (``summary`` of ``summary_text``), ``function_call`` (``name``, ``arguments`` as a
  JSON string, ``call_id``), ``function_call_output`` (``call_id``, ``output``: a
  string, a list of content items, or ``{content, success}`` in older releases),
  ``custom_tool_call`` / ``custom_tool_call_output`` (freeform tools such as
  ``apply_patch``), ``local_shell_call``, ``web_search_call``, …;
- ``event_msg``: the display log, mostly mirrors of the above; we read
  ``exec_command_begin``/``exec_command_end`` (a command running / its exit code and
  output) and ``patch_apply_end``;
- older releases wrote the header and the items without the envelope.

Message items carry no id in the rollout (Codex does not serialize it), so their
row id is the line's byte offset in the file (``@<offset>``): the file is only ever
appended to, so the id is stable across re-reads. Tool calls use their ``call_id``:

| record | row id | op | kind |
|---|---|---|---|
| user / assistant message | ``@offset`` | append | ``user`` / ``assistant`` |
| reasoning with a summary | ``@offset`` | append | ``thinking`` |
| function / custom tool / local shell call | ``call_id`` | upsert, ``pending`` | ``tool`` |
| ``exec_command_begin`` | ``call_id`` | upsert, ``running`` | ``tool`` |
| ``exec_command_end``, ``*_output``, | ``call_id`` | upsert, ``completed`` | ``tool`` |
| ``patch_apply_end`` | | or ``failed`` | |
| web search | ``@offset`` | append, ``completed`` | ``tool`` |

| ``compacted`` (the summary that replaces older history) | ``@offset`` | append | ``compaction`` |
| ``turn_aborted`` event (the user interrupted) | ``@offset`` | append | ``interruption`` |

A call's result appears twice (``exec_command_end`` and the ``function_call_output``
mirror): the first one completes the row, the second is ignored. Codex does not
keep a call's ``success`` flag in the rollout, so a result says whether it failed
only in its text, in one of the shapes Codex has written (read in
``codex_output``): a JSON text with ``metadata.exit_code``, an ``Exit code: N`` or
unified-exec header, the ``exec_command_end`` event, or one of Codex's own error
texts (``failed in sandbox … exit code: N``, ``execution error: …``, ``patch
rejected by user``, apply_patch's ``error: …``, an MCP tool's ``tool call error:
…``). A non-zero exit code or an error text is ``failed``; the exit code and the
duration (``exit_code``, ``duration_ms``) are kept in the tool body.

An assistant row gets the ``usage`` of the ``token_count`` event that follows it
(its ``last_token_usage``) by an upsert, and ``model`` from the ``turn_context``.
A user message keeps only what follows "## My request for Codex:" (the IDE
extensions put the open files and tabs above it).

Skipped on purpose: scaffolding user messages (``<environment_context>``,
``<user_instructions>``, AGENTS.md text, ``<turn_aborted>``) and ``developer``/
``system`` messages (instructions, not turns); reasoning without a summary
(encrypted only); ``ghost_snapshot`` (an undo checkpoint: a git commit id);
``session_meta`` and ``turn_context`` (settings; the model is kept); the
``event_msg`` mirrors of response items (``user_message``, ``agent_message``,
``agent_reasoning``) and status events (``token_count`` but for its usage,
``task_started``, ``task_complete``, ``context_compacted``, output deltas).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from rowcast.producers.connectors.codex_output import Result, duration, output
from rowcast.producers.connectors.codex_output import text as content_text
from rowcast.producers.connectors.row import RowOp, clipped_input, text_body, tool_body
from rowcast.producers.connectors.tail import Source

log = logging.getLogger(__name__)

NAME = "codex"
_MAX_REMEMBERED = 500

_ROLLOUT = re.compile(
    r"rollout-.*?([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$"
)
_SCAFFOLDING = (
    "<environment_context>",
    "<user_instructions>",
    "<permissions instructions>",
    "<INSTRUCTIONS>",
    "# AGENTS.md instructions",
    "<user_shell_command>",
    "<turn_aborted>",
)
_IDE_REQUEST = "## My request for Codex:"
_ITEM_TYPES = frozenset(
    {
        "message",
        "reasoning",
        "function_call",
        "function_call_output",
        "custom_tool_call",
        "custom_tool_call_output",
        "local_shell_call",
        "web_search_call",
    }
)
# Display-log events that only mirror response items, or carry nothing to show.
_QUIET_EVENTS = frozenset(
    {
        "user_message",
        "agent_message",
        "agent_reasoning",
        "agent_reasoning_raw_content",
        "token_count",
        "task_started",
        "task_complete",
        "context_compacted",
        "patch_apply_begin",
        "web_search_begin",
        "web_search_end",
        "exec_command_output_delta",
    }
)


def session_of(path: Path, root: Path) -> str | None:
    """``codex:<uuid>`` from the rollout's file name (the session's id)."""
    if path.suffix != ".jsonl" or not path.name.startswith("rollout-"):
        return None
    m = _ROLLOUT.search(path.stem)
    return f"{NAME}:{m.group(1) if m else path.stem}"


def _user_text(text: str) -> str:
    at = text.find(_IDE_REQUEST)
    return text[at + len(_IDE_REQUEST) :].strip() if at >= 0 else text


def _arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


class Mapper:
    """Maps the records of one rollout, in file order."""

    def __init__(self, saved: dict[str, Any] | None = None) -> None:
        saved = saved or {}
        self.pending: dict[str, dict[str, Any]] = dict(saved.get("pending") or {})
        self.done: list[str] = list(saved.get("done") or [])
        self.model: str | None = saved.get("model")
        # the last assistant row, until the token_count event that carries its usage
        self.last: dict[str, Any] | None = saved.get("last")

    def snapshot(self) -> dict[str, Any]:
        return {"pending": self.pending, "done": self.done, "model": self.model, "last": self.last}

    def feed(self, record: dict[str, Any], offset: int) -> list[RowOp]:
        kind = record.get("type")
        ts = record.get("timestamp")
        payload = record.get("payload")
        if kind in _ITEM_TYPES and payload is None:  # older releases: no envelope
            kind, payload = "response_item", record
        if not isinstance(payload, dict):
            if kind not in ("session_meta", None) and "record_type" not in record:
                log.debug("codex: skipping a %r line without payload", kind)
            return []
        if kind == "response_item":
            self.last = None
            return self._item(payload, offset, ts)
        if kind == "event_msg":
            return self._event(payload, offset, ts)
        if kind == "turn_context":
            model = payload.get("model")
            self.model = model if isinstance(model, str) else self.model
            return []
        if kind == "compacted":
            text = payload.get("message")
            if not isinstance(text, str) or not text.strip():
                return []
            return [RowOp("append", f"@{offset}", "compaction", text_body(text, ts=ts))]
        if kind == "session_meta":
            return []
        log.debug("codex: skipping a record of unknown type %r", kind)
        return []

    # --- protocol log -----------------------------------------------------------

    def _item(self, item: dict[str, Any], offset: int, ts: Any) -> list[RowOp]:
        itype = item.get("type")
        row = f"@{offset}"
        if itype == "message":
            role = item.get("role")
            text = content_text(item.get("content"))
            if role == "user":
                if text.lstrip().startswith(_SCAFFOLDING):
                    return []
                text = _user_text(text)
                if not text.strip():
                    return []
                return [RowOp("append", row, "user", text_body(text, ts=ts))]
            if role == "assistant":
                if not text.strip():
                    return []
                body = text_body(text, model=self.model, ts=ts)
                self.last = {"row": row, "body": body}
                return [RowOp("append", row, "assistant", body)]
            return []  # developer / system: instructions, not turns
        if itype == "reasoning":
            text = content_text(item.get("summary"))
            if not text.strip():  # encrypted only
                return []
            return [RowOp("append", row, "thinking", text_body(text, ts=ts))]
        if itype in ("function_call", "custom_tool_call"):
            raw = item.get("arguments") if itype == "function_call" else item.get("input")
            return self._call(item.get("call_id"), item.get("name"), _arguments(raw), ts)
        if itype == "local_shell_call":
            action = item.get("action") or {}
            call = item.get("call_id") or item.get("id")
            return self._call(call, "local_shell", {"command": action.get("command")}, ts)
        if itype in ("function_call_output", "custom_tool_call_output"):
            return self._finish(item.get("call_id"), output(item.get("output")), ts)
        if itype == "web_search_call":
            body = tool_body("web_search", item.get("action"), "completed", ts=ts)
            return [RowOp("append", row, "tool", body)]
        log.debug("codex: skipping a %r item", itype)
        return []

    def _call(self, call: Any, name: Any, args: Any, ts: Any) -> list[RowOp]:
        if not isinstance(call, str) or not call:
            raise ValueError("tool call without call_id")
        tool_input, cut = clipped_input(args)
        known = {"name": str(name or "unknown"), "input": tool_input, "ts": ts}
        if cut:
            known["truncated"] = True
        self.pending[call] = known
        while len(self.pending) > _MAX_REMEMBERED:
            self.pending.pop(next(iter(self.pending)))
        return [RowOp("upsert", call, "tool", self._running(known, "pending"))]

    @staticmethod
    def _running(known: dict[str, Any], status: str) -> dict[str, Any]:
        return tool_body(
            known["name"],
            known["input"],
            status,
            ts=known.get("ts"),
            truncated=known.get("truncated"),
        )

    def _finish(
        self, call: Any, result: Result, ts: Any, fallback: dict[str, Any] | None = None
    ) -> list[RowOp]:
        if not isinstance(call, str) or not call:
            raise ValueError("tool output without call_id")
        if call in self.done:  # the mirror of a result already shown
            return []
        known = self.pending.pop(call, None) or fallback or {}
        self.done.append(call)
        del self.done[:-_MAX_REMEMBERED]
        body = tool_body(
            known.get("name", "unknown"), known.get("input"),
            "failed" if result.failed else "completed", result.text,
            exit_code=result.exit_code, duration_ms=result.duration_ms,
            ts=known.get("ts"), ended=ts, truncated=known.get("truncated"),
        )  # fmt: skip
        return [RowOp("upsert", call, "tool", body)]

    # --- display log --------------------------------------------------------------

    def _event(self, ev: dict[str, Any], offset: int, ts: Any) -> list[RowOp]:
        etype = ev.get("type")
        call = ev.get("call_id")
        if etype == "exec_command_begin":
            known = self.pending.get(call) if isinstance(call, str) else None
            if known is None or call in self.done:
                return []
            return [RowOp("upsert", call, "tool", self._running(known, "running"))]  # type: ignore[arg-type]
        if etype == "exec_command_end":
            code = ev.get("exit_code")
            out = ev.get("aggregated_output")
            if not isinstance(out, str):
                out = "".join(s for s in (ev.get("stdout"), ev.get("stderr")) if isinstance(s, str))
            code = code if isinstance(code, int) else None
            failed = code not in (0, None) or ev.get("status") in ("failed", "declined")
            result = Result(out, failed, code, duration(ev.get("duration")))
            command = {"name": "shell", "input": {"command": ev.get("command")}}
            return self._finish(call, result, ts, fallback=command)
        if etype == "patch_apply_end":
            out = "".join(s for s in (ev.get("stdout"), ev.get("stderr")) if isinstance(s, str))
            return self._finish(call, Result(out, ev.get("success") is False), ts)
        if etype == "turn_aborted":
            reason = ev.get("reason")
            reason = reason if isinstance(reason, str) and reason else None
            text = f"Turn aborted ({reason})" if reason else "Turn aborted"
            body = text_body(text, reason=reason, ts=ts)
            return [RowOp("append", f"@{offset}", "interruption", body)]
        if etype == "token_count":
            return self._usage(ev)
        if etype not in _QUIET_EVENTS:
            log.debug("codex: skipping a %r event", etype)
        return []

    def _usage(self, ev: dict[str, Any]) -> list[RowOp]:
        info = ev.get("info")
        usage = info.get("last_token_usage") if isinstance(info, dict) else None
        if self.last is None or not isinstance(usage, dict):
            return []
        kept = {k: v for k, v in usage.items() if k.endswith("_tokens") and isinstance(v, int)}
        row, body = self.last["row"], {**self.last["body"], "usage": kept}
        self.last = None
        return [RowOp("upsert", row, "assistant", body)]


SOURCE = Source(NAME, session_of, Mapper)
