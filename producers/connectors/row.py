"""A row operation produced by a connector's mapper, and the helpers that keep
bodies readable and well under the entry size limit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TEXT_LIMIT = 64 * 1024
"""Characters kept of one message's text."""
OUTPUT_LIMIT = 32 * 1024
"""Characters kept of one tool's output."""
INPUT_STRING_LIMIT = 8 * 1024
"""Characters kept of each string inside a tool's input (file contents, patches)."""


@dataclass(frozen=True, slots=True)
class RowOp:
    op: str  # "append" (immutable records) or "upsert" (rows that change)
    row: str
    kind: str
    body: dict[str, Any]


def clip(text: str, limit: int) -> tuple[str, bool]:
    """``text`` cut to ``limit`` characters (with a marker), and whether it was cut."""
    if len(text) <= limit:
        return text, False
    return text[:limit] + f"\n… [{len(text) - limit} more characters]", True


def clip_json(value: Any, limit: int = INPUT_STRING_LIMIT) -> tuple[Any, bool]:
    """A JSON value with every string clipped; whether anything was cut."""
    if isinstance(value, str):
        return clip(value, limit)
    if isinstance(value, list):
        cut = False
        out = []
        for v in value:
            c, t = clip_json(v, limit)
            out.append(c)
            cut |= t
        return out, cut
    if isinstance(value, dict):
        cut = False
        res: dict[str, Any] = {}
        for k, v in value.items():
            c, t = clip_json(v, limit)
            res[str(k)] = c
            cut |= t
        return res, cut
    return value, False


def text_body(text: str, limit: int = TEXT_LIMIT, **extra: Any) -> dict[str, Any]:
    """``{"text": ..., **extra}`` with the text clipped; ``None`` extras are left out."""
    clipped, cut = clip(text, limit)
    body: dict[str, Any] = {"text": clipped}
    body.update({k: v for k, v in extra.items() if v is not None})
    if cut:
        body["truncated"] = True
    return body


def tool_body(
    name: str,
    input: Any,
    status: str,
    output: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "input": input, "status": status}
    if output is not None:
        clipped, cut = clip(output, OUTPUT_LIMIT)
        body["output"] = clipped
        if cut:
            body["truncated"] = True
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def clipped_input(value: Any) -> tuple[Any, bool]:
    return clip_json(value, INPUT_STRING_LIMIT)
