"""What Codex wrote as a tool's output, read back: the text, whether the call
failed, its exit code and duration. Codex keeps no ``success`` flag in its
rollouts, so each shape it has written is recognised (tests/fixtures/real):

- a plain string: the output, or one of Codex's own error texts (``failed in
  sandbox … exit code: N, stdout: …``, ``execution error: …``, ``patch rejected by
  user``, ``error: Failed to find expected lines …`` from apply_patch, ``tool call
  error: …`` from an MCP tool; 2025's rollouts without envelope and later ones);
- a JSON text ``{"output", "metadata": {"exit_code", "duration_seconds"}}``
  (0.4x-0.5x, and the shell tool before them);
- a header ``Exit code: N / Wall time: S seconds / Output:`` (0.6x), or the
  unified-exec header ``Chunk ID / Wall time / Process exited with code N / Output:``;
- ``{"content", "success"}`` (older releases) or a list of content items;
- the ``exec_command_end`` event's ``duration`` (``{"secs", "nanos"}``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_FAILURE_TEXT = (
    "failed in sandbox",
    "execution error:",
    "patch rejected by user",
    "exec command rejected by user",
    "command timed out",
    "aborted by user",
    "tool call error:",
)
_ERROR = "error:"
"""How Codex's own errors start (apply_patch's "error: Failed to find expected lines
…"): a failure when it is the whole output, not when a command printed it."""
_SANDBOX_CODE = re.compile(r"failed in sandbox [^\n]*?exit code: (-?\d+)")
_HEADER = re.compile(
    r"(?:Command: [^\n]*\n)?(?:Chunk ID: [^\n]*\n)?"
    r"(?:Exit code: (?P<exit>-?\d+)\n)?"
    r"(?:Wall time: (?P<wall>[0-9.]+) seconds\n)?"
    r"(?:Process exited with code (?P<code>-?\d+)\n|Process running with session ID [^\n]*\n)?"
    r"(?:Original token count: [^\n]*\n)?(?:Total output lines: [^\n]*\n)?"
    r"Output:\n"
)


def text(content: Any) -> str:
    """The text of a message's or an output's content: a string or a list of items."""
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


@dataclass(frozen=True, slots=True)
class Result:
    """A tool output as Codex wrote it, read back."""

    text: str
    failed: bool
    exit_code: int | None = None
    duration_ms: int | None = None


def _ms(seconds: Any) -> int | None:
    try:
        return round(float(seconds) * 1000)
    except (TypeError, ValueError):
        return None


def _failed_text(out: str) -> bool:
    return out.lstrip().lower().startswith(_FAILURE_TEXT)


def _plain(out: str) -> Result:
    """A plain output: the output itself, or one of Codex's own error texts."""
    start = out.lstrip()
    if start.lower().startswith(_ERROR):
        return Result(out, True)
    if not _failed_text(start):
        return Result(out, False)
    m = _SANDBOX_CODE.match(start[:300])
    return Result(out, True, int(m[1]) if m else None)


def output(raw: Any) -> Result:
    """A tool output's text, whether it reports a failure, its exit code and duration."""
    if isinstance(raw, dict):  # older releases: {"content": ..., "success": bool}
        out = text(raw.get("content"))
        return Result(out, raw.get("success") is False or _failed_text(out))
    if isinstance(raw, list):
        out = text(raw)
        return Result(out, _failed_text(out))
    out = "" if raw is None else str(raw)
    if out.startswith("{") and '"output"' in out:  # 0.4x-0.5x: JSON with metadata
        try:
            data = json.loads(out)
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("output"), str):
            meta: dict[str, Any] = (
                data["metadata"] if isinstance(data.get("metadata"), dict) else {}
            )
            code = meta.get("exit_code")
            code = code if isinstance(code, int) and not isinstance(code, bool) else None
            inner = data["output"]
            failed = code not in (0, None) or _failed_text(inner)
            return Result(inner, failed, code, _ms(meta.get("duration_seconds")))
    m = _HEADER.match(out)
    if m and (m["exit"] or m["code"] or m["wall"]):  # 0.6x and unified exec: a text header
        found = m["exit"] or m["code"]
        code = int(found) if found is not None else None
        return Result(out[m.end() :], code not in (0, None), code, _ms(m["wall"]))
    return _plain(out)


def duration(value: Any) -> int | None:
    """``exec_command_end``'s duration: ``{"secs", "nanos"}`` (serde's Duration) or seconds."""
    if isinstance(value, dict):
        secs, nanos = value.get("secs"), value.get("nanos")
        if isinstance(secs, int) and isinstance(nanos, int):
            return secs * 1000 + nanos // 1_000_000
        return None
    return _ms(value) if isinstance(value, int | float) else None
