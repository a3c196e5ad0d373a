"""A lease acquisition that ran in Redis but whose answer was lost is
retried by the client itself (redis-py with a retry policy, as a cluster
client has by default); the retry must not count as a second acquisition (a
second INCR of the fence). A proxy between the client and the real Redis
drops the first answer and the connection."""

from __future__ import annotations

import asyncio
from urllib.parse import urlparse

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from rowcast.contract.keys import Keys
from rowcast.writer.lease import _ACQUIRE, Lease

HOLDER = "fleet-retry:1:aa"


class LosingProxy:
    """Forwards to Redis; the first command naming HOLDER runs there, but its
    answer never reaches the client: the connection is closed instead."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.dropped = asyncio.Event()

    async def handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        sreader, swriter = await asyncio.open_connection(self.host, self.port)
        losing = asyncio.Event()

        async def up() -> None:
            while data := await creader.read(65536):
                if not self.dropped.is_set() and HOLDER.encode() in data:
                    losing.set()
                swriter.write(data)
                await swriter.drain()
                if losing.is_set():
                    return

        async def down() -> None:
            while data := await sreader.read(65536):
                if losing.is_set():
                    self.dropped.set()  # Redis answered; the client never hears it
                    return
                cwriter.write(data)
                await cwriter.drain()

        tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if losing.is_set():
            await asyncio.wait(tasks, timeout=5)
        for t in tasks:
            t.cancel()
        for w in (cwriter, swriter):
            w.close()


async def test_a_lease_acquisition_retried_by_the_client_counts_once(
    redis_url: str, prefix: str, aredis: Redis
) -> None:
    u = urlparse(redis_url)
    proxy = LosingProxy(u.hostname or "127.0.0.1", u.port or 6379)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    keys = Keys(prefix)
    await aredis.script_load(_ACQUIRE)  # the first EVALSHA runs (no NOSCRIPT round)
    client = Redis.from_url(
        f"redis://127.0.0.1:{port}/{u.path.lstrip('/') or 0}", retry=Retry(NoBackoff(), 3)
    )
    try:
        fence = await Lease(client, keys, 0, HOLDER, 5000).acquire()
    finally:
        await client.aclose()
        server.close()
    assert proxy.dropped.is_set(), "the first answer was never lost: nothing was retried"
    assert fence == 1
    assert int(await aredis.get(keys.fence(0))) == 1
    assert (await aredis.get(keys.lease(0))).decode() == HOLDER
