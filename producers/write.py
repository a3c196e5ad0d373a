"""``append``, ``upsert`` and ``extend`` of both producers: one signature for
the three ops, whose return type follows ``wait`` (the entry's stream id, or
its Receipt once the row is committed).

The signature is written once, as a generic Protocol (``WriteCall``): the
asyncio producer's methods are ``WriteCall[Awaitable[str], Awaitable[Receipt]]``,
the synchronous one's ``WriteCall[str, Receipt]``.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, overload

from rowcast.contract.entry import Op

if TYPE_CHECKING:
    from rowcast.producers.producer import Producer, Receipt, SyncProducer

Queued = TypeVar("Queued", covariant=True)
Committed = TypeVar("Committed", covariant=True)


class WriteCall(Protocol[Queued, Committed]):
    @overload
    def __call__(
        self, session: str, row: str, kind: str, body: Any,
        *, wait: Literal[False] = False, timeout: float = 10.0,
    ) -> Queued: ...  # fmt: skip
    @overload
    def __call__(
        self, session: str, row: str, kind: str, body: Any,
        *, wait: Literal[True], timeout: float = 10.0,
    ) -> Committed: ...  # fmt: skip


class Write:
    """``producer.append``, ``upsert`` and ``extend``: the op, bound to the
    producer it is read from."""

    def __init__(self, op: Op) -> None:
        self.op = op

    @overload
    def __get__(self, producer: None, owner: type) -> Write: ...
    @overload
    def __get__(
        self, producer: Producer, owner: type
    ) -> WriteCall[Awaitable[str], Awaitable[Receipt]]: ...
    @overload
    def __get__(self, producer: SyncProducer, owner: type) -> WriteCall[str, Receipt]: ...
    def __get__(self, producer: Producer | SyncProducer | None, owner: type) -> Any:
        if producer is None:
            return self
        return producer.bind(self.op)


@dataclass(frozen=True, slots=True)
class AsyncWrite:
    producer: Producer
    op: Op

    async def __call__(
        self, session: str, row: str, kind: str, body: Any,
        *, wait: bool = False, timeout: float = 10.0,
    ) -> str | Receipt:  # fmt: skip
        return await self.producer.write(self.op, session, row, kind, body, wait, timeout)


@dataclass(frozen=True, slots=True)
class SyncWrite:
    producer: SyncProducer
    op: Op

    def __call__(
        self, session: str, row: str, kind: str, body: Any,
        *, wait: bool = False, timeout: float = 10.0,
    ) -> str | Receipt:  # fmt: skip
        return self.producer.write(self.op, session, row, kind, body, wait, timeout)
