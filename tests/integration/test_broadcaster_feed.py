"""The shard feed on a real Redis: what has arrived while the hub was busy is
handed over together, in order, and nothing is left behind."""

from __future__ import annotations

import asyncio
import threading
import time

import redis as redis_sync

from rowcast.broadcaster.feed import Feed, Shards
from rowcast.contract.keys import Keys


async def test_messages_that_arrived_while_the_hub_was_busy_come_together_in_order(
    redis_url, prefix
):
    keys = Keys(prefix)
    channel = keys.changes(0)
    batches: list[list[bytes]] = []
    up = asyncio.Event()
    publisher = redis_sync.Redis.from_url(redis_url)

    def burst() -> None:
        for i in range(1, 21):
            publisher.spublish(channel, b"m%d" % i)

    def on_message(batch: list[bytes]) -> None:
        batches.append(batch)
        if batch == [b"m0"]:
            # The hub is busy (a stand-in: it blocks the loop) while 20 more
            # messages arrive.
            t = threading.Thread(target=burst)
            t.start()
            t.join()
            time.sleep(0.2)

    def on_up(shards: Shards) -> None:
        up.set()

    feed = Feed(
        lambda: redis_url,
        keys,
        frozenset({0}),
        on_message=on_message,
        on_up=on_up,
        on_down=lambda shards: None,
        client_name="feed-test",
    )
    task = asyncio.create_task(feed.run())
    try:
        await asyncio.wait_for(up.wait(), 10)
        publisher.spublish(channel, b"m0")
        async with asyncio.timeout(10):
            while sum(len(b) for b in batches) < 21:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        publisher.close()
    assert [m for b in batches for m in b] == [b"m%d" % i for i in range(21)]
    assert batches[0] == [b"m0"]
    assert len(batches[1]) > 1  # read together, not one at a time
