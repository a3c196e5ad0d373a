"""SSE and WebSocket subscribers that connect mid-stream, disconnect and
resume receive every change of their session exactly once, in change order,
while the writer is producing: checked against PostgreSQL."""

from __future__ import annotations

import asyncio

from tests.integration.test_broadcaster_harness import (
    SseClient,
    WsClient,
    broadcaster,
    check_delivery,
    head,
    pg_rows,
    produce_session,
    producer,
    stream_changes,
    wait_for_head,
    writer,
)


async def test_ws_and_sse_resume_mid_stream(redis_url, db_url, prefix, aredis):
    session = "s-feeds"
    async with (
        writer(redis_url, db_url, prefix),
        broadcaster(redis_url, db_url, prefix) as b,
        producer(redis_url, prefix) as p,
    ):
        production = asyncio.create_task(produce_session(p, session, 150, updates=3))
        # Connect mid-stream: wait until some rows exist.
        await wait_for_head(db_url, session, 50)

        ws = WsClient(b.ws_url)
        await ws.connect()
        await ws.subscribe(session, after=0)
        sse = SseClient(b.base, session)

        async def ws_side() -> None:
            # Read a while, drop the connection, resume from the cursor; twice.
            for _ in range(2):
                target = await head(db_url, session)  # reachable: committed
                await ws.until(session, target)
                await ws.close()
                await asyncio.sleep(0.2)
                await ws.connect()
                await ws.subscribe(session)

        async def sse_side() -> None:
            await sse.read(max_events=30, after=0)
            await asyncio.sleep(0.2)
            # Resumes with Last-Event-ID, up to what is committed now.
            await sse.read(until_change=await head(db_url, session))

        await asyncio.gather(ws_side(), sse_side())
        final = await production
        await ws.until(session, final)
        await ws.close()
        await sse.read(until_change=final)

        pg = await pg_rows(db_url, session)
        published = await stream_changes(aredis, prefix, session)
        assert max(published) == final
        check_delivery(ws.changes[session], pg, published)
        check_delivery(sse.changes, pg, published)
