"""One active writer per shard: a lease in Redis and a fencing number.

The lease (SET PX, renewed) says who should write; the fencing number (INCR at
every acquisition) travels into every PostgreSQL transaction, which refuses a
lower one, so a paused old leader can never commit behind a new one. Reads
from the consumer group are guarded by the lease inside Redis itself, so a
process that lost its lease cannot take entries out of the new leader's view.
"""

from __future__ import annotations

import secrets
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from rowcast.contract.entry import fields_of
from rowcast.contract.errors import LeaseLost
from rowcast.contract.keys import CONSUMER, GROUP, Keys

# Take the lease if it is free or already ours; every acquisition gets a new
# fencing number, which also fences out our own earlier incarnation. An
# acquisition is named by a random attempt id: the same attempt sent again (a
# client's retry after a timeout whose first try did run) returns the fence it
# already got instead of counting as a second acquisition. The fence is
# INCRed before anything is written, so a failing INCR leaves no lease behind.
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur ~= false and cur ~= ARGV[1] then
  return false
end
local mine = ARGV[1] .. ' ' .. ARGV[3] .. ' '
local last = redis.call('GET', KEYS[3])
if last ~= false and string.sub(last, 1, #mine) == mine then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return tonumber(string.sub(last, #mine + 1))
end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[3], mine .. fence)
return fence
"""

# Compare-and-expire and compare-and-delete: a key (a lease, a job's lock)
# is renewed or let go only by the holder that wrote it (ops' job lock uses
# them too).
RENEW_IF_HELD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

RELEASE_IF_HELD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Redis forgot its fencing counter (a restart without persistence) while
# PostgreSQL holds a higher one: move it past PostgreSQL's, only for the holder.
_RAISE_FENCE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
if cur <= tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], tonumber(ARGV[2]) + 1)
  return tonumber(ARGV[2]) + 1
end
return redis.call('INCR', KEYS[2])
"""

# XREADGROUP without BLOCK (scripts may not block), only for the holder.
_READ = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local r = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', ARGV[4],
                    'STREAMS', KEYS[2], ARGV[5])
if not r then
  return {}
end
return r
"""


class Lease:
    def __init__(self, redis: Redis, keys: Keys, shard: int, holder: str, ttl_ms: int) -> None:
        self.redis = redis
        self.shard = shard
        self.holder = holder
        self.ttl_ms = ttl_ms
        self._lease = keys.lease(shard)
        self._fence = keys.fence(shard)
        self._acquired = keys.acquired(shard)
        self._entries = keys.entries(shard)
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(RENEW_IF_HELD)
        self._release = redis.register_script(RELEASE_IF_HELD)
        self._read = redis.register_script(_READ)
        self._raise_fence = redis.register_script(_RAISE_FENCE)

    async def acquire(self, attempt: str | None = None) -> int | None:
        """The new fencing number if the lease is now ours, else None.
        ``attempt`` names this acquisition (random by default); repeating it
        repeats the answer."""
        fence = await self._acquire(
            keys=[self._lease, self._fence, self._acquired],
            args=[self.holder, self.ttl_ms, attempt or secrets.token_hex(8)],
        )
        return None if fence is None else int(fence)

    async def raise_fence(self, held: int) -> int | None:
        """A fencing number above ``held`` (PostgreSQL's), while we hold the
        lease; None when we do not."""
        fence = await self._raise_fence(keys=[self._lease, self._fence], args=[self.holder, held])
        return None if fence is None else int(fence)

    async def renew(self) -> bool:
        return bool(await self._renew(keys=[self._lease], args=[self.holder, self.ttl_ms]))

    async def release(self) -> None:
        await self._release(keys=[self._lease], args=[self.holder])

    async def read(self, count: int, start: str = ">") -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Entries of the shard's stream for the group's one consumer (``start``
        ``0`` re-reads its pending list). Raises LeaseLost when not the holder."""
        reply: Any = await self._read(
            keys=[self._lease, self._entries],
            args=[self.holder, GROUP, CONSUMER, count, start],
        )
        return self._entries_of(reply)

    async def read_when_added(
        self, count: int, after: bytes | str, block_ms: int
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """``read`` once an entry past ``after`` exists (or ``block_ms`` has
        passed): a blocking XREAD and the guarded read sent together. Redis
        runs a connection's commands in order, so the read runs the moment
        the XREAD wakes, with no round trip between them (scripts may not
        block, so the wait cannot be inside the script)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xread({self._entries: after}, count=1, block=block_ms)
        keys = (self._lease, self._entries)
        pipe.evalsha(self._read.sha, len(keys), *keys, self.holder, GROUP, CONSUMER, count, ">")
        woke, reply = await pipe.execute(raise_on_error=False)
        if isinstance(reply, NoScriptError):
            # A server that forgot its scripts (a restart, a promoted replica):
            # the plain call loads it again.
            return await self.read(count)
        for r in (woke, reply):
            if isinstance(r, Exception):
                raise r
        return self._entries_of(reply)

    def _entries_of(self, reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
        if reply == 0:
            raise LeaseLost(f"shard {self.shard}: lease is held by another writer")
        if not reply:
            return []
        out: list[tuple[bytes, dict[bytes, bytes]]] = []
        for entry_id, flat in reply[0][1]:
            if flat is None:  # deleted while pending
                out.append((entry_id, {}))
                continue
            out.append((entry_id, fields_of(flat)))
        return out
