"""What a connector imports: push entries, optionally wait for their receipts.

asyncio first; ``SyncProducer`` is a thin wrapper for scripts. The client may
be a single server's or a Redis Cluster's (``rowcast.contract.connection``).

``durable=True`` makes every push wait (with ``WAIT``, on the connection that
made the writes, so the wait covers exactly them) until a replica holds the
entries: a master that dies right after saying "queued" then cannot take them
along in its failover. Without it, Redis replicates asynchronously and a
failover may lose the last writes the old master acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis import exceptions as rexc
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from rowcast.contract.connection import TRANSIENT_OR_OS, AnyAsyncRedis, async_client, node_client
from rowcast.contract.entry import (
    DEFAULT_MAX_BODY,
    Entry,
    Op,
    check_body,
    check_id,
    check_kind,
    check_op,
    encode_body,
)
from rowcast.contract.errors import NotQueued, ReceiptTimeout, Rejected, Unavailable
from rowcast.contract.keys import Keys, shard_of
from rowcast.producers.write import AsyncWrite, SyncWrite, Write


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


Keyed = list[tuple[str, dict[str, str | bytes]]]


class Producer:
    def __init__(
        self,
        redis: AnyAsyncRedis,
        prefix: str = "rowcast",
        shards: int = 1,
        max_body: int = DEFAULT_MAX_BODY,
        *,
        durable: bool = False,
        durable_timeout: float = 2.0,
    ) -> None:
        """``durable``: a push returns only once a replica holds its entries
        (else NotQueued); ``durable_timeout``: seconds to wait for that."""
        self.redis = redis
        self.keys = Keys(prefix)
        self.shards = shards
        self.max_body = max_body
        self.durable = durable
        self.durable_timeout = durable_timeout
        self._nodes: dict[str, Redis] = {}

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Producer:
        return cls(async_client(url), **kwargs)

    async def close(self) -> None:
        for client in self._nodes.values():
            await client.aclose()
        self._nodes.clear()
        await self.redis.aclose()

    append = Write(Op.APPEND)
    """``await append(session, row, kind, body, wait=False, timeout=10.0)``: insert
    a row if it is new (a redelivery is a harmless duplicate)."""
    upsert = Write(Op.UPSERT)
    """Insert a row, or replace its kind and body keeping its sequence."""
    extend = Write(Op.EXTEND)
    """Streaming text: append ``body``'s strings to the row's, key by key
    (``{"text": " more"}``); other values replace. A new row is inserted with
    ``body`` as given. ``body`` must be a JSON object."""

    def bind(self, op: Op) -> AsyncWrite:
        return AsyncWrite(self, op)

    async def write(
        self, op: Op, session: str, row: str, kind: str, body: Any, wait: bool, timeout: float
    ) -> str | Receipt:
        entry = make_entry(op, session, row, kind, body, self.max_body)
        return await self._send(entry, wait, timeout)

    async def _send(self, entry: Entry, wait: bool, timeout: float) -> str | Receipt:
        if not wait:
            return (await self.push_many([entry]))[0]
        return (await self.push_and_wait([entry], timeout))[0]

    async def push_many(self, entries: Sequence[Entry]) -> list[str]:
        """XADD entries (one round trip per Redis node); returns their stream ids.

        Raises NotQueued, carrying each entry's id or reason, when some were
        not stored (or, ``durable``, not confirmed by a replica), and
        Unavailable when Redis could not be asked at all."""
        if not entries:
            return []
        keyed: Keyed = [
            (self.keys.entries(shard_of(e.session, self.shards)), e.fields()) for e in entries
        ]
        try:
            if self.durable and isinstance(self.redis, RedisCluster):
                ids, errors = await self._push_by_node(self.redis, keyed)
            else:
                ids, errors = await self._push(self.redis, keyed)
        except TRANSIENT_OR_OS as e:
            raise Unavailable(
                f"Redis: {e} (some of the {len(entries)} entries may have been stored)"
            ) from e
        failed = [err for err in errors if err is not None]
        if failed:
            raise NotQueued(
                f"{len(failed)} of {len(entries)} entries not queued: {failed[0]}", ids, errors
            )
        return [i for i in ids if i is not None]

    async def _push(
        self, client: AnyAsyncRedis, keyed: Keyed
    ) -> tuple[list[str | None], list[str | None]]:
        """One pipeline; with ``durable``, WAIT ends it on the same connection."""
        pipe = client.pipeline(transaction=False)
        for key, fields in keyed:
            pipe.xadd(key, fields)  # type: ignore[arg-type]
        if self.durable:
            pipe.wait(1, int(self.durable_timeout * 1000))
        results = await pipe.execute(raise_on_error=False)
        ids = [_id(r) for r in results[: len(keyed)]]
        errors = [_why(r) for r in results[: len(keyed)]]
        if self.durable:
            acked = results[-1]
            why = _why(acked) or (
                None
                if int(acked) >= 1
                else f"not confirmed by a replica within {self.durable_timeout:g}s"
                " (stored on the master; a failover could lose it)"
            )
            if why is not None:
                errors = [e if e is not None else why for e in errors]
        return ids, errors

    async def _push_by_node(
        self, cluster: RedisCluster, keyed: Keyed
    ) -> tuple[list[str | None], list[str | None]]:
        """Durable pushes to a cluster: WAIT covers the writes of its own
        connection only, so each master gets its entries and the WAIT on one
        plain connection. Entries a node answers MOVED/ASK for (its slot
        moved, a failover) are sent again to the new owner; nothing is sent
        twice to a node that took it. A node that failed (a master dying)
        makes the cluster's map be read again, so the next push finds its
        promoted replica."""
        ids: list[str | None] = [None] * len(keyed)
        errors: list[str | None] = [None] * len(keyed)
        todo = list(range(len(keyed)))
        await cluster.initialize()
        for attempt in range(4):
            by_node: dict[str, list[int]] = {}
            for i in todo:
                node = cluster.get_node_from_key(keyed[i][0])
                assert node is not None  # initialized: every slot has an owner
                by_node.setdefault(node.name, []).append(i)
            results = await asyncio.gather(
                *(self._push(self._node(cluster, name), [keyed[i] for i in idx])
                  for name, idx in by_node.items()),
                return_exceptions=True,
            )  # fmt: skip
            redirected: list[int] = []
            failed: list[str] = []
            for name, idx, got in zip(by_node, by_node.values(), results, strict=True):
                if isinstance(got, BaseException):
                    if not isinstance(got, TRANSIENT_OR_OS):
                        raise got
                    failed.append(name)
                    for i in idx:  # unknown for each: the connection failed mid-way
                        errors[i] = f"Redis: {got} (may have been stored)"
                    continue
                for i, entry_id, why in zip(idx, got[0], got[1], strict=True):
                    ids[i], errors[i] = entry_id, why
                    if entry_id is None and why is not None and why.startswith(("MOVED", "ASK")):
                        redirected.append(i)
            if failed or redirected:
                for name in failed:
                    client = self._nodes.pop(name, None)
                    if client is not None:
                        await client.aclose()
                with contextlib.suppress(*TRANSIENT_OR_OS, rexc.RedisClusterException):
                    await cluster.nodes_manager.initialize()
            if not redirected or attempt == 3:
                break
            todo = redirected
        return ids, errors

    def _node(self, cluster: RedisCluster, name: str) -> Redis:
        client = self._nodes.get(name)
        if client is None:
            node = cluster.get_node(node_name=name)
            assert node is not None
            client = self._nodes[name] = node_client(node)
        return client

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
        tagged = with_replies(entries)
        await self.push_many(tagged)
        return await self.collect(tagged, timeout)

    async def collect(self, tagged: Sequence[Entry], timeout: float = 10.0) -> list[dict[str, Any]]:
        """The receipts of entries already pushed with a ``reply`` token, in
        order; ReceiptTimeout for the first one not there within ``timeout``."""
        payloads = await self.collect_each(tagged, timeout)
        for e, payload in zip(tagged, payloads, strict=True):
            if payload is None:
                raise ReceiptTimeout(timeout_reason(e, timeout))
        return [p for p in payloads if p is not None]

    async def collect_each(
        self, tagged: Sequence[Entry], timeout: float = 10.0
    ) -> list[dict[str, Any] | None]:
        """``collect``, with None for each receipt not there within
        ``timeout`` (the whole wait), instead of giving up on the rest."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        step = _wait_slice(self.redis)
        payloads: list[dict[str, Any] | None] = []
        for e in tagged:
            assert e.reply is not None
            key = self.keys.reply(shard_of(e.session, self.shards), e.reply)
            got: Any = None
            try:
                while got is None and (left := deadline - loop.time()) > 0:
                    # In slices: one blocking pop longer than the client's socket
                    # timeout (redis-py's default is 5 s) would end as a read timeout.
                    got = await self.redis.blpop([key], timeout=max(min(left, step), 0.01))
                if got is None:  # past the deadline: take it if it is there already
                    raw = await self.redis.lpop(key)
                    got = None if raw is None else (key, raw)
            except TRANSIENT_OR_OS as err:
                raise Unavailable(f"Redis: {err}") from err
            payloads.append(None if got is None else orjson.loads(got[1]))
        return payloads


