"""Bundled connectors: follow an agent's transcript files and push their rows.

- ``claude_code``: Claude Code's session transcripts (``~/.claude/projects/**/*.jsonl``)
- ``codex``: Codex's rollout files (``~/.codex/sessions/YYYY/MM/DD/rollout-*.jsonl``)
- ``tail``: the file follower both use (offsets persisted, new files and lines followed)

Each connector is a pure mapper (a record in, row operations out, with a little
in-memory state such as the tool calls still waiting for their results) kept
apart from the file I/O in ``tail``.

Row bodies share one small vocabulary, so a UI can render any source:

| kind | body |
|---|---|
| ``user`` | ``{"text", "ts"?}`` |
| ``assistant`` | ``{"text", "model"?, "streaming"?, "ts"?}`` |
| ``thinking`` | ``{"text", "ts"?}`` |
| ``tool`` | ``{"name", "input", "status", "output"?, "exit_code"?, "ts"?, "ended"?}`` |
| ``system`` | ``{"text", "subtype"?, "ts"?}`` |
| ``summary`` | ``{"text"}`` |

A tool's ``status`` is ``pending``, ``running``, ``completed`` or ``failed``.
Long strings are clipped (``"truncated": true`` is then set on the body).
"""
