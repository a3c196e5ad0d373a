"""Bundled connectors: follow an agent's transcript files and push their rows.

- ``claude_code``: Claude Code's session transcripts (``~/.claude/projects/**/*.jsonl``),
  with ``command`` (slash-command tags), ``prompts`` (the queue of prompts typed
  while the agent is busy), ``titles`` (summaries and titles of a session) and
  ``blocks`` (the text and token counts of an API message)
- ``codex``: Codex's rollout files (``~/.codex/sessions/YYYY/MM/DD/rollout-*.jsonl``),
  with ``codex_output`` (a tool output read back: failed or not, exit code, duration)
- ``tail``: the file follower both use (offsets persisted, new files and lines followed)
- ``row``: the row operation and the body helpers (clipping, the whole-body cap,
  sanitizing for jsonb)

Each connector is a pure mapper (a record in, row operations out, with a little
in-memory state such as the tool calls still waiting for their results) kept
apart from the file I/O in ``tail``. Each connector's docstring lists how every
record type it has met maps to rows, and which it skips on purpose and why.

Row bodies share one small vocabulary, so a UI can render any source:

| kind | body |
|---|---|
| ``user`` | ``{"text", "ts"?, "queued"?}`` |
| ``assistant`` | ``{"text", "model"?, "usage"?, "message"?, "streaming"?, "ts"?}`` |
| ``thinking`` | ``{"text", "ts"?}`` |
| ``tool`` | ``{"name", "input", "status", "output"?, "exit_code"?, "duration_ms"?, …}`` |
| ``command`` | ``{"text", "name", "args"?, "ts"?}``: a slash or ``!`` command the user ran |
| ``system`` | ``{"text", "subtype"?, "error"?, "ts"?}``; ``command_output``: what a command |
| | printed; ``api_error``: an API error written in the model's place |
| ``interruption`` | ``{"text", "reason"?, "ts"?}``: the user stopped the agent |
| ``compaction`` | ``{"text", "ts"?}``: the summary that replaced older context |
| ``summary`` | ``{"text", "title"?}``: a title of the session |

A tool's ``status`` is ``pending``, ``running``, ``completed`` or ``failed``; it
may also carry ``agent_id``/``subagent`` (below), ``ts`` (called) and ``ended``;
``usage`` holds the model's token counts (``input_tokens``, ``output_tokens``, …).
Rows of a subagent's conversation carry ``sidechain: true`` (and ``agent``); a
tool row that started a subagent names the subagent's session in ``subagent``.
Long strings are clipped and a tool body is capped as a whole (``"truncated":
true`` is then set); text jsonb refuses (NUL, lone surrogates) is replaced and
``"sanitized"`` says so.
"""
