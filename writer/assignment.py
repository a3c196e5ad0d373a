"""Which shards each writer of a fleet tries to lead: a pure function of the
live members, the shards and who holds each shard now.

Balanced: with S shards and W members each member gets ⌊S/W⌋ or ⌈S/W⌉.
Sticky: a member keeps what it holds up to its quota, so a member joining
takes only its share and a member leaving hands over only its own shards,
never reshuffling the rest. Spread by rendezvous (highest-random-weight)
hashing: a free shard goes to the member with room that weighs it highest,
and an over-quota member keeps the shards it weighs highest. Every process
computes the same answer from the same inputs; the lease and the fence stay
the only safety mechanism, this only decides who tries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from functools import lru_cache


@lru_cache(maxsize=65536)
def weight(member: str, shard: int) -> int:
    """The rendezvous weight of (member, shard): the same in every process
    and every run (not Python's salted ``hash``)."""
    digest = hashlib.blake2b(f"{member}\0{shard}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def quotas(members: Iterable[str], shards: int, held: Mapping[str, int]) -> dict[str, int]:
    """⌊S/W⌋ for each member, one more for S mod W of them: those holding the
    most now (so nobody gives up a shard only to take another), ties broken
    by weight so every process picks the same ones."""
    ms = sorted(set(members))
    if not ms:
        return {}
    base, extra = divmod(shards, len(ms))
    ranked = sorted(ms, key=lambda m: (-held.get(m, 0), -weight(m, -1), m))
    return {m: base + (1 if i < extra else 0) for i, m in enumerate(ranked)}


def assign(
    members: Iterable[str], shards: Iterable[int], holders: Mapping[int, str | None]
) -> dict[str, frozenset[int]]:
    """member -> the shards it should lead. ``holders`` maps a shard to its
    lease holder (absent or None: free); a holder that is not a live member
    counts as free, its lease will lapse."""
    ms = sorted(set(members))
    ss = sorted(set(shards))
    if not ms:
        return {}
    live = set(ms)
    held: dict[str, list[int]] = {m: [] for m in ms}
    for s in ss:
        h = holders.get(s)
        if h is not None and h in live:
            held[h].append(s)
    quota = quotas(ms, len(ss), {m: len(v) for m, v in held.items()})
    out: dict[str, set[int]] = {m: set() for m in ms}
    for m in ms:
        keep = sorted(held[m], key=lambda s: (-weight(m, s), s))[: quota[m]]
        out[m].update(keep)
    taken = {s for v in out.values() for s in v}
    free = [s for s in ss if s not in taken]
    room = {m: quota[m] - len(out[m]) for m in ms}
    # Highest weight first over every (member with room, free shard) pair:
    # the result does not depend on the order shards or members are listed in.
    pairs = sorted(
        ((weight(m, s), m, s) for s in free for m in ms if room[m] > 0),
        key=lambda p: (-p[0], p[1], p[2]),
    )
    placed: set[int] = set()
    for _, m, s in pairs:
        if s in placed or room[m] == 0:
            continue
        out[m].add(s)
        room[m] -= 1
        placed.add(s)
    return {m: frozenset(v) for m, v in out.items()}
