"""The entry wire format: the fields of one XADD to ``P:{N}:entries``.

Pure functions shared by producers (check before sending) and the writer
(check what arrived). PostgreSQL stays the final judge of a body: what passes
here and is still refused there is isolated by the writer and dead-lettered.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Container, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from rowcast.contract.errors import InvalidEntry


class Op(StrEnum):
    """What an entry does to its row (a str: it travels as its value)."""

    APPEND = "append"
    """Insert the row if it is new; otherwise nothing (a duplicate)."""
    UPSERT = "upsert"
    """Insert, or replace kind and body."""
    EXTEND = "extend"
    """Insert, or append the body's strings to the row's, key by key."""


OPS = frozenset(Op)
MAX_ID_BYTES = 200
MAX_KIND_BYTES = 64
DEFAULT_MAX_BODY = 1 << 20
MAX_DEPTH = 1024
"""Deepest nesting of a JSON document rowcast reads (orjson's limit)."""

_STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
ORIGIN = "rowcast.origin"
"""The field ``rowcast replay`` adds: the entry's original id. Fields named
``rowcast.*`` are reserved for rowcast's own tools; every other field the
contract does not name is ignored (a producer's own ``origin`` included)."""
KNOWN = (b"op", b"session", b"row", b"kind", b"body", b"reply", b"ts", ORIGIN.encode())
"""Fields with a meaning: each may appear once in an entry."""
_ORIGIN = ORIGIN.encode()
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,128}")
# Cc: C0 controls, DEL and C1 controls.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class Entry:
    op: Op | str
    """An ``Op`` (a plain string of one is accepted and compares equal)."""
    session: str
    row: str
    kind: str
    body: bytes
    """JSON text, exactly as it travels (never re-encoded on the write path)."""
    reply: str | None = None
    ts: int | None = None
    origin: str | None = None
    """For an entry re-fed by ``rowcast replay``: the id it had originally."""

    def fields(self) -> dict[str, str | bytes]:
        out: dict[str, str | bytes] = {
            "op": self.op,
            "session": self.session,
            "row": self.row,
            "kind": self.kind,
            "body": self.body,
        }
        if self.reply is not None:
            out["reply"] = self.reply
        if self.ts is not None:
            out["ts"] = str(self.ts)
        if self.origin is not None:
            out[ORIGIN] = self.origin
        return out


def check_id(name: str, value: bytes | str) -> str:
    """A session or row id: 1-200 bytes of UTF-8 without control characters."""
    raw = value.encode() if isinstance(value, str) else value
    if not raw:
        raise InvalidEntry(f"{name} is empty")
    if len(raw) > MAX_ID_BYTES:
        raise InvalidEntry(f"{name} is {len(raw)} bytes, over the limit of {MAX_ID_BYTES}")
    text = _utf8(name, raw)
    if _CONTROL.search(text):
        raise InvalidEntry(f"{name} contains a control character")
    return text


def check_kind(value: bytes | str) -> str:
    """1-64 bytes of text, as the contract says; only NUL is refused, which
    PostgreSQL's text cannot hold. (Every place that prints a kind escapes
    control characters: ops/admin/shell.py, the UI's text nodes.)"""
    raw = value.encode() if isinstance(value, str) else value
    if not raw:
        raise InvalidEntry("kind is empty")
    if len(raw) > MAX_KIND_BYTES:
        raise InvalidEntry(f"kind is {len(raw)} bytes, over the limit of {MAX_KIND_BYTES}")
    text = _utf8("kind", raw)
    if "\x00" in text:
        raise InvalidEntry("kind contains NUL, which PostgreSQL's text cannot hold")
    return text


def check_op(value: bytes | str) -> Op:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    try:
        return Op(text)
    except ValueError:
        expected = "expected append, upsert or extend"
        raise InvalidEntry(f"unknown op {text[:40]!r} ({expected})") from None


def check_token(value: bytes | str) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if not _TOKEN.fullmatch(text):
        raise InvalidEntry("reply token must be 1-128 characters of [A-Za-z0-9_-]")
    return text


def check_body(body: bytes, max_body: int = DEFAULT_MAX_BODY, op: Op | str = Op.UPSERT) -> None:
    """Refuse what PostgreSQL's jsonb would refuse, as far as it is cheap to know;
    an extend's body must be an object (its keys say where the text goes)."""
    if len(body) > max_body:
        raise InvalidEntry(f"body is {len(body)} bytes, over the limit of {max_body}")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        if str(e).startswith("depth limit exceeded"):
            raise InvalidEntry(
                f"body is nested deeper than {MAX_DEPTH} levels (the depth limit)"
            ) from None
        # orjson is stricter than jsonb on huge numbers: let PostgreSQL judge
        # what the standard parser still accepts.
        value = _check_body_slow(body, e)
    else:
        if b"\\u0000" in body and _has_nul(value):
            raise InvalidEntry("body is not valid for jsonb: \\u0000 is not allowed")
    if op == Op.EXTEND and not isinstance(value, dict):
        raise InvalidEntry(f"an extend's body must be a JSON object, not {_json_type(value)}")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    return "a number"


def _check_body_slow(body: bytes, first: Exception) -> Any:
    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidEntry(f"body is not valid JSON: not UTF-8 (byte {e.start})") from None
    try:
        # Numbers are only checked for their syntax: Python's int() refuses
        # more than 4,300 digits, which jsonb stores.
        with json_depth():
            value = json.loads(
                text, parse_constant=no_constants, parse_int=_number, parse_float=_number
            )
    except RecursionError:
        raise InvalidEntry(
            f"body is nested deeper than {MAX_DEPTH} levels (the depth limit)"
        ) from None
    except ValueError:
        raise InvalidEntry(f"body is not valid JSON: {_why(first)}") from None
    if _has_bad_string(value):
        raise InvalidEntry("body is not valid for jsonb: \\u0000 or a lone surrogate")
    return value


