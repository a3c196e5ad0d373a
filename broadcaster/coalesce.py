"""Coalescing: what waits to be sent on one connection, gathered into frames.

Changes of each session are kept in change order. Within one window a newer
change of a row replaces an older one still waiting (a streaming row sends
only its latest revision): the subscriber then skips a change that was
superseded, exactly as a catch-up from PostgreSQL would, and its cursor
still moves in increasing change order. A change with ``ack`` makes the batch
urgent: the sender flushes at once instead of finishing the window.
"""

from __future__ import annotations

from collections.abc import Iterable

from rowcast.broadcaster.item import Item


class Pending:
    __slots__ = ("_collapse", "_sessions", "count", "urgent")

    def __init__(self, collapse: bool = True) -> None:
        self._collapse = collapse
        self._sessions: dict[str, dict[str, Item] | list[Item]] = {}
        self.count = 0
        self.urgent = False

    def add(self, session: str, items: Iterable[Item]) -> None:
        held = self._sessions.get(session)
        if held is None:
            held = self._sessions[session] = {} if self._collapse else []
        if isinstance(held, dict):
            for item in items:
                # pop + set moves the row to the end: dict order stays change order.
                if held.pop(item.row, None) is None:
                    self.count += 1
                held[item.row] = item
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
        for session, held in self._sessions.items():
            items = list(held.values()) if isinstance(held, dict) else held
            for start in range(0, len(items), max_batch):
                out.append((session, items[start : start + max_batch]))
        self.clear()
        return out

    def discard(self, session: str) -> None:
        """Forget what waits for one session (it was unsubscribed)."""
        held = self._sessions.pop(session, None)
        if held is not None:
            self.count -= len(held)

    def clear(self) -> None:
        self._sessions = {}
        self.count = 0
        self.urgent = False

    def sessions(self) -> list[str]:
        return list(self._sessions)
