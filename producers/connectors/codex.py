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

A call's result appears twice (``exec_command_end`` and the ``function_call_output``
mirror): the first one completes the row, the second is ignored. Scaffolding user
messages (``<environment_context>``, ``<user_instructions>``, AGENTS.md text) and
``developer``/``system`` messages are not turns and are skipped.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

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
        "turn_aborted",
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


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for item in content if isinstance(content, list) else []:
        if not isinstance(item, dict):
            continue
        if item.get("type") in ("input_text", "output_text", "text", "summary_text"):
            parts.append(str(item.get("text", "")))
        elif item.get("type") in ("input_image", "image"):
            parts.append("[image]")
    return "\n".join(parts)


def _output(output: Any) -> tuple[str, bool]:
    """A tool output's text and whether it reports a failure."""
    if isinstance(output, dict):  # older releases: {"content": ..., "success": bool}
        return _text(output.get("content")), output.get("success") is False
    if isinstance(output, list):
        return _text(output), False
    text = "" if output is None else str(output)
    # Some releases wrap the output as JSON text {"output": ..., "metadata": {"exit_code": n}}
    if text.startswith("{") and '"output"' in text:
        try:
            data = json.loads(text)
        except ValueError:
            return text, False
        if isinstance(data, dict) and isinstance(data.get("output"), str):
            code = (data.get("metadata") or {}).get("exit_code")
            return data["output"], isinstance(code, int) and code != 0
    return text, False


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

    def snapshot(self) -> dict[str, Any]:
        return {"pending": self.pending, "done": self.done, "model": self.model}

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
            return self._item(payload, offset, ts)
        if kind == "event_msg":
            return self._event(payload, ts)
        if kind == "turn_context":
            model = payload.get("model")
            self.model = model if isinstance(model, str) else self.model
            return []
        if kind in ("session_meta", "compacted"):
            return []
        log.debug("codex: skipping a record of unknown type %r", kind)
        return []

    # --- protocol log -----------------------------------------------------------

    def _item(self, item: dict[str, Any], offset: int, ts: Any) -> list[RowOp]:
        itype = item.get("type")
        row = f"@{offset}"
        if itype == "message":
            role = item.get("role")
            text = _text(item.get("content"))
            if role == "user":
                if not text.strip() or text.lstrip().startswith(_SCAFFOLDING):
                    return []
                return [RowOp("append", row, "user", text_body(text, ts=ts))]
            if role == "assistant":
                return [RowOp("append", row, "assistant", text_body(text, model=self.model, ts=ts))]
            return []  # developer / system: instructions, not turns
        if itype == "reasoning":
            text = _text(item.get("summary"))
            if not text:  # encrypted only
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
            text, failed = _output(item.get("output"))
            return self._finish(item.get("call_id"), text, failed, ts)
        if itype == "web_search_call":
            body = tool_body("web_search", item.get("action"), "completed", ts=ts)
            return [RowOp("append", row, "tool", body)]
        log.debug("codex: skipping a %r item", itype)
        return []

    def _call(self, call: Any, name: Any, args: Any, ts: Any) -> list[RowOp]:
        if not isinstance(call, str) or not call:
            raise ValueError("tool call without call_id")
        tool_input, cut = clipped_input(args)
        self.pending[call] = {"name": str(name or "unknown"), "input": tool_input, "ts": ts}
        while len(self.pending) > _MAX_REMEMBERED:
            self.pending.pop(next(iter(self.pending)))
        body = tool_body(str(name or "unknown"), tool_input, "pending", ts=ts,
                         truncated=True if cut else None)  # fmt: skip
        return [RowOp("upsert", call, "tool", body)]

    def _finish(
        self,
        call: Any,
        output: str,
        failed: bool,
        ts: Any,
        exit_code: int | None = None,
        fallback: dict[str, Any] | None = None,
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
            "failed" if failed else "completed", output,
            exit_code=exit_code, ts=known.get("ts"), ended=ts,
        )  # fmt: skip
        return [RowOp("upsert", call, "tool", body)]

    # --- display log --------------------------------------------------------------

    def _event(self, ev: dict[str, Any], ts: Any) -> list[RowOp]:
        etype = ev.get("type")
        call = ev.get("call_id")
        if etype == "exec_command_begin":
            known = self.pending.get(call) if isinstance(call, str) else None
            if known is None or call in self.done:
                return []
            body = tool_body(known["name"], known["input"], "running", ts=known.get("ts"))
            return [RowOp("upsert", call, "tool", body)]  # type: ignore[arg-type]
        if etype == "exec_command_end":
            code = ev.get("exit_code")
            out = ev.get("aggregated_output")
            if not isinstance(out, str):
                out = "".join(s for s in (ev.get("stdout"), ev.get("stderr")) if isinstance(s, str))
            code = code if isinstance(code, int) else None
            failed = code not in (0, None) or ev.get("status") in ("failed", "declined")
            command = {"name": "shell", "input": {"command": ev.get("command")}}
            return self._finish(call, out, failed, ts, exit_code=code, fallback=command)
        if etype == "patch_apply_end":
            out = "".join(s for s in (ev.get("stdout"), ev.get("stderr")) if isinstance(s, str))
            return self._finish(call, out, ev.get("success") is False, ts)
        if etype not in _QUIET_EVENTS:
            log.debug("codex: skipping a %r event", etype)
        return []


SOURCE = Source(NAME, session_of, Mapper)
