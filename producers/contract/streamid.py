"""Redis stream entry ids (``MS-SEQ``) as ordered pairs of integers.

Entry ids order the input streams: the writer's stored offset, replay
ranges and dead-letter ids are all compared as these pairs.
"""

from __future__ import annotations

import re

from rowcast.contract.errors import ConfigError

StreamId = tuple[int, int]
MAX_PART = (1 << 64) - 1
"""The largest value of either part of an id."""

_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")


def parse(raw: bytes | str) -> StreamId:
    """An id Redis returned (always well-formed)."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def fmt(sid: StreamId) -> str:
    return f"{sid[0]}-{sid[1]}"


def as_id(raw: bytes | str | None) -> StreamId | None:
    """A full ``MS-SEQ`` id from untrusted text (a stored ``origin`` field), or None."""
    if raw is None:
        return None
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    m = _ID.fullmatch(text)
    if m is None or m.group(2) is None:
        return None
    ms, seq = int(m.group(1)), int(m.group(2))
    return (ms, seq) if ms <= MAX_PART and seq <= MAX_PART else None


def from_option(value: str, option: str, end: bool = False) -> StreamId:
    """An id given on the command line: ``MS-SEQ`` or ``MS`` (``-`` and ``+``
    for the very start and end). A bare ``MS`` means its first entry as a
    start and its last as an end, like XRANGE. Raises ConfigError (exit 2)."""
    v = value.strip()
    if v == "-":
        return (0, 0)
    if v == "+":
        return (MAX_PART, MAX_PART)
    m = _ID.fullmatch(v)
    if m is None:
        raise ConfigError(
            f"{option} {value!r} is not a stream entry id (expected MS-SEQ, e.g. 1700000000000-0)"
        )
    ms = int(m.group(1))
    seq = int(m.group(2)) if m.group(2) is not None else (MAX_PART if end else 0)
    if ms > MAX_PART or seq > MAX_PART:
        raise ConfigError(f"{option} {value!r} is out of range")
    return ms, seq
