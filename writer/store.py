"""The writer's PostgreSQL side: one transaction per batch, the tracking
record inside it, and the isolation of entries PostgreSQL refuses.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import psycopg

from rowcast.contract.change import Change
from rowcast.contract.entry import DEFAULT_MAX_BODY
from rowcast.contract.errors import SQLSTATES, Fenced, RowcastError, Unavailable, one_line
from rowcast.contract.streamid import StreamId
from rowcast.contract.streamid import parse as parse_id
from rowcast.writer.batch import Dead, Plan, Result, Valid, plans

log = logging.getLogger(__name__)

_SQL = Path(__file__).parent / "sql"
# SQLSTATE classes that mean "this data", not "this connection": worth
# isolating. 22 data exception (bad JSON text), 23 integrity constraint, 54
# program limit exceeded (nesting too deep for the server's stack).
_DATA_CLASSES = ("22", "23", "54")


def _is_data_error(e: psycopg.Error) -> bool:
    return (getattr(e, "sqlstate", None) or "")[:2] in _DATA_CLASSES


@cache
def sql(name: str) -> bytes:
    return (_SQL / f"{name}.sql").read_bytes()


_ADVANCE = "SELECT rowcast.advance(%s, %s, %s, %s, %s, %s)"

SMALL_BATCH = 64
"""Merged rows up to which a batch runs apply_batch's cached (generic) plan:
its best plan is the same index lookups whatever the size, and planning it
afresh costs more than running it. A larger batch is planned for its own
size (migration 0007)."""

_PLAN_MODE = "SELECT set_config('plan_cache_mode', %s, false)"


def translate(e: psycopg.Error) -> RowcastError:
    """One place where driver errors become rowcast's."""
    first = one_line(e)
    own = SQLSTATES.get(getattr(e, "sqlstate", None) or "")
    if own is Fenced:
        detail = e.diag.message_detail
        return Fenced(first, int(detail) if detail and detail.isdigit() else None)
    if own is not None:
        return own(first)
    return Unavailable(f"PostgreSQL: {first}")


