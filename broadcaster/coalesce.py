"""Coalescing: what waits to be sent on one connection, gathered into frames.

Changes of each session are kept in change order. Within one window a newer
change of a row replaces an older one still waiting (a streaming row sends
only its latest revision): the subscriber then skips a change that was
superseded, exactly as a catch-up from PostgreSQL would, and its cursor
still moves in increasing change order. A change with ``ack`` makes the batch
urgent: the sender flushes at once instead of finishing the window.

Deltas, for a subscription that asked for them (``track``): ``Held`` records
the revision of each row this connection has sent to the client. When the
frame is built, a row's waiting deltas (each on the revision of the one
before) go as one delta only if the client holds the first one's base;
anything else goes whole. The decision is made when the frame is taken, from
what was really sent before it, so a delta on a base the client does not
hold cannot be sent.
"""

from __future__ import annotations

from collections.abc import Iterable

from rowcast.broadcaster.item import Item, merged_delta

HELD_ROWS = 1024
"""Rows whose revision one subscription remembers; the least recently sent is
forgotten first (its next change then goes whole)."""


class Held:
    """The revision of each row as the client last received it (bounded)."""

    __slots__ = ("_rows", "max_rows")

    def __init__(self, max_rows: int = HELD_ROWS) -> None:
        self.max_rows = max_rows
        self._rows: dict[str, int] = {}

    def get(self, row: str) -> int | None:
        return self._rows.get(row)

    def sent(self, row: str, revision: int) -> None:
        rows = self._rows
        rows.pop(row, None)
        rows[row] = revision
        if len(rows) > self.max_rows:
            del rows[next(iter(rows))]

    def __len__(self) -> int:
        return len(self._rows)


class Pending:
    __slots__ = ("_collapse", "_held", "_sessions", "count", "urgent")

    def __init__(self, collapse: bool = False) -> None:
        self._collapse = collapse
        # Per session: row -> the row's waiting changes (collapsed: its latest,
        # or a chain of deltas), or every change in order (not collapsed).
        self._sessions: dict[str, dict[str, list[Item]] | list[Item]] = {}
        self._held: dict[str, Held] = {}
        self.count = 0
        self.urgent = False

    def track(self, session: str, deltas: bool, max_rows: int = HELD_ROWS) -> None:
        """A new subscription to ``session``: with ``deltas`` its extends may go
        as deltas; it starts holding nothing, so its catch-up goes whole."""
        if deltas:
            self._held[session] = Held(max_rows)
        else:
            self._held.pop(session, None)

    def held(self, session: str) -> Held | None:
        return self._held.get(session)

    def add(self, session: str, items: Iterable[Item]) -> None:
        held = self._sessions.get(session)
        if held is None:
            held = self._sessions[session] = {} if self._collapse else []
        if isinstance(held, dict):
            deltas = session in self._held
            for item in items:
                # pop + set moves the row to the end: dict order stays change order.
                waiting = held.pop(item.row, None)
                if waiting is None:
                    self.count += 1
                    waiting = [item]
                elif deltas and _chains(waiting, item):
                    waiting.append(item)
                else:
                    waiting = [item]
                held[item.row] = waiting
                if item.ack:
                    self.urgent = True
        else:
            for item in items:
                held.append(item)
                self.count += 1
                if item.ack:
                    self.urgent = True

    def take(self, max_batch: int) -> list[tuple[str, list[Item]]]:
        """Everything waiting, as (session, items) chunks of at most max_batch."""
        out: list[tuple[str, list[Item]]] = []
        for session, waiting in self._sessions.items():
            h = self._held.get(session)
            if isinstance(waiting, dict):
                if h is None:
                    items = [w[-1] for w in waiting.values()]
                else:
                    items = [_send_chain(session, w, h) for w in waiting.values()]
            else:
                items = waiting if h is None else [_send_one(i, h) for i in waiting]
            for start in range(0, len(items), max_batch):
                out.append((session, items[start : start + max_batch]))
        self.clear()
        return out

    def one(self, session: str, item: Item) -> Item:
        """What ``add(session, [item])`` then ``take`` would send, with nothing
        else waiting: the item, or its delta when the client holds its base
        (recorded as sent, as ``take`` does)."""
        h = self._held.get(session)
        if h is None:
            return item
        if self._collapse:
            return _send_chain(session, [item], h)
        return _send_one(item, h)

    def discard(self, session: str) -> None:
        """Forget what waits for one session (it was unsubscribed)."""
        held = self._sessions.pop(session, None)
        if held is not None:
            self.count -= len(held)
            if not self.count:
                self.urgent = False  # the ack that made it urgent went with it
        self._held.pop(session, None)

    def clear(self) -> None:
        self._sessions = {}
        self.count = 0
        self.urgent = False

    def sessions(self) -> list[str]:
        return list(self._sessions)


def _chains(waiting: list[Item], item: Item) -> bool:
    """The waiting changes of a row stay a chain of deltas with ``item`` on top."""
    return waiting[0].base is not None and item.base == waiting[-1].revision


def _send_chain(session: str, waiting: list[Item], held: Held) -> Item:
    last = waiting[-1]
    first = waiting[0]
    if first.base is not None and held.get(first.row) == first.base:
        out = merged_delta(session, waiting)
    else:
        out = last
    held.sent(last.row, last.revision)
    return out


def _send_one(item: Item, held: Held) -> Item:
    out = item
    if item.base is not None and held.get(item.row) == item.base:
        out = item.as_delta()
    held.sent(item.row, item.revision)
    return out
