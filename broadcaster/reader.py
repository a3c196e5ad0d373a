"""The broadcaster's PostgreSQL side: read-only queries through a pool.

Catch-up and gap reads, the heads of watched sessions, the session list and
the rows pages of the HTTP API. Driver errors become ``Unavailable`` here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql as pgsql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from rowcast.broadcaster.item import Item, from_change
from rowcast.contract.change import Change
from rowcast.contract.errors import Unavailable, one_line

log = logging.getLogger(__name__)

_SQL = Path(__file__).parent / "sql"


@cache
def sql(name: str) -> bytes:
    return (_SQL / f"{name}.sql").read_bytes()


def _rows_page(towards: str, order: str, back: str) -> pgsql.Composed:
    return pgsql.SQL(sql("rows_page").decode()).format(
        towards=pgsql.SQL(towards), order=pgsql.SQL(order), back=pgsql.SQL(back)
    )


_ROWS_FORWARD = _rows_page(">", "ASC", "<=")
_ROWS_BACKWARD = _rows_page("<", "DESC", ">=")
_PAST_EVERY_SEQUENCE = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[Change]
    has_more_before: bool
    has_more_after: bool
    row_count: int
    last_change: int


@dataclass(frozen=True, slots=True)
class SessionInfo:
    session: str
    row_count: int
    last_change: int
    updated_at: datetime


async def _shielded(work: Coroutine[Any, Any, list[tuple[Any, ...]]]) -> list[tuple[Any, ...]]:
    """Run a pool query in a task of its own that the caller's cancellation
    cannot reach. A subscriber that hangs up cancels its catch-up; cancelling
    a task while it waits for a pool connection or holds one mid-query is
    where connections go missing (psycopg_pool's hand-over of a connection to
    a waiter races with the waiter's cancellation, and Python 3.11's
    ``asyncio.wait_for`` that the pool waits with can swallow a cancel; see
    psycopg issues 509, 1275, 1345). Shielded, the query finishes (it is
    bounded by the pool timeout and ``statement_timeout``) and its connection
    goes back; the caller alone sees CancelledError."""
    task = asyncio.ensure_future(work)
    _RUNNING.add(task)
    task.add_done_callback(_finished)
    return await asyncio.shield(task)


_RUNNING: set[asyncio.Future[Any]] = set()
"""Shielded queries whose callers left: held until done (the loop keeps only weak references)."""


def _finished(task: asyncio.Future[Any]) -> None:
    _RUNNING.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: a caller that left does not want it logged


def _unavailable(e: Exception) -> Unavailable:
    return Unavailable(f"PostgreSQL: {one_line(e)}")


class Reader:
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool
        # Queries queue here, where a caller that leaves (a hang-up) simply
        # drops out, rather than in the pool's own queue: at most max_size
        # are ever inside the pool, so none waits there for long.
        self._slots = asyncio.Semaphore(pool.max_size)

    @classmethod
    def create(cls, url: str, max_size: int = 8, timeout: float = 10.0) -> Reader:
        """A store whose pool opens with ``open()`` (it connects in the background,
        so the broadcaster starts even while PostgreSQL is away)."""
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            open=False,
            timeout=timeout,
            name="rowcast-broadcaster",
            kwargs={
                "autocommit": True,
                # Plans of these queries depend on table size: never cache one.
                "prepare_threshold": None,
                "application_name": "rowcast-broadcaster",
                # The broadcaster only reads; let PostgreSQL hold it to that.
                "options": "-c default_transaction_read_only=on -c statement_timeout=30000",
            },
        )
        return cls(pool)

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

    async def _fetch(self, name: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        async with self._slots:
            return await _shielded(self._query(sql(name), params, None))

    async def _query(
        self, query: bytes, params: dict[str, Any] | None, timeout: float | None
    ) -> list[tuple[Any, ...]]:
        try:
            async with self.pool.connection(timeout=timeout) as conn:
                cur = await conn.execute(query, params)
                return await cur.fetchall() if cur.description else []
        except (psycopg.Error, PoolTimeout, OSError) as e:
            raise _unavailable(e) from e

    async def ping(self) -> None:
        # Not behind the slots: health is not queued behind a crowd of catch-ups.
        await _shielded(self._query(b"SELECT 1", None, 3.0))

    async def changes_after(self, session: str, after: int, limit: int) -> list[Item]:
        rows = await self._fetch(
            "changes_after", {"session": session, "after": after, "limit": limit}
        )
        return [
            from_change(Change(session, r[0], r[1], r[2], r[3], r[4], r[5].encode())) for r in rows
        ]

    async def heads(self, sessions: Sequence[str]) -> dict[str, int]:
        if not sessions:
            return {}
        rows = await self._fetch("heads", {"sessions": list(sessions)})
        return {r[0]: r[1] for r in rows}

    async def sessions(self, names: frozenset[str] | None, limit: int) -> list[SessionInfo]:
        """Newest activity first; ``names=None`` means every session."""
        rows = await self._fetch(
            "sessions",
            {"all": names is None, "sessions": sorted(names or ()), "limit": limit},
        )
        return [SessionInfo(r[0], r[1], r[2], r[3]) for r in rows]

    async def page(
        self, session: str, before: int | None, after: int | None, limit: int
    ) -> Page | None:
        """Rows ascending by sequence; None when the session does not exist."""
        forward = before is None and after is not None
        # The newest rows are the ones below a cursor past every sequence.
        cursor = after if forward else (before if before is not None else _PAST_EVERY_SEQUENCE)
        query = _ROWS_FORWARD if forward else _ROWS_BACKWARD
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(
                    query, {"session": session, "cursor": cursor, "limit": limit}
                )
                result = await cur.fetchall()
        except (psycopg.Error, PoolTimeout, OSError) as e:
            raise _unavailable(e) from e
        if not result:
            return None
        head = result[0]
        rows = [
            Change(session, r[3], r[4], r[5], r[6], r[7], r[8].encode())
            for r in result
            if r[3] is not None
        ]
        extra = len(rows) > limit
        rows = rows[:limit]
        if forward:
            more_before, more_after = bool(head[2]), extra
        else:
            rows.reverse()
            more_before, more_after = extra, bool(head[2])
        return Page(rows, more_before, more_after, int(head[0]), int(head[1]))
