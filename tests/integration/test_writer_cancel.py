"""Cancellation is never swallowed: a shard's loop (and a whole writer
process's loops) cancelled at any point of its start-up ends, whatever
redis-py was doing at that moment (it can swallow a cancel that arrives while
it connects)."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from rowcast.contract.keys import Keys
from rowcast.ops.commands.runner import run_writers
from rowcast.ops.settings import Settings
from rowcast.writer import ShardWriter, WriterConfig

STEPS = range(0, 60, 2)  # event-loop steps between start and cancel


async def _cancelled_in_time(task: asyncio.Task[None], steps: int) -> bool:
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=5)
    if not done:  # where it hangs, for whoever reads the failure
        coro = task.get_coro()
        while coro is not None:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is not None:
                print("  at", frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name)
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    elif not task.cancelled():
        print("  ended with", repr(task.exception()))
    return bool(done) and task.cancelled()


@pytest.mark.timeout(240)
async def test_a_shard_cancelled_anywhere_in_its_start_up_ends(
    redis_url: str, db_url: str, prefix: str
) -> None:
    swallowed = []
    for steps in STEPS:
        # A fresh client each time: the first calls open its connections,
        # which is where a cancel used to vanish.
        redis = Redis.from_url(redis_url)
        cfg = WriterConfig(
            keys=Keys(prefix), shard=0, database_url=db_url, holder=f"h:1:{steps}",
            batch_max=100, linger_ms=0, lease_ms=1000, rows_maxlen=1000,
            receipt_ttl_ms=1000, max_body=1 << 20, batch_bytes=1 << 20,
        )  # fmt: skip
        stop = asyncio.Event()
        task = asyncio.create_task(ShardWriter(redis, cfg).run(stop))
        if not await _cancelled_in_time(task, steps):
            swallowed.append(steps)
        stop.set()
        await asyncio.wait([task], timeout=10)
        await redis.aclose()
    assert not swallowed, f"cancellation swallowed after {swallowed} loop steps"


@pytest.mark.timeout(240)
async def test_a_writer_process_cancelled_anywhere_in_its_start_up_ends(
    redis_url: str, db_url: str, prefix: str
) -> None:
    settings = Settings.from_env(
        {}, redis_url=redis_url, database_url=db_url, prefix=prefix, shards=3, lease_ms=1000
    )
    swallowed = []
    for steps in STEPS:
        stop = asyncio.Event()
        task = asyncio.create_task(run_writers(settings, [0, 1, 2], stop))
        if not await _cancelled_in_time(task, steps):
            swallowed.append(steps)
        stop.set()
        await asyncio.wait([task], timeout=10)
    assert not swallowed, f"cancellation swallowed after {swallowed} loop steps"
