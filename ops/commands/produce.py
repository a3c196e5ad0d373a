"""``rowcast produce [--wait]``: JSON lines on stdin become entries.

Each line is ``{"op", "session", "row", "kind", "body"}`` (op: append, upsert or
extend). A line that cannot become an entry is reported on stderr (``line N:
why``) and, with ``--wait``, answered by an error receipt on stdout, so output
lines match input lines.
Exit 1 when any line was refused.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator
from typing import IO, Any

import orjson

from rowcast.contract.entry import Entry, json_error
from rowcast.contract.errors import InvalidEntry
from rowcast.ops.settings import Settings
from rowcast.producers.producer import Producer, make_entry

CHUNK = 500


def parse_line(line: bytes, max_body: int) -> Entry:
    if not line.strip():
        # Still answered, so output line N is always the answer to input line N.
        raise InvalidEntry("blank line (expected a JSON object)")
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise InvalidEntry(f"not JSON: {json_error(e, line)}") from None
    if not isinstance(data, dict):
        raise InvalidEntry("expected a JSON object")
    missing = [k for k in ("op", "session", "row", "kind", "body") if k not in data]
    if missing:
        raise InvalidEntry(f"missing {', '.join(missing)}")
    for k in ("op", "session", "row", "kind"):
        if not isinstance(data[k], str):
            raise InvalidEntry(f"{k} must be a string")
    return make_entry(
        data["op"], data["session"], data["row"], data["kind"], data["body"], max_body
    )


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
        entries = [s for s in slots if isinstance(s, Entry)]
        if not wait:
            await producer.push_many(entries)
            continue
        receipts = iter(await producer.push_and_collect(entries, timeout))
        for s in slots:
            payload = next(receipts) if isinstance(s, Entry) else s
            if not payload.get("ok"):
                refused += isinstance(s, Entry)
            stdout.write(orjson.dumps(payload) + b"\n")
        stdout.flush()
    return 1 if refused else 0


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true", help="print one receipt per line")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a receipt")


def run(args: argparse.Namespace, settings: Settings) -> int:
    redis_url, _ = settings.need_servers()

    async def main() -> int:
        producer = Producer.from_url(
            redis_url, prefix=settings.prefix, shards=settings.shards, max_body=settings.max_body
        )
        try:
            return await produce(
                producer, sys.stdin.buffer, sys.stdout.buffer, args.wait, args.timeout
            )
        finally:
            await producer.close()

    return asyncio.run(main())