def _number(text: str) -> int:
    return 0


def _why(e: Exception) -> str:
    """orjson's reason, in the words of the limit behind it."""
    text = str(e)
    if text.startswith("depth limit exceeded"):
        return f"nested deeper than {MAX_DEPTH} levels (the depth limit)"
    return text


def json_error(e: orjson.JSONDecodeError, raw: bytes) -> str:
    """Why a document orjson refused is refused, said plainly: invalid UTF-8
    and nesting beyond the limit are not "not JSON"."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as u:
        return f"not UTF-8 (byte {u.start})"
    return _why(e)


@contextmanager
def json_depth() -> Iterator[None]:
    """Python's recursion limit, for a moment, deep enough for the standard
    parser to read what jsonb and orjson read (``MAX_DEPTH`` levels)."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, MAX_DEPTH + 500))
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


def _strings(value: Any) -> Iterator[str]:
    """Every string of a parsed document, keys included, without recursion
    (a document 1,000 levels deep must not overflow Python's stack)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            yield v
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v)
            stack.extend(v.values())


def _has_nul(value: Any) -> bool:
    return any("\x00" in s for s in _strings(value))


def _has_bad_string(value: Any) -> bool:
    """A NUL, or a lone surrogate (which UTF-8 cannot encode)."""
    for s in _strings(value):
        if "\x00" in s:
            return True
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            return True
    return False


def _utf8(name: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEntry(f"{name} is not valid UTF-8") from None


def reply_token(fields: dict[bytes, bytes]) -> str | None:
    """The entry's reply token if it has a valid one (an error receipt can go there)."""
    raw = fields.get(b"reply")
    if raw is None:
        return None
    try:
        return check_token(raw)
    except InvalidEntry:
        return None


class Repeated(dict[bytes, bytes]):
    """An entry's fields when a name appears more than once (Redis keeps
    them all): the last value of each name, and ``flat``, every field as it
    came, for a dead letter byte for byte."""

    __slots__ = ("flat",)

    def __init__(self, flat: list[bytes]) -> None:
        super().__init__(zip(flat[::2], flat[1::2], strict=True))
        self.flat = flat


def fields_of(flat: list[bytes]) -> dict[bytes, bytes]:
    """A stream entry's flat field list as a mapping (``Repeated`` when a
    name repeats)."""
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    return fields if len(fields) * 2 == len(flat) else Repeated(flat)


def flat_of(fields: Mapping[bytes, bytes]) -> list[bytes]:
    """The inverse of ``fields_of``: every field as it came."""
    if isinstance(fields, Repeated):
        return fields.flat
    return [x for kv in fields.items() for x in kv]


def without(flat: list[bytes], names: Container[bytes]) -> list[bytes]:
    """A flat field list less every field with one of ``names`` (each repeat
    too); the others stay as they came, repeats included."""
    pairs = zip(flat[::2], flat[1::2], strict=True)
    return [x for k, v in pairs if k not in names for x in (k, v)]


def parse(fields: dict[bytes, bytes], max_body: int = DEFAULT_MAX_BODY) -> Entry:
    """Check the fields of one stream entry; raise InvalidEntry with the reason."""
    if isinstance(fields, Repeated):
        names = fields.flat[::2]
        twice = [n.decode("utf-8", "replace") for n in KNOWN if names.count(n) > 1]
        if twice:
            # Which value was meant is unknowable: refuse rather than guess.
            raise InvalidEntry(f"field {twice[0]} appears more than once")
    missing = [f for f in ("op", "session", "row", "kind", "body") if f.encode() not in fields]
    if missing:
        raise InvalidEntry(
            "missing field" + ("s " if len(missing) > 1 else " ") + ", ".join(missing)
        )
    op = check_op(fields[b"op"])
    session = check_id("session", fields[b"session"])
    row = check_id("row", fields[b"row"])
    kind = check_kind(fields[b"kind"])
    reply = None
    if b"reply" in fields:
        reply = check_token(fields[b"reply"])
    ts = None
    if b"ts" in fields:
        # ts is informational only: a malformed one is ignored, never a reason to lose a row.
        try:
            ts = int(fields[b"ts"])
        except ValueError:
            ts = None
    origin = None
    raw_origin = fields.get(_ORIGIN)
    if raw_origin is not None:
        origin = raw_origin.decode("utf-8", "replace")
        if not _STREAM_ID.fullmatch(origin):
            raise InvalidEntry(f"{ORIGIN} is not a stream entry id (ms-seq)")
    body = fields[b"body"]
    check_body(body, max_body, op)
    return Entry(op, session, row, kind, body, reply, ts, origin)


def encode_body(body: Any) -> bytes:
    """A producer's body as JSON text; bytes are taken as JSON text already."""
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    try:
        return orjson.dumps(body)
    except TypeError as e:
        if str(e) != "Recursion limit reached":
            raise InvalidEntry(f"body is not JSON-serializable: {e}") from None
    # orjson writes at most 254 levels; the standard encoder goes deeper.
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    except RecursionError:
        raise InvalidEntry("body is nested too deeply to encode") from None
    except (TypeError, ValueError) as e:
        raise InvalidEntry(f"body is not JSON-serializable: {e}") from None
