"""Pieces of an Anthropic Messages API ``message`` as Claude Code writes them: the
text of a tool result's content blocks, and the token counts of ``usage``."""

from __future__ import annotations

from typing import Any


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


def usage(message: dict[str, Any]) -> dict[str, int] | None:
    """The token counts of ``message.usage`` (``input_tokens``, ``output_tokens``, …)."""
    found = message.get("usage")
    if not isinstance(found, dict):
        return None
    kept = {k: v for k, v in found.items() if k.endswith("_tokens") and isinstance(v, int)}
    return kept or None


def text_of(content: list[Any]) -> str:
    """The ``text`` blocks of a message's content, joined."""
    return "\n".join(
        str(b.get("text") or "") for b in content if isinstance(b, dict) and b.get("type") == "text"
    )