class Store:
    def __init__(
        self, conn: psycopg.AsyncConnection[Any], stream: str, max_body: int = DEFAULT_MAX_BODY
    ) -> None:
        self.conn = conn
        self.stream = stream
        self.max_body = max_body
        """The largest body an extend may grow a row to (as PostgreSQL prints it)."""
        self._plan_mode: str | None = None

    @classmethod
    async def connect(
        cls, url: str, stream: str, lease_ms: int, max_body: int = DEFAULT_MAX_BODY
    ) -> Store:
        try:
            conn = await psycopg.AsyncConnection.connect(
                url, autocommit=True, prepare_threshold=None, application_name="rowcast-writer"
            )
            try:
                # A writer frozen inside its transaction must not keep its session
                # locks past its lease: the server ends that transaction itself.
                await conn.execute(
                    "SELECT set_config('idle_in_transaction_session_timeout', %s, false),"
                    " set_config('lock_timeout', %s, false),"
                    " set_config('statement_timeout', %s, false)",
                    (str(lease_ms), str(lease_ms), str(max(60_000, 4 * lease_ms))),
                )
            except BaseException:  # cancelled too: never leave the session open
                await conn.close()
                raise
        except psycopg.Error as e:
            raise translate(e) from e
        return cls(conn, stream, max_body)

    async def close(self) -> None:
        await self.conn.close()

    async def claim(self, fence: int, epoch: str | None = None) -> StreamId:
        """Take the stream for this fencing number; return its last applied id.

        With the stream's ``epoch``: a new one (Redis lost the stream) restarts
        the offset, so entries of the new stream are never taken for applied.
        """
        try:
            cur = await self.conn.execute(
                "SELECT o_last, o_rebased FROM rowcast.claim(%s, %s, %s)",
                (self.stream, fence, epoch),
            )
            row = await cur.fetchone()
        except psycopg.Error as e:
            raise translate(e) from e
        assert row is not None
        if row[1]:
            log.warning(
                "%s is a new stream (its epoch changed: Redis lost its data); its offset"
                " restarts, so every entry it holds will be applied",
                self.stream,
            )
        return parse_id(row[0])

    async def apply(
        self,
        fence: int,
        first: StreamId,
        last: StreamId,
        valid: Sequence[Valid],
        todo: Sequence[Plan] | None = None,
    ) -> tuple[list[tuple[Plan, list[Result]]], list[Dead]]:
        """Store the valid entries of ids first..last in one transaction.

        ``todo`` is ``plans(valid)`` when the caller made it already. Returns
        the (plan, results) pieces in stream order and the entries PostgreSQL
        refused. A refusal splits the batch under savepoints; the rest is
        committed, in order, in the same transaction.
        """
        offsets = (self.stream, fence, *first, *last)
        if todo is None:
            todo = plans(valid)
        try:
            await self._plan_mode_for(todo)
            try:
                if len(todo) <= 1:
                    # One statement, its own transaction: one round trip.
                    if not todo:
                        await self.conn.execute(_ADVANCE, offsets)
                        return [], []
                    return [(todo[0], await self._run(todo[0], offsets))], []
                async with self.conn.transaction():
                    done = []
                    for i, p in enumerate(todo):
                        done.append((p, await self._run(p, offsets if i == 0 else None)))
                    return done, []
            except psycopg.Error as e:
                if not _is_data_error(e):
                    raise
                log.warning("batch refused by PostgreSQL (%s); isolating the entries", e)
            async with self.conn.transaction():
                await self.conn.execute(_ADVANCE, offsets)
                pieces: list[tuple[Plan, list[Result]]] = []
                rejected: list[Dead] = []
                await self._isolate(list(valid), pieces, rejected)
                return pieces, rejected
        except psycopg.Error as e:
            raise translate(e) from e

    async def _plan_mode_for(self, todo: Sequence[Plan]) -> None:
        """Set outside any transaction (no rollback can undo it), and only when
        the batches change size class: one round trip then, none otherwise."""
        large = any(len(p.merged) > SMALL_BATCH for p in todo)
        mode = "force_custom_plan" if large else "force_generic_plan"
        if mode != self._plan_mode:
            await self.conn.execute(_PLAN_MODE, (mode,))
            self._plan_mode = mode

    async def _run(self, p: Plan, offsets: tuple[Any, ...] | None) -> list[Result]:
        params: dict[str, Any] = dict(p.arrays())
        if offsets is None:
            offsets = (None, 0, 0, 0, 0, 0)
        keys = ("stream", "fence", "first_ms", "first_seq", "last_ms", "last_seq")
        params.update(zip(keys, offsets, strict=True))
        params["max_body"] = self.max_body
        cur = await self.conn.execute(sql("apply"), params)
        return [Result(*row) for row in await cur.fetchall()]

    async def _isolate(
        self,
        chunk: list[Valid],
        pieces: list[tuple[Plan, list[Result]]],
        rejected: list[Dead],
    ) -> None:
        """Bisect until every refused entry stands alone, applying the rest in order."""
        try:
            async with self.conn.transaction():
                done = [(p, await self._run(p, None)) for p in plans(chunk)]
            pieces.extend(done)
            return
        except psycopg.Error as e:
            if not _is_data_error(e):
                raise
            if len(chunk) == 1:
                v = chunk[0]
                reason = "PostgreSQL refused the entry: " + one_line(e)
                await self.conn.execute(
                    "INSERT INTO rowcast.rejects (stream, entry_id, error) VALUES (%s, %s, %s)"
                    " ON CONFLICT DO NOTHING",
                    (self.stream, v.id.decode(), reason),
                )
                rejected.append(Dead(v.id, v.fields, reason, v.entry.reply))
                return
        mid = len(chunk) // 2
        await self._isolate(chunk[:mid], pieces, rejected)
        await self._isolate(chunk[mid:], pieces, rejected)

    async def rows_for(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[Change, StreamId]]:
        """The current state of these rows, with the id of the entry that last
        wrote each (recovery of a committed batch)."""
        if not keys:
            return {}
        try:
            cur = await self.conn.execute(
                sql("rows_for"),
                {"sessions": [k[0] for k in keys], "rows": [k[1] for k in keys]},
            )
            rows = await cur.fetchall()
        except psycopg.Error as e:
            raise translate(e) from e
        return {
            (s, r): (Change(s, r, seq, rev, chg, kind, body.encode()), (ems, eseq))
            for s, r, seq, rev, chg, kind, body, ems, eseq in rows
        }

    async def rejects_for(self, ids: Sequence[bytes]) -> dict[bytes, str]:
        if not ids:
            return {}
        try:
            cur = await self.conn.execute(
                "SELECT entry_id, error FROM rowcast.rejects"
                " WHERE stream = %s AND entry_id = ANY(%s::text[])",
                (self.stream, [i.decode() for i in ids]),
            )
            rows = await cur.fetchall()
        except psycopg.Error as e:
            raise translate(e) from e
        return {eid.encode(): err for eid, err in rows}
