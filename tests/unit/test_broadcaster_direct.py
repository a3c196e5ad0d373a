"""The outbox's direct path: a change to a quiet WebSocket written by the
caller of ``put`` itself, never past what the sender is still writing."""

from __future__ import annotations

import asyncio

import orjson

from rowcast.broadcaster.item import Item, from_message_change
from rowcast.broadcaster.metrics import Metrics
from rowcast.broadcaster.outbox import DIRECT_MAX_BYTES, GONE, Outbox, Ticker
from rowcast.contract.change import Change


def it(change: int) -> Item:
    return Item(change, f"r{change}", False, b"{}")


class DirectSink:
    """A socket that takes frames at once while ``open``; the sender's own
    writes wait for ``block`` when it is set."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[int]]] = []
        self.open = True
        self.block: asyncio.Event | None = None
        self.refuse = False

    def _record(self, how: str, batches: list[tuple[str, list[Item]]]) -> None:
        self.sent.append((how, [i.change for _, items in batches for i in items]))

    async def send(self, batches: list[tuple[str, list[Item]]]) -> None:
        if self.block is not None:
            await self.block.wait()
        self._record("sender", batches)

    async def idle(self) -> None:
        pass

    async def finish(self, reason: str) -> None:
        pass

    def ready(self) -> bool:
        return self.open

    def send_now(self, batches: list[tuple[str, list[Item]]]) -> None:
        if self.refuse:
            raise RuntimeError("closing")
        self._record("direct", batches)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def started(
    metrics: Metrics | None = None,
) -> tuple[DirectSink, Outbox, asyncio.Task[None]]:
    """An outbox on a DirectSink with its sender running and idle."""
    sink = DirectSink()
    box = Outbox(sink, metrics or Metrics(), Ticker(0.001))
    task = asyncio.create_task(box.run())
    await settle()
    return sink, box, task


async def until_sent(sink: DirectSink, frames: int) -> None:
    for _ in range(100):
        if len(sink.sent) >= frames:
            return
        await asyncio.sleep(0.005)


async def test_a_quiet_connections_changes_are_written_before_put_returns():
    """What one pub/sub message brings a quiet connection (the hub hands over
    a session's changes together) is one frame, written by the hub itself:
    the sender task is not woken."""
    metrics = Metrics()
    sink, box, task = await started(metrics)
    waiter = box._waiter
    box.put("s", [it(1), it(2)])
    assert sink.sent == [("direct", [1, 2])]  # no await in between
    assert box._waiter is waiter and not waiter.done()  # the sender slept through
    await asyncio.sleep(0.01)  # quiet again
    box.put("s", [it(3)])
    assert sink.sent == [("direct", [1, 2]), ("direct", [3])]
    total = metrics.registry.get_sample_value("rowcast_broadcaster_frames_direct_total")
    assert total == 2
    box.close(GONE)
    await task


async def test_nothing_is_written_directly_while_the_sender_is_still_writing():
    sink, box, task = await started()
    sink.open = False  # the socket is paused: the sender takes change 1
    sink.block = asyncio.Event()
    box.put("s", [it(1)])
    await settle()  # the sender is inside its write, waiting for the socket
    sink.open = True
    await asyncio.sleep(0.01)  # a whole window later: the connection counts as quiet
    box.put("s", [it(2)])
    assert sink.sent == []  # change 2 did not overtake change 1
    sink.block.set()
    await until_sent(sink, 2)
    assert [changes for _, changes in sink.sent] == [[1], [2]]
    box.close(GONE)
    await task


async def test_a_refused_direct_write_ends_the_connection():
    sink, box, task = await started()
    sink.refuse = True
    box.put("s", [it(1)])
    assert box.reason == GONE
    await asyncio.wait_for(task, 5)


async def test_large_changes_and_changes_behind_others_go_through_the_sender():
    """More than DIRECT_MAX_BYTES at once waits for the socket after each
    frame (through the sender): it is never piled into the socket's buffer.
    A change that finds others waiting joins them."""
    sink, box, task = await started()
    half = b'"' + b"x" * (DIRECT_MAX_BYTES // 2) + b'"'
    box.put("s", [Item(1, "r1", False, half), Item(2, "r2", False, half)])
    box.put("s", [it(3)])
    assert sink.sent == []
    await until_sent(sink, 1)
    assert sink.sent == [("sender", [1, 2, 3])]
    box.close(GONE)
    await task


def test_a_changes_frame_is_what_a_websocket_client_reads_and_made_once():
    from websockets.frames import Frame, Opcode
    from websockets.streams import StreamReader

    from rowcast.broadcaster.frames import ws_rows, ws_rows_wire

    for size in (10, 200, 70_000):  # the three length encodings of the header
        item = Item(1, "r1", False, b'{"body":"' + b"x" * size + b'"}')
        wire = ws_rows_wire("s", [item])
        again = ws_rows_wire("s", [item])
        if size < 16_000:
            assert again is wire  # every subscriber sends these bytes
        else:
            assert again == wire  # large frames are not kept
        reader = StreamReader()
        reader.feed_data(wire)
        parse = Frame.parse(reader.read_exact, mask=False)
        try:
            next(parse)
        except StopIteration as done:
            frame = done.value
        assert (frame.opcode, frame.fin, frame.data) == (Opcode.TEXT, True, ws_rows("s", [item]))
        assert not reader.buffer  # nothing else on the wire


async def test_single_changes_to_a_busy_connection_wait_for_the_window_together():
    """Adaptive coalescing holds on the direct path too: a change that comes
    within a window of the last frame waits, and the changes of that window go
    as one frame."""
    sink = DirectSink()
    box = Outbox(sink, Metrics(), Ticker(0.05))
    task = asyncio.create_task(box.run())
    await settle()
    box.put("s", [it(1)])  # quiet: at once
    box.put("s", [it(2)])
    box.put("s", [it(3)])
    assert sink.sent == [("direct", [1])]
    await until_sent(sink, 2)
    assert sink.sent == [("direct", [1]), ("sender", [2, 3])]
    box.close(GONE)
    await task


def _extend(number: int, revision: int, text: str) -> Item:
    """A change of row r as the hub decodes it from P:rows: the whole body and,
    from revision 1 on, the delta on the revision before."""
    c = Change(
        "s",
        "r",
        0,
        revision,
        number,
        "assistant",
        orjson.dumps({"text": "a" * revision + text}),
        extend=None if revision == 0 else orjson.dumps({"text": text}),
        base_revision=None if revision == 0 else revision - 1,
    )
    return from_message_change(orjson.loads(c.to_json()))


async def test_a_quiet_connection_holding_the_base_is_sent_the_delta_directly():
    frames: list[list[bytes]] = []

    class Recording(DirectSink):
        def send_now(self, batches: list[tuple[str, list[Item]]]) -> None:
            super().send_now(batches)
            frames.append([i.json for _, items in batches for i in items])

    sink = Recording()
    box = Outbox(sink, Metrics(), Ticker(0.001))
    box.pending.track("s", deltas=True)
    task = asyncio.create_task(box.run())
    await settle()
    box.put("s", [_extend(1, 0, "")])
    await asyncio.sleep(0.01)
    box.put("s", [_extend(2, 1, "b")])
    assert [how for how, _ in sink.sent] == ["direct", "direct"]
    first, second = (orjson.loads(f[0]) for f in frames)
    assert "body" in first and "extend" not in first
    assert second["extend"] == {"text": "b"} and second["base_revision"] == 0
    assert "body" not in second
    box.close(GONE)
    await task


async def test_an_ack_unsubscribed_before_it_went_leaves_no_urgency_behind():
    """A session holding an ack is dropped before the sender takes it: the
    next changes of the connection are coalesced as usual again."""
    sink = DirectSink()
    box = Outbox(sink, Metrics(), Ticker(0.05))
    task = asyncio.create_task(box.run())
    await settle()
    sink.open = False
    box.put("a", [Item(1, "r1", True, b"{}")])
    box.pending.discard("a")  # unsubscribed at once
    sink.open = True
    await settle()
    await asyncio.sleep(0.06)  # a whole window: quiet
    box.put("b", [it(1)])
    box.put("b", [it(2)])  # within the window: waits for it
    assert sink.sent == [("direct", [1])]
    await until_sent(sink, 2)
    assert sink.sent == [("direct", [1]), ("sender", [2])]
    box.close(GONE)
    await task
