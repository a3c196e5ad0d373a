"""The hub's routing of one pub/sub message, against a fake PostgreSQL reader
(no servers)."""

from __future__ import annotations

import asyncio

import orjson

from rowcast.broadcaster.hub import Hub
from rowcast.broadcaster.item import Item
from rowcast.broadcaster.metrics import Metrics
from rowcast.broadcaster.outbox import Outbox, Ticker
from rowcast.contract.keys import Keys
from tests.stubs import EmptyReader, NullSink


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_a_change_without_a_session_is_a_gap_in_every_watched_session():
    reader = EmptyReader()
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


class RecordingSink(NullSink):
    """A socket that takes every frame at once."""

    def __init__(self) -> None:
        self.frames: list[list[int]] = []

    def ready(self) -> bool:
        return True

    def send_now(self, batches: list[tuple[str, list[Item]]]) -> None:
        self.frames += [[i.change for i in items] for _, items in batches]


def message(*changes: tuple[str, int]) -> bytes:
    return orjson.dumps(
        {
            "changes": [
                {
                    "session": s,
                    "row": f"r{n}",
                    "sequence": n,
                    "revision": 0,
                    "change": n,
                    "body": {},
                }
                for s, n in changes
            ]
        }
    )


async def test_messages_read_together_reach_a_connection_as_one_frame_in_order():
    """A broadcaster that fell behind gets several messages at once from its
    feed: each connection then gets their changes of its session in one frame,
    in change order. An unreadable message among them still sends its
    sessions' subscribers to PostgreSQL."""
    reader = EmptyReader()
    metrics = Metrics()
    hub = Hub("redis://127.0.0.1:1/0", Keys("t"), reader, metrics)  # type: ignore[arg-type]
    sinks = {s: RecordingSink() for s in ("a", "b")}
    boxes = {s: Outbox(sink, metrics, Ticker(0.001)) for s, sink in sinks.items()}
    senders = [asyncio.create_task(box.run()) for box in boxes.values()]
    for s, box in boxes.items():
        hub.watch(s, 0, box)
    await settle()  # caught up: nothing stored yet
    reader.reads.clear()
    hub.route_all(
        [
            message(("a", 1), ("b", 1)),
            message(("a", 2)),
            b'{"changes":[{"session":"b","change":1e999}]}',
            message(("a", 3), ("b", 2)),
        ]
    )
    assert sinks["a"].frames == [[1, 2, 3]]
    assert sinks["b"].frames == [[1, 2]]
    await settle()
    assert reader.reads == [("b", 2)]  # the unreadable change of b: read again
    assert metrics.messages == 4
    for box in boxes.values():
        box.close("gone")
    await asyncio.gather(*senders)
