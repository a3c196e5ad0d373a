"""Every Redis key and channel name of rowcast, built in one place.

The braces are Redis Cluster hash tags: all keys of one shard share a slot, so
one MULTI (or one Lua script) may touch them all.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

GROUP = "writer"
"""The consumer group of the writer on every ``P:{N}:entries`` stream."""

CONSUMER = "active"
"""The one consumer name used by whichever writer process holds a shard's lease,
so that a new leader inherits the pending entries of the old one."""


def shard_of(session: str | bytes, shards: int) -> int:
    """The shard of a session: zlib's unsigned crc32 of its UTF-8 bytes mod shards."""
    raw = session.encode() if isinstance(session, str) else session
    return zlib.crc32(raw) % shards


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "rowcast"

    def entries(self, shard: int) -> str:
        """Stream: the connectors' unsequenced entries (consumer group ``writer``)."""
        return f"{self.prefix}:{{{shard}}}:entries"

    def rows(self, shard: int) -> str:
        """Stream: every persisted change of the shard, in commit order."""
        return f"{self.prefix}:{{{shard}}}:rows"

    def dead(self, shard: int) -> str:
        """Stream: entries that can never be persisted, with the reason."""
        return f"{self.prefix}:{{{shard}}}:dead"

    def changes(self, shard: int) -> str:
        """Sharded pub/sub channel (SPUBLISH): one message per committed batch of
        the shard; on a Redis Cluster it stays on the node owning the shard."""
        return f"{self.prefix}:{{{shard}}}:changes"

    def reply(self, shard: int, token: str) -> str:
        """List: the receipt of the entry that asked for one with ``token``; expires."""
        return f"{self.prefix}:{{{shard}}}:reply:{token}"

    def lease(self, shard: int) -> str:
        """String: the id of the writer process that is active on the shard."""
        return f"{self.prefix}:{{{shard}}}:lease"

    def fence(self, shard: int) -> str:
        """Counter: incremented by every new lease holder (its fencing number)."""
        return f"{self.prefix}:{{{shard}}}:fence"

    def acquired(self, shard: int) -> str:
        """String: ``holder attempt fence`` of the last lease acquisition, so a
        retried acquisition returns its fence instead of taking a new one."""
        return f"{self.prefix}:{{{shard}}}:acquired"

    def epoch(self, shard: int) -> str:
        """String: a random id of this incarnation of the shard's input stream."""
        return f"{self.prefix}:{{{shard}}}:epoch"

    def writers(self) -> str:
        """Sorted set: the live writer processes of the fleet (holder id ->
        last heartbeat, Redis's clock in ms). One key, so a cluster reads the
        whole membership in one call."""
        return f"{self.prefix}:writers"

    def verify_result(self) -> str:
        """String: JSON of the last periodic ``verify`` run (maintenance job)."""
        return f"{self.prefix}:verify"

    def broadcaster(self, instance: str) -> str:
        """String with expiry: one broadcaster's heartbeat (connections, subscriptions)."""
        return f"{self.prefix}:broadcaster:{instance}"

    def broadcaster_pattern(self) -> str:
        return f"{self.prefix}:broadcaster:*"

    def job_lock(self, name: str) -> str:
        return f"{self.prefix}:lock:{name}"

    @property
    def channel(self) -> str:
        """The pub/sub channel carrying one message per committed batch of every
        shard, on a single server only (a cluster would send it to every node)."""
        return f"{self.prefix}:rows"
