"""A writer fleet without a coordinator: membership by heartbeat, and this
process's share of the shards.

Every writer process heartbeats into one sorted set, ``P:writers`` (holder
id -> Redis's clock in ms), with a script that also prunes members silent for
a lease period and returns who is left: one key, so on a Redis Cluster it is
one call to one node. With the members and the current lease holders in hand
every process computes the same plan (``assignment.assign``) and tries to
lead only its own part; a shard it leads but should not is handed over after
the batch in hand. The lease and the fence stay the only safety mechanism:
two processes that briefly disagree both try, and the lease picks one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from redis.asyncio import Redis

from rowcast.contract.backoff import Backoff, sleep_unless
from rowcast.contract.errors import one_line
from rowcast.contract.keys import Keys
from rowcast.writer.assignment import assign
from rowcast.writer.cancellation import raise_if_cancelled

log = logging.getLogger(__name__)

# Redis's own clock, so that processes whose clocks disagree still agree on
# who is stale. TIME before any write is allowed in scripts (effects
# replication, the only mode since Redis 7).
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


def _text(raw: bytes | str | None) -> str | None:
    if raw is None:
        return None
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class Fleet:
    """This process's membership and the shards it should lead."""

    def __init__(
        self, redis: Redis, keys: Keys, holder: str, shards: Sequence[int], lease_ms: int
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.holder = holder
        self.shards = sorted(set(shards))
        self.stale_ms = lease_ms
        # Often enough that a join or a leave is seen well within a lease
        # period; never slower than a second, however long the lease.
        self.period = min(lease_ms / 3, 1000) / 1000
        self.members: tuple[str, ...] = ()
        self.mine: frozenset[int] = frozenset()
        self._seen: tuple[tuple[str, ...], tuple[str | None, ...]] | None = None
        self._pulse = asyncio.Event()
        self._heartbeat = redis.register_script(_HEARTBEAT)

    def wants(self, shard: int) -> bool:
        """Whether this process should lead ``shard`` (False until the first
        heartbeat answered)."""
        return shard in self.mine

    async def refresh(self) -> None:
        """Heartbeat, read the members and the lease holders, recompute."""
        raw = await self._heartbeat(keys=[self.keys.writers()], args=[self.holder, self.stale_ms])
        members = tuple(sorted(m for m in (_text(x) for x in raw) if m))
        pipe = self.redis.pipeline(transaction=False)
        for s in self.shards:
            pipe.get(self.keys.lease(s))
        holders = tuple(_text(h) for h in await pipe.execute())
        if (members, holders) == self._seen:
            return
        self._seen = (members, holders)
        plan = assign(members, self.shards, dict(zip(self.shards, holders, strict=True)))
        mine = plan.get(self.holder, frozenset())
        if mine != self.mine or members != self.members:
            log.info(
                "fleet: %d writers; this one leads shards %s", len(members), sorted(mine),
                extra={"writers": len(members), "shards": sorted(mine)},
            )  # fmt: skip
        self.members, self.mine = members, mine
        # Wake the shard loops: a shard became ours, or one we want was released.
        self._pulse.set()
        self._pulse = asyncio.Event()

    async def wait(self, stop: asyncio.Event, timeout: float) -> None:
        """Until the members or holders change, ``stop`` is set, or ``timeout``."""
        waiters = [asyncio.ensure_future(self._pulse.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def run(self, stop: asyncio.Event) -> None:
        """Heartbeat until ``stop``, then leave the fleet at once so the
        others plan without this process (its leases are released by its
        shard loops after their batch in hand)."""
        backoff = Backoff()
        try:
            while not stop.is_set():
                raise_if_cancelled()
                try:
                    await self.refresh()
                    backoff.reset()
                except Exception as e:  # membership must outlive any one error
                    log.warning("fleet: heartbeat failed: %s; retrying", one_line(e))
                    await backoff.wait(stop)
                    continue
                raise_if_cancelled()
                await sleep_unless(stop, self.period)
        finally:
            await self.leave()

    async def leave(self) -> None:
        try:
            await self.redis.zrem(self.keys.writers(), self.holder)
        except Exception as e:  # a stale member is pruned anyway
            log.warning("fleet: could not leave: %s (pruned after a lease period)", one_line(e))
