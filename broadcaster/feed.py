"""The shard feed: SSUBSCRIBE to ``P:{N}:changes`` of every shard, with one
connection per Redis node owning some of them (on a single server, one), and
an exact account of which shards are subscribed at any moment.

redis-py's PubSub reconnects and resubscribes silently, and its cluster
PubSub does not follow a failover by itself; here each node's connection is
built with no retries, so a loss surfaces, and a fresh one is made, so the
hub knows exactly which shards may have missed messages. A node that stops
owning a shard (failover, slot migration) ends the subscription with
``sunsubscribe``: that is a loss too, and the shard is subscribed again on its
new owner after the cluster's map is read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from rowcast.contract.backoff import Backoff
from rowcast.contract.connection import TRANSIENT_OR_OS, async_client, node_client
from rowcast.contract.keys import Keys

log = logging.getLogger(__name__)

Shards = frozenset[int]

_MAP_TROUBLE: tuple[type[BaseException], ...] = (*TRANSIENT_OR_OS, RedisClusterException)
"""Why the cluster's map cannot be read just now (a failover, nodes down)."""


READ_TOGETHER = 64
READ_TOGETHER_BYTES = 1 << 20
"""At most this many pub/sub messages, and about this many bytes of them,
handed to the hub at once: a burst of large batches still reaches the
connections' senders between chunks, as it did one message at a time, so a
connection is not judged too slow by the size of one read."""


class SubscriptionLost(RedisError):
    """A node ended a sharded subscription (it no longer owns the shard)."""


