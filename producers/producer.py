"""What a connector imports: push entries, optionally wait for their receipts.

asyncio first; ``SyncProducer`` is a thin wrapper for scripts.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

import orjson
from redis import exceptions as rexc
from redis.asyncio import Redis

from rowcast.contract.entry import (
    DEFAULT_MAX_BODY,
    Entry,
    check_body,
    check_id,
    check_kind,
    check_op,
    encode_body,
)
from rowcast.contract.errors import ReceiptTimeout, Rejected, Unavailable
from rowcast.contract.keys import Keys, shard_of


@dataclass(frozen=True, slots=True)
class Receipt:
    """The writer's word that a row is committed in PostgreSQL."""

    session: str
    row: str
    sequence: int
    revision: int
    change: int | None
    duplicate: bool

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> Receipt:
        if not data.get("ok"):
            raise Rejected(str(data.get("error", "unknown error")))
        return cls(
            session=data["session"],
            row=data["row"],
            sequence=int(data["sequence"]),
            revision=int(data["revision"]),
            change=None if data.get("change") is None else int(data["change"]),
            duplicate=bool(data.get("duplicate", False)),
        )


def make_entry(
    op: str, session: str, row: str, kind: str, body: Any, max_body: int = DEFAULT_MAX_BODY
) -> Entry:
    """A checked entry (raises InvalidEntry with the reason)."""
    raw = encode_body(body)
    checked = check_op(op)
    check_body(raw, max_body, checked)
    return Entry(checked, check_id("session", session), check_id("row", row), check_kind(kind), raw)


WAIT_SLICE = 1.0
"""Longest single blocking pop while waiting for a receipt, in seconds."""


