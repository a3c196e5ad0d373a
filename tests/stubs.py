"""Stand-ins for the hub's PostgreSQL reader and for a connection, for tests
and benchmarks of routing without servers."""

from __future__ import annotations

from rowcast.broadcaster.item import Item


class EmptyReader:
    """A database with nothing stored; it records what was read."""

    def __init__(self) -> None:
        self.reads: list[tuple[str, int]] = []

    async def changes_after(self, session: str, after: int, limit: int) -> list[Item]:
        self.reads.append((session, after))
        return []

    async def heads(self, sessions: list[str]) -> dict[str, int]:
        return {}


class NullSink:
    """A connection that takes and drops whatever its sender writes, and has
    no direct path."""

    async def send(self, batches: list[tuple[str, list[Item]]]) -> None:
        pass

    async def idle(self) -> None:
        pass

    async def finish(self, reason: str) -> None:
        pass

    def ready(self) -> bool:
        return False

    def send_now(self, batches: list[tuple[str, list[Item]]]) -> None:
        raise AssertionError("not ready")
