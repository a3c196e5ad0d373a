"""Helpers shared by the ops integration tests (no tests here)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any
from unittest import mock

import psycopg

from rowcast.ops import cli
from rowcast.ops.commands.runner import run_writers
from rowcast.ops.settings import Settings


def settings_for(
    redis_url: str, db_url: str, prefix: str, shards: int = 1, **extra: Any
) -> Settings:
    return Settings.from_env(
        {},
        redis_url=redis_url,
        database_url=db_url,
        prefix=prefix,
        shards=shards,
        lease_ms=2000,
        **extra,
    )


def server_args(s: Settings) -> list[str]:
    assert s.redis_url and s.database_url
    return [
        "--redis-url",
        s.redis_url,
        "--database-url",
        s.database_url,
        "--prefix",
        s.prefix,
        "--shards",
        str(s.shards),
    ]


def run_cli(argv: Sequence[str]) -> tuple[int, str, str]:
    """``rowcast ARGV`` in this process: (exit status, stdout, stderr).

    Handlers are left alone (the CLI would point the root logger at a
    captured stream that outlives the test)."""
    out, err = io.StringIO(), io.StringIO()
    with (
        mock.patch("rowcast.ops.logs.configure"),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            code = cli.main(list(argv))
        except SystemExit as e:  # argparse's usage errors
            code = int(e.code or 0)
    return code, out.getvalue(), err.getvalue()


async def arun_cli(argv: Sequence[str]) -> tuple[int, str, str]:
    """run_cli from async code (commands run their own event loops)."""
    return await asyncio.to_thread(run_cli, argv)


@contextlib.asynccontextmanager
async def running_writer(settings: Settings) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_writers(settings, list(range(settings.shards)), stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def applied_up_to(db_url: str, stream: str) -> tuple[int, int]:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT last_ms, last_seq FROM rowcast.offsets WHERE stream = %s", (stream,)
        ).fetchone()
    return (0, 0) if row is None else (row[0], row[1])


async def wait_applied(db_url: str, stream: str, last_id: str, timeout: float = 60) -> None:
    """Until the writer's offset for ``stream`` reaches ``last_id`` (bounded)."""
    ms, _, seq = last_id.partition("-")
    want = (int(ms), int(seq))
    deadline = time.monotonic() + timeout
    while True:
        got = await asyncio.to_thread(applied_up_to, db_url, stream)
        if got >= want:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{stream} applied up to {got}, not {last_id}, in {timeout}s")
        await asyncio.sleep(0.05)


def apply_rows(db_url: str, items: Sequence[tuple[str, str, str, str]]) -> None:
    """Store (op, session, row, body) items through rowcast.apply_batch in one
    transaction, as the writer would (without a stream offset)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "SELECT count(*) FROM rowcast.apply_batch(NULL, 0, 0, 0, 0, 0,"
            " %s::text[], %s::text[], %s::text[], %s::text[], %s::int[], %s::int[],"
            " %s::int8[], %s::int8[], %s::bool[], %s::text[], %s::text[], %s::int2[], NULL)",
            (
                [i[1] for i in items],
                [i[2] for i in items],
                ["user"] * len(items),
                [i[3] for i in items],
                [1 if i[0] == "upsert" else 0 for i in items],
                [0] * len(items),
                [0] * len(items),
                [0] * len(items),
                [False] * len(items),
                [],
                [None] * len(items),
                [0] * len(items),
            ),
        )


def snapshot(db_url: str, sessions: Sequence[str] | None = None) -> dict[str, Any]:
    """Rows and heads (without timestamps), to compare states."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT session_id, row_id, sequence, revision, change, kind, body::text,"
            " entry_ms, entry_seq FROM rowcast.rows"
            " WHERE %(s)s::text[] IS NULL OR session_id = ANY(%(s)s::text[])",
            {"s": None if sessions is None else list(sessions)},
        ).fetchall()
        heads = conn.execute(
            "SELECT session_id, next_sequence, last_change FROM rowcast.sessions"
            " WHERE %(s)s::text[] IS NULL OR session_id = ANY(%(s)s::text[])",
            {"s": None if sessions is None else list(sessions)},
        ).fetchall()
    return {
        "rows": {(r[0], r[1]): r[2:] for r in rows},
        "heads": {h[0]: h[1:] for h in heads},
    }