@dataclass(eq=False)
class Feed:
    """``redis_url`` is asked at every connection (the owner may change it);
    ``on_up(shards)``: those shards are subscribed from now on (what was
    published before may be missed); ``on_down(shards)``: they are not."""

    redis_url: Callable[[], str]
    keys: Keys
    shards: Shards
    _: KW_ONLY
    on_message: Callable[[list[bytes]], Any]
    """Messages received together, in order (one, unless more had arrived)."""
    on_up: Callable[[Shards], None]
    on_down: Callable[[Shards], None]
    client_name: str
    ping_every: float = 5.0

    def __post_init__(self) -> None:
        self._channels = {self.keys.changes(n): n for n in self.shards}

    def _plain(self) -> dict[str, Any]:
        # No retries: a lost connection must surface, never be papered over.
        return {
            "client_name": self.client_name,
            "retry": Retry(NoBackoff(), 0),
            "socket_connect_timeout": 5,
            "socket_keepalive": True,
        }

    async def run(self) -> None:
        """Until cancelled."""
        topology = async_client(self.redis_url(), socket_connect_timeout=5)
        try:
            if isinstance(topology, RedisCluster):
                await self._run_cluster(topology)
            else:
                await topology.aclose()
                await self._run_single()
        finally:
            await topology.aclose()

    async def _run_single(self) -> None:
        backoff = Backoff(base=0.1, cap=5.0)
        while True:
            client = async_client(self.redis_url(), **self._plain())
            assert isinstance(client, Redis)
            try:
                await self._listen(client, self.shards, backoff)
            except (RedisError, OSError) as e:
                self._lost("", self.shards, e)
                await asyncio.sleep(backoff.next_delay())

    async def _run_cluster(self, topology: RedisCluster) -> None:
        """One link per master owning shards; when one ends, read the map again
        and subscribe what is not subscribed (links that still fit go on)."""
        backoff = Backoff(base=0.1, cap=5.0)
        links: dict[str, tuple[Shards, asyncio.Task[None]]] = {}
        try:
            while True:
                try:
                    plan = await self._plan(topology)
                except _MAP_TROUBLE as e:
                    log.warning("sharded pub/sub: cannot read the cluster's map (%s); retrying", e)
                    await asyncio.sleep(backoff.next_delay())
                    continue
                for name, (shards, task) in list(links.items()):
                    if name not in plan or plan[name][1] != shards:
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await task
                        del links[name]
                        self._lost(name, shards, None)
                for name, (node, shards) in plan.items():
                    if name not in links:
                        links[name] = (
                            shards,
                            asyncio.create_task(self._link(node, shards, backoff)),
                        )
                done, _ = await asyncio.wait(
                    [t for _, t in links.values()], return_when=asyncio.FIRST_COMPLETED
                )
                for name, (shards, task) in list(links.items()):
                    if task in done:
                        del links[name]
                        self._lost(name, shards, task.exception())
                await asyncio.sleep(backoff.next_delay())
                with contextlib.suppress(*_MAP_TROUBLE):
                    await topology.nodes_manager.initialize()
        finally:
            for _, task in links.values():
                task.cancel()
            for _, task in links.values():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _plan(self, topology: RedisCluster) -> dict[str, tuple[ClusterNode, Shards]]:
        """node name -> (node, the shards whose channel it owns now)."""
        await topology.initialize()
        owned: dict[str, set[int]] = {}
        nodes: dict[str, ClusterNode] = {}
        for channel, shard in self._channels.items():
            node = topology.get_node_from_key(channel)
            assert node is not None  # initialized: every slot has an owner
            nodes[node.name] = node
            owned.setdefault(node.name, set()).add(shard)
        return {name: (nodes[name], frozenset(s)) for name, s in owned.items()}

    async def _link(self, node: ClusterNode, shards: Shards, backoff: Backoff) -> None:
        client = node_client(node, **self._plain())
        await self._listen(client, shards, backoff)

    def _lost(self, node: str, shards: Shards, error: BaseException | None) -> None:
        where = f" on {node}" if node else ""
        listed = ",".join(map(str, sorted(shards)))
        if error is None:
            log.info("sharded pub/sub: moving shards %s%s to their new owner", listed, where)
        else:
            log.warning(
                "sharded pub/sub: shards %s lost%s (%s); resubscribing", listed, where, error
            )
        self.on_down(shards)

    async def _listen(self, client: Redis, shards: Shards, backoff: Backoff) -> None:
        """SSUBSCRIBE the shards' channels on one connection and read it until
        it fails; says ``on_up`` once every channel is confirmed."""
        pubsub = client.pubsub()
        loop = asyncio.get_running_loop()
        waiting = {self.keys.changes(n).encode() for n in shards}
        try:
            # One SSUBSCRIBE per channel: a cluster node refuses channels of
            # several slots in one command.
            for channel in sorted(waiting):
                await pubsub.ssubscribe(channel)
            ping_sent: float | None = None
            while True:
                msg: dict[str, Any] | None = await pubsub.get_message(timeout=self.ping_every)
                if msg is None:
                    # Quiet: make the connection prove it is alive.
                    if ping_sent is None:
                        ping_sent = loop.time()
                        await pubsub.ping()
                    elif loop.time() - ping_sent > 3 * self.ping_every:
                        raise RedisConnectionError("pub/sub connection stopped answering")
                    continue
                ping_sent = None
                if msg["type"] == "smessage":
                    # With it, whatever else has arrived already (nothing when
                    # the broadcaster keeps up): the hub frames them together.
                    # Finding that nothing has costs one non-blocking read
                    # (about 15 µs) per message on an idle broadcaster.
                    batch = [msg["data"]]
                    size = len(batch[0])
                    msg = None
                    try:
                        while len(batch) < READ_TOGETHER and size < READ_TOGETHER_BYTES:
                            msg = await pubsub.get_message(timeout=0)
                            if msg is None or msg["type"] != "smessage":
                                break
                            batch.append(msg["data"])
                            size += len(msg["data"])
                            msg = None
                    finally:
                        # Even when the read after them failed.
                        self.on_message(batch)
                    # Let the senders run between batches: redis-py hands out
                    # buffered messages without yielding.
                    await asyncio.sleep(0)
                    if msg is None:
                        continue
                kind = msg["type"]
                if kind == "ssubscribe":
                    waiting.discard(msg["channel"])
                    if not waiting:
                        log.info("subscribed to the channels of shards %s", sorted(shards))
                        backoff.reset()
                        self.on_up(shards)
                elif kind == "sunsubscribe":
                    raise SubscriptionLost(f"the node dropped {msg['channel']!r} (slot moved)")
        finally:
            try:
                await pubsub.aclose()
                await client.aclose()
            except (RedisError, OSError):
                pass