def timeout_reason(e: Entry, timeout: float) -> str:
    return (
        f"no receipt for row {e.row!r} of session {e.session!r} within {timeout:g}s"
        " (it may still be stored)"
    )


def _wait_slice(redis: Redis | RedisCluster) -> float:
    """Half the client's socket timeout, at most WAIT_SLICE."""
    pool = getattr(redis, "connection_pool", None)  # a cluster client has one per node
    if pool is None:
        return WAIT_SLICE
    kwargs = pool.connection_kwargs
    socket_timeout = kwargs.get("socket_timeout") or kwargs.get("orig_socket_timeout")
    if isinstance(socket_timeout, int | float) and socket_timeout > 0:
        return min(WAIT_SLICE, socket_timeout / 2)
    return WAIT_SLICE


def _id(result: Any) -> str | None:
    if isinstance(result, BaseException):
        return None
    return result.decode() if isinstance(result, bytes) else str(result)


def _why(result: Any) -> str | None:
    """Why one command of a pipeline failed (None: it did not)."""
    if not isinstance(result, BaseException):
        return None
    if isinstance(result, (rexc.MovedError, rexc.AskError)):
        kind = "MOVED" if isinstance(result, rexc.MovedError) else "ASK"
        return (
            f"{kind}: Redis Cluster slot {result.slot_id} is served by {result.node_addr[0]}:"
            f"{result.node_addr[1]} (name the cluster with a redis+cluster:// URL)"
        )
    return f"{type(result).__name__}: {result}"


def with_replies(entries: Iterable[Entry]) -> list[Entry]:
    """The entries, each asking for a receipt under a fresh token."""
    return [
        Entry(e.op, e.session, e.row, e.kind, e.body, secrets.token_urlsafe(16), e.ts)
        for e in entries
    ]


class SyncProducer:
    """Producer for synchronous code: the same calls, run on a private event loop."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        self._runner = asyncio.Runner()
        self._producer = self._runner.run(_make(url, kwargs))

    append = Write(Op.APPEND)
    upsert = Write(Op.UPSERT)
    extend = Write(Op.EXTEND)

    def bind(self, op: Op) -> SyncWrite:
        return SyncWrite(self, op)

    def write(
        self, op: Op, session: str, row: str, kind: str, body: Any, wait: bool, timeout: float
    ) -> str | Receipt:
        return self._runner.run(self._producer.write(op, session, row, kind, body, wait, timeout))

    def close(self) -> None:
        self._runner.run(self._producer.close())
        self._runner.close()

    def __enter__(self) -> SyncProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _make(url: str, kwargs: dict[str, Any]) -> Producer:
    return Producer.from_url(url, **kwargs)
