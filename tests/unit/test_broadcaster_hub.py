"""The hub's routing of one pub/sub message, against a fake PostgreSQL reader
(no servers)."""

from __future__ import annotations

import asyncio

from rowcast.broadcaster.hub import Hub
from rowcast.broadcaster.item import Item
from rowcast.broadcaster.metrics import Metrics
from rowcast.broadcaster.outbox import Outbox, Ticker
from rowcast.contract.keys import Keys


class FakeReader:
    def __init__(self) -> None:
        self.reads: list[tuple[str, int]] = []

    async def changes_after(self, session: str, after: int, limit: int) -> list[Item]:
        self.reads.append((session, after))
        return []

    async def heads(self, sessions: list[str]) -> dict[str, int]:
        return {}


class NullSink:
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


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_a_change_without_a_session_is_a_gap_in_every_watched_session():
    reader = FakeReader()
    metrics = Metrics()
    hub = Hub("redis://127.0.0.1:1/0", Keys("t"), reader, metrics)  # type: ignore[arg-type]
    boxes = [Outbox(NullSink(), metrics, Ticker(0.001)) for _ in range(2)]
    for session, box in zip(("a", "b"), boxes, strict=True):
        hub.watch(session, 0, box)
    await settle()  # each subscription's first read: nothing stored yet
    assert sorted(reader.reads) == [("a", 0), ("b", 0)]
    hub.route(b'{"changes":[{"row":"r0","sequence":0,"revision":0,"change":1,"body":{}}]}')
    await settle()
    # Whose change it was cannot be known: every watched session reads again.
    assert sorted(reader.reads) == [("a", 0), ("a", 0), ("b", 0), ("b", 0)]
    assert metrics.registry.get_sample_value("rowcast_broadcaster_bad_messages_total") == 1
