"""A row operation produced by a connector's mapper, and the helpers that keep
bodies readable, acceptable to jsonb, and well under the entry size limit."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

TEXT_LIMIT = 64 * 1024
"""Characters kept of one message's text."""
OUTPUT_LIMIT = 32 * 1024
"""Characters kept of one tool's output."""
INPUT_STRING_LIMIT = 8 * 1024
"""Characters kept of each string inside a tool's input (file contents, patches)."""
TOOL_BODY_LIMIT = 192 * 1024
"""Bytes of one tool body as JSON. Each string is clipped on its own, but a call
with many arguments (an 80-edit MultiEdit) could still pass the 1 MiB entry limit
and be refused, so the body as a whole is shrunk until it fits."""
_MIN_STRING = 200

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_SURROGATE = re.compile("[\ud800-\udfff]")
SANITIZED_NOTE = "NUL characters removed and lone surrogates replaced (jsonb accepts neither)"


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


def map_strings(
    value: Any, fn: Callable[[str], tuple[str, bool]], keys: bool = False
) -> tuple[Any, bool]:
    """A JSON value with ``fn`` applied to every string (and to every key, with
    ``keys``); whether ``fn`` changed anything."""
    if isinstance(value, str):
        return fn(value)
    changed = False
    if isinstance(value, list):
        out = []
        for v in value:
            c, t = map_strings(v, fn, keys)
            out.append(c)
            changed |= t
        return out, changed
    if isinstance(value, dict):
        res: dict[str, Any] = {}
        for k, v in value.items():
            ck, tk = fn(str(k)) if keys else (str(k), False)
            cv, tv = map_strings(v, fn, keys)
            res[ck] = cv
            changed |= tk or tv
        return res, changed
    return value, False


def clip_json(value: Any, limit: int = INPUT_STRING_LIMIT) -> tuple[Any, bool]:
    """A JSON value with every string clipped; whether anything was cut."""
    return map_strings(value, lambda s: clip(s, limit))


def strip_ansi(text: str) -> str:
    """Terminal escape sequences (colours, cursor moves) removed: a UI shows text."""
    return _ANSI.sub("", text) if "\x1b" in text else text


def _clean_text(value: str) -> tuple[str, bool]:
    if "\x00" not in value and not _SURROGATE.search(value):
        return value, False
    return _SURROGATE.sub("\ufffd", value.replace("\x00", "")), True


def sanitize(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with what jsonb refuses taken out of every string (NUL removed, lone
    surrogates replaced by U+FFFD) and a note saying so; unchanged bodies are
    returned as they are."""
    try:  # the common case, decided in C: valid UTF-8 and no NUL (escaped by orjson)
        if b"\\u0000" not in orjson.dumps(body):
            return body
    except TypeError:
        pass
    cleaned, changed = map_strings(body, _clean_text, keys=True)
    if not changed:
        return body
    cleaned["sanitized"] = SANITIZED_NOTE
    return cleaned


def text_body(text: str, limit: int = TEXT_LIMIT, **extra: Any) -> dict[str, Any]:
    """``{"text": ..., **extra}`` with the text clipped; ``None`` extras are left out."""
    clipped, cut = clip(text, limit)
    body: dict[str, Any] = {"text": clipped}
    body.update({k: v for k, v in extra.items() if v is not None})
    if cut:
        body["truncated"] = True
    return body


def _size(value: Any) -> int:
    try:
        return len(orjson.dumps(value))
    except TypeError:  # lone surrogates: sanitize() replaces them later, same length in UTF-8
        return len(repr(value).encode("utf-8", "replace"))


def fit_input(value: Any, budget: int = TOOL_BODY_LIMIT // 2) -> tuple[Any, bool]:
    """A tool's input with every string clipped, then clipped harder until the whole
    fits ``budget`` bytes of JSON; past that, a clipped JSON text of it."""
    limit = INPUT_STRING_LIMIT
    out, cut = clip_json(value, limit)
    while _size(out) > budget and limit > _MIN_STRING:
        limit //= 2
        out, cut = clip_json(value, limit)
    if _size(out) > budget:  # thousands of small values: keep a readable prefix
        try:
            text = orjson.dumps(value).decode()
        except TypeError:
            text = repr(value)
        out, cut = clip(text, budget // 4)[0], True
    return out, cut


def tool_body(
    name: str,
    input: Any,
    status: str,
    output: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A tool row's body, at most ``TOOL_BODY_LIMIT`` bytes as JSON (its output is
    clipped to what the input leaves); ``truncated`` is set when anything was cut."""
    body: dict[str, Any] = {"name": name, "input": input, "status": status}
    body.update({k: v for k, v in extra.items() if v is not None})
    if output is not None:
        room = max(TOOL_BODY_LIMIT - _size(body), 4 * 1024)
        clipped, cut = clip(output, min(OUTPUT_LIMIT, room // 6))  # \uXXXX: 6 bytes a char
        body["output"] = clipped
        if cut:
            body["truncated"] = True
    return body


def clipped_input(value: Any) -> tuple[Any, bool]:
    return fit_input(value)
