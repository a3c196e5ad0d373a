"""Claude Code session transcripts → rows.

Claude Code writes one JSONL file per session under
``~/.claude/projects/<munged-cwd>/<session-uuid>.jsonl`` (``$CLAUDE_CONFIG_DIR/projects``
when set); subagents write ``<session-uuid>/subagents/agent-<id>.jsonl`` (2.1) or
``agent-<id>.jsonl`` beside the sessions (2.0), and 1.x wrote them inline with
``isSidechain``; 2.1's compaction runs as a subagent too (``agent-acompact-<id>``).
The format is internal to Claude Code and changes between releases
(tests/fixtures/real holds real files of 1.0.98, 2.0.28, 2.1.36, 2.1.128 and
2.1.152); what we rely on:

- every line is a JSON object with a ``type``. ``user`` and ``assistant`` lines wrap an
  Anthropic Messages API ``message`` in an envelope with ``uuid``, ``parentUuid``,
  ``sessionId``, ``timestamp``, ``isSidechain``, ``agentId``, ``cwd``, ``version``.
- ``message.content`` is a string or a list of blocks: ``text``, ``thinking``,
  ``tool_use`` (``id``, ``name``, ``input``) on assistant lines, ``tool_result``
  (``tool_use_id``, ``content``, ``is_error``) on user lines, ``image``; the user
  line of a result also carries ``toolUseResult`` (the tool's structured result:
  ``agentId`` and ``totalDurationMs`` for a Task/Agent call). One API response is
  split over several lines (one block each) sharing ``message.id`` and ``usage``.
- ``progress`` lines report a running call (``parentToolUseID``; ``data.type``
  ``bash_progress`` with ``output``, ``agent_progress`` with ``agentId``).

Mapping (row ids are the records' own ids, so reading a file again never
duplicates a row):

| record | row id | op | kind |
|---|---|---|---|
| user text | ``uuid`` (``uuid:i`` for the i-th of several blocks) | append | ``user`` |
| slash command / ``!`` command (tags, ANSI codes removed) | same | append | ``command`` |
| local command output (``<local-command-stdout>``, …) | same | append | ``system`` |
| "[Request interrupted by user…]" | same | append | ``interruption`` |
| ``isCompactSummary`` user line | same | append | ``compaction`` |
| ``queue-operation`` enqueue (typed while busy) | ``queued:<offset>`` | upsert | ``user`` |
| the user line that delivers a queued prompt | that same row | upsert | ``user`` |
| assistant text / thinking | ``uuid`` | append | ``assistant`` / ``thinking`` |
| ``tool_use`` block | the block's ``id`` | upsert, status ``pending`` | ``tool`` |
| ``bash_progress`` / ``agent_progress`` of that call | same | upsert, ``running`` | ``tool`` |
| ``tool_result`` block | its ``tool_use_id`` | upsert, ``completed`` or ``failed`` | ``tool`` |
| ``system`` with text | ``uuid`` | append | ``system`` |
| assistant line with ``isApiErrorMessage`` | ``uuid`` | append | ``system`` |
| ``summary`` of a ``leafUuid`` in this file | ``summary:leafUuid`` | upsert | ``summary`` |
| ``ai-title`` / ``custom-title`` | ``title`` | upsert | ``summary`` |

Command output rows have ``subtype: "command_output"``; an API error Claude Code
wrote in the model's place (model ``<synthetic>``: "Prompt is too long", …) has
``subtype: "api_error"`` and the ``error`` code; a queued prompt's row has
``queued: true`` until the prompt is delivered; title rows have ``title`` (the
record type); assistant rows carry ``model`` and ``usage`` (the API's token counts,
repeated on every row of one API message, whose id is ``message``).

Every row of a sidechain (a subagent's conversation) has ``sidechain: true``, and
``agent`` when the line names its agent. A Task/Agent tool row carries
``agent_id`` and ``subagent``: the session id of the subagent's own transcript.

Skipped on purpose: ``isMeta`` user lines (text Claude Code injects: caveats,
expanded slash-command prompts, skill text); blank text blocks; thinking blocks
with only a signature; ``summary`` lines of other sessions (Claude Code keeps the
titles of earlier sessions in a new file; they are not this conversation);
``queue-operation`` dequeue (the prompt then arrives as a user line) and
``remove`` (the row stays, marked ``queued: "removed"``); ``last-prompt`` (a copy
of a prompt already shown); ``file-history-snapshot`` and ``file-history-delta``
(undo checkpoints); ``attachment`` lines other than a queued prompt (context
given to the model: tool lists, MCP instructions, skill listings, todo
reminders); ``agent-name``, ``permission-mode``, ``mode``, ``pr-link``,
``saved_hook_context`` (settings and links, no conversation); ``system`` lines
without text (turn durations, hook summaries); other ``progress`` types
(hooks, MCP, search status).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from rowcast.producers.connectors import command
from rowcast.producers.connectors.blocks import flatten, text_of, usage
from rowcast.producers.connectors.prompts import Queue
from rowcast.producers.connectors.row import RowOp, clipped_input, text_body, tool_body
from rowcast.producers.connectors.tail import Source
from rowcast.producers.connectors.titles import Titles

log = logging.getLogger(__name__)

NAME = "claude-code"
_MAX_PENDING = 500

_QUIET = frozenset(
    {
        "file-history-snapshot",
        "file-history-delta",
        "last-prompt",
        "agent-name",
        "permission-mode",
        "mode",
        "pr-link",
        "saved_hook_context",
    }
)
_MESSAGES = frozenset({"user", "assistant", "system"})
_AGENT_TOOLS = frozenset({"Task", "Agent"})
_INTERRUPTED = "[Request interrupted by user"
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


def subagent_session(session: str, agent: str) -> str:
    """The session id of a subagent's transcript (2.1's ``subagents/agent-<id>.jsonl``)."""
    return f"{NAME}:{session}:agent-{agent}"


class Mapper:
    """Maps the records of one transcript, in file order."""

    def __init__(self, saved: dict[str, Any] | None = None) -> None:
        saved = saved or {}
        # tool_use id -> {"name", "input", "ts", flags}: calls still waiting for their result
        self.pending: dict[str, dict[str, Any]] = dict(saved.get("pending") or {})
        self.queue = Queue(saved)
        self.titles = Titles(saved)

    def snapshot(self) -> dict[str, Any]:
        return {"pending": self.pending, **self.queue.snapshot(), **self.titles.snapshot()}

    def feed(self, record: dict[str, Any], offset: int) -> list[RowOp]:
        kind = record.get("type")
        uuid = record.get("uuid")
        ops = self.titles.saw(uuid) if isinstance(uuid, str) and kind in _MESSAGES else []
        if kind == "user":
            ops += self._user(record)
        elif kind == "assistant":
            ops += self._assistant(record)
        elif kind == "progress":
            ops += self._progress(record)
        elif kind == "system":
            ops += self._system(record)
        elif kind == "summary":
            ops += self.titles.summary(record)
        elif kind == "queue-operation":
            ops += self.queue.operation(record, offset)
        elif kind == "attachment":
            ops += self._attachment(record)
        elif kind in ("ai-title", "custom-title"):
            ops += self.titles.named(record)
        elif kind not in _QUIET:
            log.debug("claude-code: skipping a record of unknown type %r", kind)
        return ops

    # --- records ------------------------------------------------------------------

    def _attachment(self, rec: dict[str, Any]) -> list[RowOp]:
        att = rec.get("attachment")
        if not isinstance(att, dict) or att.get("type") != "queued_command":
            return []
        prompt = att.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return []
        row = self.queue.delivered(prompt) or rec.get("uuid")
        if not isinstance(row, str):
            return []
        body = self._flags(rec, text_body(prompt, ts=rec.get("timestamp")))
        return [RowOp("upsert", row, "user", body)]

    def _user(self, rec: dict[str, Any]) -> list[RowOp]:
        uuid = rec.get("uuid")
        message = rec.get("message")
        if not isinstance(uuid, str) or not isinstance(message, dict):
            log.debug("claude-code: user record without uuid or message skipped")
            return []
        ts = rec.get("timestamp")
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if not isinstance(content, list):
            return []
        ops: list[RowOp] = []
        texts = [b for b in content if isinstance(b, dict) and b.get("type") in ("text", "image")]
        for i, block in enumerate(content):
            if not isinstance(block, dict):
                continue
            btype = block.get("type")
            if btype == "tool_result":
                ops.append(self._result(rec, block, ts))
            elif btype in ("text", "image") and not rec.get("isMeta"):
                row = uuid if len(texts) == 1 else f"{uuid}:{i}"
                if btype == "image":
                    ops.append(
                        RowOp("append", row, "user", self._flags(rec, text_body("[image]", ts=ts)))
                    )
                else:
                    ops.extend(self._typed(rec, row, str(block.get("text") or ""), ts))
        return ops

    def _typed(self, rec: dict[str, Any], row: str, text: str, ts: Any) -> list[RowOp]:
        """A user text: a prompt, a command, a command's output, an interruption, the
        compaction summary, or a queued prompt arriving."""
        if not text.strip():
            return []
        if rec.get("isCompactSummary"):
            return [RowOp("append", row, "compaction", self._flags(rec, text_body(text, ts=ts)))]
        if text.startswith(_INTERRUPTED):
            body = text_body(text.strip().strip("[]"), ts=ts)
            return [RowOp("append", row, "interruption", self._flags(rec, body))]
        parsed = command.parse(text)
        if isinstance(parsed, command.Command):
            body = text_body(parsed.text, name=parsed.name, args=parsed.args or None, ts=ts)
            return [RowOp("append", row, "command", self._flags(rec, body))]
        if isinstance(parsed, command.Output):
            if not parsed.text:
                return []
            body = text_body(parsed.text, subtype="command_output", ts=ts)
            return [RowOp("append", row, "system", self._flags(rec, body))]
        queued = self.queue.delivered(text)
        if queued is not None:  # shown once: the queued row becomes the delivered prompt
            return [RowOp("upsert", queued, "user", self._flags(rec, text_body(text, ts=ts)))]
        return [RowOp("append", row, "user", self._flags(rec, text_body(text, ts=ts)))]

    def _result(self, rec: dict[str, Any], block: dict[str, Any], ts: Any) -> RowOp:
        call = str(block.get("tool_use_id") or "")
        if not call:
            raise ValueError("tool_result without tool_use_id")
        known = self.pending.pop(call, None) or {}
        failed = bool(block.get("is_error"))
        keep = ("sidechain", "agent", "truncated", "agent_id", "subagent")
        extra: dict[str, Any] = {k: known.get(k) for k in keep}
        result = rec.get("toolUseResult")
        if isinstance(result, dict):
            duration = result.get("totalDurationMs", result.get("durationMs"))
            extra["duration_ms"] = duration if isinstance(duration, int) else None
            agent = result.get("agentId")
            if known.get("name") in _AGENT_TOOLS and isinstance(agent, str) and agent:
                extra["agent_id"] = agent
                extra["subagent"] = self._subagent(rec, agent)
        body = tool_body(
            known.get("name", "unknown"),
            known.get("input"),
            "failed" if failed else "completed",
            flatten(block.get("content")),
            ts=known.get("ts"),
            ended=ts,
            **extra,
        )
        return RowOp("upsert", call, "tool", body)

    @staticmethod
    def _subagent(rec: dict[str, Any], agent: str) -> str | None:
        session = rec.get("sessionId")
        return subagent_session(session, agent) if isinstance(session, str) else None

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
        if rec.get("isApiErrorMessage") and isinstance(uuid, str):
            return self._api_error(rec, uuid, content, ts)
        if not isinstance(uuid, str):
            # No line id: fall back on the API message id. Lines that share it are
            # streaming updates of the same text, hence upserts.
            mid = message.get("id")
            if not isinstance(mid, str):
                log.debug("claude-code: assistant record without uuid or message id skipped")
                return []
            text = text_of(content)
            streaming = message.get("stop_reason") is None
            body = text_body(text, model=model, ts=ts, streaming=streaming)
            return [RowOp("upsert", mid, "assistant", body)]
        tokens = usage(message)
        mid = message.get("id") if tokens else None
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
                text = str(block.get("text") or "")
                if text.strip():
                    body = text_body(text, model=model, usage=tokens, message=mid, ts=ts)
                    ops.append(RowOp("append", row, "assistant", self._flags(rec, body)))
            elif btype == "thinking":
                text = str(block.get("thinking") or "")
                if text.strip():  # newer releases keep only the signature
                    body = self._flags(rec, text_body(text, ts=ts))
                    ops.append(RowOp("append", row, "thinking", body))
            elif btype == "tool_use":
                ops.append(self._tool_use(rec, block, ts))
            else:
                log.debug("claude-code: skipping a %r block", btype)
        return ops

    def _api_error(
        self, rec: dict[str, Any], uuid: str, content: list[Any], ts: Any
    ) -> list[RowOp]:
        """An error Claude Code wrote in the model's place ("Prompt is too long", …)."""
        text = text_of(content)
        if not text.strip():
            return []
        error = rec.get("error") if isinstance(rec.get("error"), str) else None
        body = text_body(text, subtype="api_error", error=error, ts=ts)
        return [RowOp("append", uuid, "system", self._flags(rec, body))]

    def _tool_use(self, rec: dict[str, Any], block: dict[str, Any], ts: Any) -> RowOp:
        call = block.get("id")
        if not isinstance(call, str) or not call:
            raise ValueError("tool_use without id")
        name = str(block.get("name") or "unknown")
        tool_input, cut = clipped_input(block.get("input"))
        known = self._flags(rec, {"name": name, "input": tool_input, "ts": ts})
        if cut:
            known["truncated"] = True
        self.pending[call] = known
        while len(self.pending) > _MAX_PENDING:  # calls whose results never came
            self.pending.pop(next(iter(self.pending)))
        return RowOp("upsert", call, "tool", self._running(known, "pending"))

    @staticmethod
    def _running(
        known: dict[str, Any], status: str, output: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        flags = {k: known.get(k) for k in ("sidechain", "agent", "truncated")}
        return tool_body(
            known["name"], known["input"], status, output, ts=known.get("ts"), **flags, **extra
        )

    def _progress(self, rec: dict[str, Any]) -> list[RowOp]:
        data = rec.get("data")
        call = rec.get("parentToolUseID")
        if not isinstance(data, dict) or not isinstance(call, str):
            return []
        known = self.pending.get(call)
        if known is None:
            return []
        if data.get("type") == "bash_progress":
            output = data.get("output")
            body = self._running(known, "running", output if isinstance(output, str) else None)
            return [RowOp("upsert", call, "tool", body)]
        agent = data.get("agentId")
        if data.get("type") == "agent_progress" and isinstance(agent, str) and agent:
            if known.get("subagent"):
                return []  # already linked: one update is enough
            known["agent_id"], known["subagent"] = agent, self._subagent(rec, agent)
            body = self._running(known, "running", agent_id=agent, subagent=known["subagent"])
            return [RowOp("upsert", call, "tool", body)]
        return []

    def _system(self, rec: dict[str, Any]) -> list[RowOp]:
        uuid = rec.get("uuid")
        content = rec.get("content")
        if not isinstance(uuid, str) or not isinstance(content, str) or not content.strip():
            return []  # bookkeeping (turn durations, hook summaries) carries no text
        ts = rec.get("timestamp")
        parsed = command.parse(content)  # 2.x: local commands as system lines
        if isinstance(parsed, command.Command):
            body = text_body(parsed.text, name=parsed.name, args=parsed.args or None, ts=ts)
            return [RowOp("append", uuid, "command", self._flags(rec, body))]
        if isinstance(parsed, command.Output):
            if not parsed.text:
                return []
            body = text_body(parsed.text, subtype="command_output", ts=ts)
            return [RowOp("append", uuid, "system", self._flags(rec, body))]
        body = text_body(content, subtype=rec.get("subtype"), ts=ts)
        return [RowOp("append", uuid, "system", self._flags(rec, body))]

    @staticmethod
    def _flags(rec: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        if rec.get("isSidechain"):
            body["sidechain"] = True
            agent = rec.get("agentId")
            if isinstance(agent, str) and agent:
                body["agent"] = agent
        return body


SOURCE = Source(NAME, session_of, Mapper)
