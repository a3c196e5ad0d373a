"""After COMMIT, never before: everything Redis must learn of one batch, in
one MULTI, so it sees all of it or none (a crash in between is repaired from
the tracking record)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from redis.asyncio import Redis

from producers.keys import GROUP, Keys
from writer.batch import Dead, Receipt, error_receipt
from writer.change import Change, batch_message


@dataclass(slots=True)
class Outcome:
    """What one committed batch tells the world."""

    ids: list[bytes] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)
    dead: list[Dead] = field(default_factory=list)

    @property
    def acked(self) -> bool:
        return any(c.ack for c in self.changes) or bool(self.receipts)


@dataclass(frozen=True, slots=True)
class Publisher:
    redis: Redis
    keys: Keys
    shard: int
    rows_maxlen: int
    receipt_ttl_ms: int

    async def publish(self, out: Outcome) -> None:
        k, n = self.keys, self.shard
        pipe = self.redis.pipeline(transaction=True)
        rows_key = k.rows(n)
        for c in out.changes:
            pipe.xadd(rows_key, c.stream_fields(), maxlen=self.rows_maxlen, approximate=True)  # type: ignore[arg-type]
        if out.changes:
            pipe.publish(k.channel, batch_message(n, out.changes))
        receipts: list[Receipt] = list(out.receipts)
        dead_key = k.dead(n)
        for d in out.dead:
            pipe.execute_command("XADD", dead_key, "*", *d.dead_fields())
            if d.reply is not None:
                receipts.append(Receipt(d.reply, error_receipt(d.error)))
        for r in receipts:
            key = k.reply(n, r.token)
            pipe.rpush(key, r.to_json())
            pipe.pexpire(key, self.receipt_ttl_ms)
        if out.ids:
            pipe.xack(k.entries(n), GROUP, *out.ids)
        if len(pipe):
            await pipe.execute()

    async def send(self, changes: Sequence[Change]) -> None:
        """Announce changes made outside the write path (repair)."""
        await self.publish(Outcome(changes=list(changes)))
