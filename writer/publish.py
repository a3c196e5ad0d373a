"""After COMMIT, never before: everything Redis must learn of one batch — the
``P:{N}:rows`` entries, the ``P:{N}:changes`` message (SPUBLISH; and the
``P:rows`` one on a single server), dead letters, receipts and the XACK — in
one Lua script, which Redis runs atomically, in one round trip and one
packed command. A crash in between is repaired from the tracking record in
PostgreSQL. A script that fails keeps what it wrote before the failure, so
the script fails only before its first write: a stream key of the shard that
holds another type (someone's SET) stops the shard's publishing, loudly,
until it is removed; a reply key that holds another type is replaced (it is
the writer's, and the producer waiting on it gets its receipt).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rowcast.contract.change import Change, batch_message
from rowcast.contract.connection import AnyAsyncRedis, is_cluster
from rowcast.contract.errors import LeaseLost, Unavailable
from rowcast.contract.keys import GROUP, Keys
from rowcast.writer.batch import Dead, Reply, error_receipt

# KEYS: rows stream, dead stream, entries stream, lease, then one reply list
# per receipt (all of shard N: hash tag {N}, one cluster slot). ARGV: maxlen,
# P:rows channel ('' on a cluster), message, receipt ttl, #changes, #dead,
# #receipts, #acks, group, lease holder ('' for no check), the shard's
# channel P:{N}:changes (same slot as the keys), then one packed
# value per change (see Change.packed: its fields joined by NUL, which neither
# a valid id, kind nor JSON text can contain), (count, fields...) per dead
# letter, one payload per receipt, the ids to acknowledge.
# Packing a change into one argument keeps redis-py's per-argument encoding,
# the writer's largest Python cost, off the hot path.
_PUBLISH = """
if ARGV[10] ~= '' and redis.call('GET', KEYS[4]) ~= ARGV[10] then
  return -1
end
for k = 1, 3 do
  local t = redis.call('TYPE', KEYS[k])['ok']
  if t ~= 'stream' and t ~= 'none' then
    return {k, t}
  end
end
local maxlen, ttl = ARGV[1], ARGV[4]
local nc, nd, nr, na = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local i = 12
local f, NUL = {}, string.char(0)
for _ = 1, nc do
  local s, pos = ARGV[i], 1
  for k = 1, 9 do
    local e = string.find(s, NUL, pos, true)
    f[k] = string.sub(s, pos, e - 1)
    pos = e + 1
  end
  local x = {KEYS[1], 'MAXLEN', '~', maxlen, '*',
    'session', f[1], 'row', f[2], 'sequence', f[3], 'revision', f[4],
    'change', f[5], 'kind', f[6], 'body', string.sub(s, pos), 'ack', f[7]}
  if f[8] ~= '' then
    x[#x + 1] = 'extend'
    x[#x + 1] = f[8]
  end
  if f[9] ~= '' then
    x[#x + 1] = 'base_revision'
    x[#x + 1] = f[9]
  end
  redis.call('XADD', unpack(x))
  i = i + 1
end
if nc > 0 then
  redis.call('SPUBLISH', ARGV[11], ARGV[3])
  if ARGV[2] ~= '' then
    redis.call('PUBLISH', ARGV[2], ARGV[3])
  end
end
for _ = 1, nd do
  local n = tonumber(ARGV[i])
  local args = {KEYS[2], '*'}
  for j = 1, n do args[j + 2] = ARGV[i + j] end
  redis.call('XADD', unpack(args))
  i = i + n + 1
end
for r = 1, nr do
  local t = redis.call('TYPE', KEYS[4 + r])['ok']
  if t ~= 'list' and t ~= 'none' then
    redis.call('DEL', KEYS[4 + r])
  end
  redis.call('RPUSH', KEYS[4 + r], ARGV[i])
  redis.call('PEXPIRE', KEYS[4 + r], ttl)
  i = i + 1
end
local done = 0
while done < na do
  local ids = {KEYS[3], ARGV[9]}
  for k = done, math.min(done + 999, na - 1) do ids[#ids + 1] = ARGV[i + k] end
  redis.call('XACK', unpack(ids))
  done = done + 1000
end
return nc
"""


@dataclass(slots=True)
class Outcome:
    """What one committed batch tells the world."""

    ids: list[bytes] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    receipts: list[Reply] = field(default_factory=list)
    dead: list[Dead] = field(default_factory=list)


class Publisher:
    def __init__(
        self,
        redis: AnyAsyncRedis,
        keys: Keys,
        shard: int,
        rows_maxlen: int,
        receipt_ttl_ms: int,
        holder: str = "",
    ) -> None:
        """With ``holder``, publish only while that writer holds the shard's
        lease: a leader paused past its lease must not announce late (the new
        leader re-announces what it left pending)."""
        self.holder = holder
        self.keys = keys
        self.shard = shard
        self.rows_maxlen = rows_maxlen
        self.receipt_ttl_ms = receipt_ttl_ms
        # On a cluster a PUBLISH goes to every node: only the sharded channel there.
        self.everywhere = "" if is_cluster(redis) else keys.channel
        self._script = redis.register_script(_PUBLISH)

    def script_args(self, out: Outcome) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of the publish script (pure, for tests)."""
        k, n = self.keys, self.shard
        receipts = list(out.receipts)
        receipts += [Reply(d.reply, error_receipt(d.error)) for d in out.dead if d.reply]
        keys = [k.rows(n), k.dead(n), k.entries(n), k.lease(n)]
        keys += [k.reply(n, r.token) for r in receipts]
        message = batch_message(n, out.changes) if out.changes else b""
        argv: list[Any] = [
            self.rows_maxlen,
            self.everywhere,
            message,
            self.receipt_ttl_ms,
            len(out.changes),
            len(out.dead),
            len(receipts),
            len(out.ids),
            GROUP,
            self.holder,
            k.changes(n),
        ]
        argv += [c.packed() for c in out.changes]
        for d in out.dead:
            fields = d.dead_fields()
            argv.append(len(fields))
            argv += fields
        argv += [r.to_json() for r in receipts]
        argv += out.ids
        return keys, argv

    async def publish(self, out: Outcome) -> None:
        if not (out.changes or out.dead or out.receipts or out.ids):
            return
        keys, argv = self.script_args(out)
        done = await self._script(keys=keys, args=argv)
        if done == -1:
            raise LeaseLost(f"shard {self.shard}: lease lost before publishing; stepping down")
        if isinstance(done, list):
            index, kind = done
            key = keys[int(index) - 1]
            kind = kind.decode() if isinstance(kind, bytes) else kind
            raise Unavailable(
                f"{key} holds a {kind}, not a stream: shard {self.shard} publishes"
                " nothing (and acknowledges nothing) until that key is removed"
            )

    async def send(self, changes: Sequence[Change]) -> None:
        """Announce changes made outside the write path (repair)."""
        await self.publish(Outcome(changes=list(changes)))
