"""``append``, ``upsert`` and ``extend`` of both producers: one signature for
the three ops, whose return type follows ``wait`` (the entry's stream id, or
its Receipt once the row is committed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

from rowcast.contract.entry import Op

if TYPE_CHECKING:
    from rowcast.producers.producer import Producer, Receipt, SyncProducer


class Write:
    """``producer.append``, ``upsert`` and ``extend``: one signature for the
    three ops, and its return type follows ``wait`` (the stream id, or the
    Receipt once the row is committed)."""

    def __init__(self, op: Op) -> None:
        self.op = op

    @overload
    def __get__(self, producer: None, owner: type) -> Write: ...
    @overload
    def __get__(self, producer: Producer, owner: type) -> AsyncWrite: ...
    @overload
    def __get__(self, producer: SyncProducer, owner: type) -> SyncWrite: ...
    def __get__(
        self, producer: Producer | SyncProducer | None, owner: type
    ) -> Write | AsyncWrite | SyncWrite:
        if producer is None:
            return self
        return producer.bind(self.op)


@dataclass(frozen=True, slots=True)
class AsyncWrite:
    producer: Producer
    op: Op

    @overload
    async def __call__(
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
    async def __call__(
        self,
        session: str,
        row: str,
        kind: str,
        body: Any,
        *,
        wait: Literal[True],
        timeout: float = 10.0,
    ) -> Receipt: ...
    async def __call__(
        self, session: str, row: str, kind: str, body: Any,
        *, wait: bool = False, timeout: float = 10.0,
    ) -> str | Receipt:  # fmt: skip
        return await self.producer.write(self.op, session, row, kind, body, wait, timeout)


@dataclass(frozen=True, slots=True)
class SyncWrite:
    producer: SyncProducer
    op: Op

    @overload
    def __call__(
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
    def __call__(
        self,
        session: str,
        row: str,
        kind: str,
        body: Any,
        *,
        wait: Literal[True],
        timeout: float = 10.0,
    ) -> Receipt: ...
    def __call__(
        self, session: str, row: str, kind: str, body: Any,
        *, wait: bool = False, timeout: float = 10.0,
    ) -> str | Receipt:  # fmt: skip
        return self.producer.write(self.op, session, row, kind, body, wait, timeout)
