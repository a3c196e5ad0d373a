"""The subscription: one subscriber's cursor on one session, as pure state.

It decides, for every live change and every page read from PostgreSQL, what
to deliver and whether PostgreSQL must be read (again). The rules:

- A new subscription catches up first: live changes are buffered while rows
  with ``change > cursor`` are read (each changed row once, at its latest
  revision, in change order), then the buffer is replayed with the live rule.
- The live rule: a change at or below the cursor was already covered and is
  dropped; the next number is delivered; a number that jumps means a lost
  message, so the gap is read from PostgreSQL while live changes buffer.
- The buffer is bounded. When it overflows it is thrown away and the
  subscription is marked stale: PostgreSQL still has every one of those
  changes, so one more read after the current one recovers them all.

No I/O here: the hub (hub.py) carries out the reads this asks for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from rowcast.broadcaster.item import Item


class Step(NamedTuple):
    deliver: list[Item]
    """Items to hand to the connection now, in change order."""
    fetch: bool
    """Read ``change > last`` from PostgreSQL next (and call ``fetched``)."""


_NOTHING = Step([], False)


class Subscription:
    __slots__ = ("_buffer", "_stale", "buffer_max", "fetching", "last", "session")

    def __init__(self, session: str, after: int, buffer_max: int = 10_000) -> None:
        if after < 0:
            raise ValueError("the cursor is a change number, 0 or more")
        self.session = session
        self.last = after
        """The cursor: the largest change number delivered (or the one resumed from)."""
        self.fetching = True
        """A read from PostgreSQL is due or in flight; live changes buffer meanwhile."""
        self.buffer_max = buffer_max
        self._buffer: list[Item] = []
        self._stale = False

    def start(self) -> Step:
        """The first step of a new subscription: catch up from PostgreSQL."""
        return Step([], True)

    def live(self, item: Item) -> Step:
        """A change that arrived on the live path (pub/sub)."""
        if self.fetching:
            if item.change <= self.last:
                return _NOTHING
            if len(self._buffer) >= self.buffer_max:
                # Dropping is safe: everything buffered is in PostgreSQL, and
                # the stale mark makes the next read cover it.
                self._buffer.clear()
                self._stale = True
            else:
                self._buffer.append(item)
            return _NOTHING
        if item.change <= self.last:
            return _NOTHING
        if item.change == self.last + 1:
            self.last = item.change
            return Step([item], False)
        self.fetching = True
        self._buffer.append(item)
        return Step([], True)

    def fetched(self, items: Sequence[Item], complete: bool) -> Step:
        """A page read from PostgreSQL: rows with ``change > last`` in change order.

        ``complete`` says the page was the last one (fewer rows than asked).
        """
        out: list[Item] = []
        for item in items:
            if item.change > self.last:
                out.append(item)
                self.last = item.change
        if not complete:
            return Step(out, True)
        if self._stale:
            self._stale = False
            return Step(out, True)
        buffered, self._buffer = self._buffer, []
        for i, item in enumerate(buffered):
            if item.change <= self.last:
                continue
            if item.change == self.last + 1:
                out.append(item)
                self.last = item.change
                continue
            # Still a hole between what PostgreSQL showed and what pub/sub
            # brought: keep the rest and read again.
            self._buffer = buffered[i:]
            return Step(out, True)
        self.fetching = False
        return Step(out, False)

    def poke(self) -> bool:
        """PostgreSQL may hold changes this subscription has not seen (the
        pub/sub connection came back). True when a read must start now."""
        if self.fetching:
            self._stale = True
            return False
        self.fetching = True
        return True

    @property
    def buffered(self) -> int:
        return len(self._buffer)
