"""``rowcast produce [--wait]``: JSON lines on stdin become entries.

Each line is ``{"op", "session", "row", "kind", "body"}`` (op: append, upsert or
extend). A line that cannot become an entry is reported on stderr (``line N:
why``) and, with ``--wait``, answered by an error receipt on stdout, so output
lines match input lines.
Exit 1 when any line was refused.

Lines are pushed in chunks. When Redis stores only part of a chunk (a node
answering MOVED to a plain URL, a master lost mid-push, or with ``--durable``
no replica confirming in time) each line of that chunk not queued is reported
(``line N: not queued: why``, with ``--wait`` as an error receipt too), the
lines that were queued are waited for as usual, nothing after the chunk is
read, and the exit status is 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from collections.abc import Iterator
from typing import IO, Any

import orjson

from rowcast.contract.entry import Entry, json_depth, json_error
from rowcast.contract.errors import InvalidEntry, NotQueued
from rowcast.ops.settings import Settings
from rowcast.producers.producer import Producer, make_entry, timeout_reason, with_replies

CHUNK = 500


def parse_line(line: bytes, max_body: int) -> Entry:
    if not line.strip():
        # Still answered, so output line N is always the answer to input line N.
        raise InvalidEntry("blank line (expected a JSON object)")
    try:
        members = _members(line.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        # Not an object of JSON: orjson says why, in the words used for bodies.
        try:
            orjson.loads(line)
        except orjson.JSONDecodeError as e:
            raise InvalidEntry(f"not JSON: {json_error(e, line)}") from None
        raise InvalidEntry("expected a JSON object") from None
    missing = [k for k in ("op", "session", "row", "kind", "body") if k not in members]
    if missing:
        raise InvalidEntry(f"missing {', '.join(missing)}")
    for k in ("op", "session", "row", "kind"):
        if not isinstance(members[k][0], str):
            raise InvalidEntry(f"{k} must be a string")
    op, session, row, kind = (members[k][0] for k in ("op", "session", "row", "kind"))
    # The body travels as the line's own text: re-encoding it would round a
    # 30-digit integer to a double.
    return make_entry(op, session, row, kind, members["body"][1].encode(), max_body)


# The top-level members of the line, each with its raw text, read with the
# standard library's own scanner (numbers are only skipped over, so none is
# rounded or refused for its size).
_DECODER = json.JSONDecoder(parse_int=lambda _: 0, parse_float=lambda _: 0.0)


def _skip(text: str, i: int) -> int:
    """The index of the first character at or after ``i`` that is not JSON whitespace."""
    while i < len(text) and text[i] in " \t\n\r":
        i += 1
    return i


def _members(text: str) -> dict[str, tuple[Any, str]]:
    """name -> (value, the value's JSON text) of a JSON object's members;
    ValueError (or RecursionError past jsonb's depth) when it is not one."""
    with json_depth():
        return _scan(text)


def _scan(text: str) -> dict[str, tuple[Any, str]]:
    i = _skip(text, 0)
    if text[i : i + 1] != "{":
        raise ValueError
    i = _skip(text, i + 1)
    out: dict[str, tuple[Any, str]] = {}
    while text[i : i + 1] != "}":
        if text[i : i + 1] != '"':
            raise ValueError
        name, i = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]
        i = _skip(text, i)
        if text[i : i + 1] != ":":
            raise ValueError
        start = _skip(text, i + 1)
        value, i = _DECODER.raw_decode(text, start)
        out[name] = (value, text[start:i])
        i = _skip(text, i)
        if text[i : i + 1] == ",":
            i = _skip(text, i + 1)
            if text[i : i + 1] == "}":
                raise ValueError
    if _skip(text, i + 1) != len(text):
        raise ValueError
    return out


def _chunks(stream: IO[bytes]) -> Iterator[list[tuple[int, bytes]]]:
    chunk: list[tuple[int, bytes]] = []
    for n, line in enumerate(stream, 1):
        chunk.append((n, line))
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def produce(
    producer: Producer, stdin: IO[bytes], stdout: IO[bytes], wait: bool, timeout: float
) -> int:
    refused = 0
    for chunk in _chunks(stdin):
        slots: list[Entry | dict[str, Any]] = []
        for n, line in chunk:
            try:
                slots.append(parse_line(line, producer.max_body))
            except InvalidEntry as e:
                refused += 1
                sys.stderr.write(f"rowcast: line {n}: {e}\n")
                slots.append({"ok": False, "error": f"line {n}: {e}"})
        numbers = [n for (n, _), s in zip(chunk, slots, strict=True) if isinstance(s, Entry)]
        entries = [s for s in slots if isinstance(s, Entry)]
        if wait:
            entries = with_replies(entries)
        failed = await _push(producer, entries, numbers)
        if wait:
            queued = [i for i in range(len(entries)) if i not in failed]
            got = await producer.collect_each([entries[i] for i in queued], timeout)
            receipts = iter(_answers(queued, got, entries, numbers, timeout))
            at = iter(range(len(entries)))
            for s in slots:
                if isinstance(s, Entry):
                    i = next(at)
                    payload = failed[i] if i in failed else next(receipts)
                else:
                    payload = s
                if not payload.get("ok"):
                    refused += isinstance(s, Entry)
                stdout.write(orjson.dumps(payload) + b"\n")
            stdout.flush()
        if failed:
            last = chunk[-1][0]
            sys.stderr.write(
                f"rowcast: {len(failed)} of {len(entries)} entries of lines {chunk[0][0]}..{last}"
                f" not queued (listed above); stopped, lines after {last} were not read\n"
            )
            return 2
    return 1 if refused else 0


def _answers(
    queued: list[int],
    got: list[dict[str, Any] | None],
    entries: list[Entry],
    numbers: list[int],
    timeout: float,
) -> Iterator[dict[str, Any]]:
    """Each receipt, or for one that did not come in time an error receipt
    (reported on stderr too): the lines after it are still answered."""
    for i, receipt in zip(queued, got, strict=True):
        if receipt is None:
            text = f"line {numbers[i]}: {timeout_reason(entries[i], timeout)}"
            sys.stderr.write(f"rowcast: {text}\n")
            # "timeout": unlike a refusal, the entry may still be stored.
            receipt = {"ok": False, "error": text, "timeout": True}
        yield receipt


async def _push(
    producer: Producer, entries: list[Entry], numbers: list[int]
) -> dict[int, dict[str, Any]]:
    """Push; the error receipt of each entry not queued, by its index."""
    try:
        await producer.push_many(entries)
        return {}
    except NotQueued as e:
        failed: dict[int, dict[str, Any]] = {}
        for i, (entry_id, why) in enumerate(zip(e.ids, e.errors, strict=True)):
            if why is None:
                continue
            where = f" (stored as {entry_id})" if entry_id is not None else ""
            text = f"line {numbers[i]}: not queued{where}: {why}"
            sys.stderr.write(f"rowcast: {text}\n")
            failed[i] = {"ok": False, "error": text}
        return failed


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true", help="print one receipt per line")
    p.add_argument("--timeout", type=seconds, default=30.0, help="seconds to wait for the receipts")
    p.add_argument(
        "--durable",
        action="store_true",
        help="count a line as queued only once a replica holds it (WAIT)",
    )


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text[:20]} is not a number of seconds above 0")
    return value


def run(args: argparse.Namespace, settings: Settings) -> int:
    redis_url, _ = settings.need_servers()

    async def main() -> int:
        producer = Producer.from_url(
            redis_url,
            prefix=settings.prefix,
            shards=settings.shards,
            max_body=settings.max_body,
            durable=args.durable,
        )
        try:
            return await produce(
                producer, sys.stdin.buffer, sys.stdout.buffer, args.wait, args.timeout
            )
        finally:
            await producer.close()

    return asyncio.run(main())