class Producer:
    def __init__(
        self,
        redis: Redis,
        prefix: str = "rowcast",
        shards: int = 1,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        self.shards = shards
        self.max_body = max_body

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Producer:
        return cls(Redis.from_url(url), **kwargs)

    async def close(self) -> None:
        await self.redis.aclose()

    @overload
    async def append(
        self,
        session: str,
        row: str,
        kind: str,
        body: Any,
        *,
        wait: Literal[False] = False,
        timeout: float = 10.0,
    ) -> str: ...
    @overload
    async def append(
        self,
        session: str,
        row: str,
        kind: str,
        body: Any,
        *,
        wait: Literal[True],
        timeout: float = 10.0,
    ) -> Receipt: ...
    async def append(
        self,
        session: str,
        row: str,
        kind: str,
        body: Any,
        *,
        wait: bool = False,
        timeout: float = 10.0,
    ) -> str | Receipt:
        """Insert a row if it is new (a redelivery is a harmless duplicate)."""
        entry = make_entry("append", session, row, kind, body, self.max_body)
        return await self._send(entry, wait, timeout)

    @overload
    async def upsert(
        self,
        session: str,
        row: str,
        kind: str,
        body: Any,
        *,
        wait: Literal[False] = False,
        timeout: float = 10.0,
    ) -> str: ...
    @overload
    async def upsert(
        self,
        session: str,
        row: str,
        kind: str,
        body: Any,
        *,
        wait: Literal[True],
        timeout: float = 10.0,
    ) -> Receipt: ...
    async def upsert(
        self,
        session: str,
        row: str,
        kind: str,
        body: Any,
        *,
        wait: bool = False,
        timeout: float = 10.0,
    ) -> str | Receipt:
        """Insert a row, or replace its kind and body keeping its sequence."""
        entry = make_entry("upsert", session, row, kind, body, self.max_body)
        return await self._send(entry, wait, timeout)

    @overload
    async def extend(
        self,
        session: str,
        row: str,
        kind: str,
        body: Any,
        *,
        wait: Literal[False] = False,
        timeout: float = 10.0,
    ) -> str: ...
    @overload
    async def extend(
        self,
        session: str,
        row: str,
        kind: str,
        body: Any,
        *,
        wait: Literal[True],
        timeout: float = 10.0,
    ) -> Receipt: ...
    async def extend(
        self,
        session: str,
        row: str,
        kind: str,
        body: Any,
        *,
        wait: bool = False,
        timeout: float = 10.0,
    ) -> str | Receipt:
        """Streaming text: append ``body``'s strings to the row's, key by key
        (``{"text": " more"}``); other values replace. A new row is inserted
        with ``body`` as given. ``body`` must be a JSON object."""
        entry = make_entry("extend", session, row, kind, body, self.max_body)
        return await self._send(entry, wait, timeout)

    async def _send(self, entry: Entry, wait: bool, timeout: float) -> str | Receipt:
        if not wait:
            return (await self.push_many([entry]))[0]
        return (await self.push_and_wait([entry], timeout))[0]

    async def push_many(self, entries: Sequence[Entry]) -> list[str]:
        """XADD entries in one round trip; returns their stream ids."""
        pipe = self.redis.pipeline(transaction=False)
        for e in entries:
            pipe.xadd(self.keys.entries(shard_of(e.session, self.shards)), e.fields())  # type: ignore[arg-type]
        try:
            ids = await pipe.execute()
        except (rexc.ConnectionError, rexc.TimeoutError, OSError) as e:
            raise Unavailable(f"Redis: {e}") from e
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    async def push_and_wait(self, entries: Iterable[Entry], timeout: float = 10.0) -> list[Receipt]:
        """Push entries asking for receipts, then wait for each (in order).

        Raises ReceiptTimeout when one does not arrive within ``timeout``
        seconds (the entry may still be stored later) and Rejected when the
        writer refused one.
        """
        return [Receipt.from_payload(p) for p in await self.push_and_collect(entries, timeout)]

    async def push_and_collect(
        self, entries: Iterable[Entry], timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """Like push_and_wait, but the receipts as the writer sent them (JSON objects)."""
        tagged = [_with_reply(e, secrets.token_urlsafe(16)) for e in entries]
        await self.push_many(tagged)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        step = _wait_slice(self.redis)
        payloads: list[dict[str, Any]] = []
        for e in tagged:
            assert e.reply is not None
            key = self.keys.reply(shard_of(e.session, self.shards), e.reply)
            got = None
            while got is None and (left := deadline - loop.time()) > 0:
                # In slices: one blocking pop longer than the client's socket
                # timeout (redis-py's default is 5 s) would end as a read timeout.
                try:
                    got = await self.redis.blpop([key], timeout=max(min(left, step), 0.01))
                except (rexc.ConnectionError, rexc.TimeoutError, OSError) as err:
                    raise Unavailable(f"Redis: {err}") from err
            if got is None:
                raise ReceiptTimeout(
                    f"no receipt for row {e.row!r} of session {e.session!r} within {timeout:g}s"
                    " (it may still be stored)"
                )
            payloads.append(orjson.loads(got[1]))
        return payloads


def _wait_slice(redis: Redis) -> float:
    """Half the client's socket timeout, at most WAIT_SLICE."""
    kwargs = redis.connection_pool.connection_kwargs
    socket_timeout = kwargs.get("socket_timeout") or kwargs.get("orig_socket_timeout")
    if isinstance(socket_timeout, int | float) and socket_timeout > 0:
        return min(WAIT_SLICE, socket_timeout / 2)
    return WAIT_SLICE


def _with_reply(e: Entry, token: str) -> Entry:
    return Entry(e.op, e.session, e.row, e.kind, e.body, token, e.ts)


class SyncProducer:
    """Producer for synchronous code: the same calls, run on a private event loop."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        self._runner = asyncio.Runner()
        self._producer = self._runner.run(_make(url, kwargs))

    def append(
        self,
        session: str,
        row: str,
        kind: str,
        body: Any,
        *,
        wait: bool = False,
        timeout: float = 10.0,
    ) -> str | Receipt:
        return self._push("append", session, row, kind, body, wait, timeout)

    def upsert(
        self,
        session: str,
        row: str,
        kind: str,
        body: Any,
        *,
        wait: bool = False,
        timeout: float = 10.0,
    ) -> str | Receipt:
        return self._push("upsert", session, row, kind, body, wait, timeout)

    def extend(
        self,
        session: str,
        row: str,
        kind: str,
        body: Any,
        *,
        wait: bool = False,
        timeout: float = 10.0,
    ) -> str | Receipt:
        return self._push("extend", session, row, kind, body, wait, timeout)

    def _push(
        self, op: str, session: str, row: str, kind: str, body: Any, wait: bool, timeout: float
    ) -> str | Receipt:
        entry = make_entry(op, session, row, kind, body, self._producer.max_body)
        return self._runner.run(self._producer._send(entry, wait, timeout))

    def close(self) -> None:
        self._runner.run(self._producer.close())
        self._runner.close()

    def __enter__(self) -> SyncProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _make(url: str, kwargs: dict[str, Any]) -> Producer:
    return Producer.from_url(url, **kwargs)
