"""The outbox's sender against a fake transport (no servers)."""

from __future__ import annotations

import asyncio
import time

from rowcast.broadcaster.item import Item
from rowcast.broadcaster.metrics import Metrics
from rowcast.broadcaster.outbox import RESYNC, SHUTDOWN, Outbox, Ticker


def it(change: int, ack: bool = False) -> Item:
    return Item(change, f"r{change}", ack, b"{}")


class FakeSink:
    def __init__(self) -> None:
        self.sent: list[list[int]] = []
        self.finished: list[str] = []
        self.idles = 0
        self.got = asyncio.Event()
        self.block: asyncio.Event | None = None

    async def send(self, batches: list[tuple[str, list[Item]]]) -> None:
        if self.block is not None:
            await self.block.wait()
        self.sent.append([i.change for _, items in batches for i in items])
        self.got.set()

    async def idle(self) -> None:
        self.idles += 1
        self.got.set()

    async def finish(self, reason: str) -> None:
        self.finished.append(reason)

    def ready(self) -> bool:
        return False  # every frame through the sender (the direct path: DirectSink)

    def send_now(self, batches: list[tuple[str, list[Item]]]) -> None:
        raise AssertionError("not ready")


async def test_an_ack_flushes_at_once_with_what_waited_before_it():
    sink = FakeSink()
    box = Outbox(sink, Metrics(), Ticker(3600.0))  # a window the test never waits out
    task = asyncio.create_task(box.run())
    box.put("s", [it(0)])  # a quiet connection sends at once; now it is busy
    await asyncio.wait_for(sink.got.wait(), 10)
    sink.got.clear()
    box.put("s", [it(1)])
    await asyncio.sleep(0.05)
    assert sink.sent == [[0]]  # 1 lingers in the window
    box.put("s", [it(2, ack=True)])
    await asyncio.wait_for(sink.got.wait(), 10)
    assert sink.sent == [[0], [1, 2]]
    box.close(SHUTDOWN)
    await asyncio.wait_for(task, 10)
    assert sink.finished == [SHUTDOWN]


async def test_a_quiet_connection_sends_at_once_and_a_busy_one_gathers_a_window():
    now = [1000.0]
    sink = FakeSink()
    box = Outbox(sink, Metrics(), Ticker(3600.0, clock=lambda: now[0]))  # never ticks here
    task = asyncio.create_task(box.run())
    box.put("s", [it(1)])
    await asyncio.wait_for(sink.got.wait(), 10)  # only the quiet path can send it
    assert sink.sent == [[1]]
    sink.got.clear()
    now[0] += 1.0  # within the window after that frame: busy
    for n in (2, 3):
        box.put("s", [it(n)])
    await asyncio.sleep(0.05)
    assert sink.sent == [[1]]  # gathered, waiting for the tick
    box.flush()  # the tick
    await asyncio.wait_for(sink.got.wait(), 10)
    assert sink.sent == [[1], [2, 3]]
    sink.got.clear()
    now[0] += 3600.0  # a whole window without a flush: quiet again
    box.put("s", [it(4)])
    await asyncio.wait_for(sink.got.wait(), 10)
    assert sink.sent == [[1], [2, 3], [4]]
    box.close(SHUTDOWN)
    await task


async def test_a_full_batch_goes_without_waiting_for_the_window():
    sink = FakeSink()
    box = Outbox(sink, Metrics(), Ticker(3600.0), max_batch=3)
    task = asyncio.create_task(box.run())
    box.put("s", [it(1), it(2), it(3)])
    await asyncio.wait_for(sink.got.wait(), 10)
    assert sink.sent == [[1, 2, 3]]
    box.close(SHUTDOWN)
    await task


async def test_a_client_that_stops_draining_is_closed_with_resync_and_the_queue_stays_bounded():
    sink = FakeSink()
    sink.block = asyncio.Event()  # the socket stopped draining
    metrics = Metrics()
    box = Outbox(sink, metrics, Ticker(0.0), limit=100)
    closed: list[bool] = []
    box.on_close = lambda: closed.append(True)
    task = asyncio.create_task(box.run())
    box.put("s", [it(0)])
    await asyncio.sleep(0.01)  # the sender is now stuck in send()
    for n in range(1, 1000):
        box.put("s", [it(n)])
    assert box.reason == RESYNC and closed == [True]
    assert box.pending.count == 0
    assert metrics.high_water <= 101
    sink.block.set()
    await asyncio.wait_for(task, 10)
    assert sink.finished == [RESYNC]
    assert sink.sent == [[0]]  # nothing after the resync decision


async def test_wait_room_holds_catch_up_while_the_queue_is_over_half_full():
    sink = FakeSink()
    sink.block = asyncio.Event()
    box = Outbox(sink, Metrics(), Ticker(0.0), limit=10)
    task = asyncio.create_task(box.run())
    box.put("s", [it(0)])
    await asyncio.sleep(0.01)
    box.put("s", [it(n) for n in range(1, 8)])
    waiter = asyncio.create_task(box.wait_room())
    await asyncio.sleep(0.05)
    assert not waiter.done()
    sink.block.set()
    await asyncio.wait_for(waiter, 10)
    box.close(SHUTDOWN)
    await task


async def test_an_idle_connection_gets_heartbeats_and_expiry_closes_it():
    sink = FakeSink()
    box = Outbox(sink, Metrics(), Ticker(0.005), idle=0.01, expires_at=time.time() + 0.2)
    task = asyncio.create_task(box.run())
    await asyncio.wait_for(task, 10)
    assert sink.idles >= 1
    assert sink.finished == ["expired"]


async def test_changes_go_when_the_shared_window_ends_and_connections_flush_together():
    ticker = Ticker(0.01)
    sinks = [FakeSink(), FakeSink()]
    boxes = [Outbox(s, Metrics(), ticker) for s in sinks]
    tasks = [asyncio.create_task(b.run()) for b in boxes]
    for b in boxes:
        b.put("s", [it(1)])
    await asyncio.wait_for(asyncio.gather(*(s.got.wait() for s in sinks)), 10)
    assert [s.sent for s in sinks] == [[[1]], [[1]]]
    for b in boxes:
        b.close(SHUTDOWN)
    await asyncio.gather(*tasks)


async def test_a_write_the_client_never_takes_is_ended_by_the_watchdog_with_resync():
    sink = FakeSink()
    sink.block = asyncio.Event()  # the client stopped reading: the write never completes
    metrics = Metrics()
    box = Outbox(sink, metrics, Ticker(0.0), stall=30.0)
    task = asyncio.create_task(box.run())
    box.put("s", [it(1)])
    await asyncio.sleep(0.05)
    now = time.monotonic()
    assert not box.check_stall(now)  # not yet 30 s
    assert box.check_stall(now + 31)
    await asyncio.wait_for(task, 10)  # the sender ends, not the test's task
    assert sink.finished == [RESYNC] and box.reason == RESYNC
    assert metrics.stalls._value.get() == 1
    assert not box.check_stall(now + 62)  # once


async def test_the_watchdog_leaves_a_connection_that_is_not_writing_alone():
    sink = FakeSink()
    box = Outbox(sink, Metrics(), Ticker(0.0), stall=1.0)
    task = asyncio.create_task(box.run())
    box.put("s", [it(1)])
    await asyncio.wait_for(sink.got.wait(), 10)
    assert not box.check_stall(time.monotonic() + 3600)  # idle, nothing pending
    box.close(SHUTDOWN)
    await asyncio.wait_for(task, 10)
    assert sink.finished == [SHUTDOWN]


async def window_sent_by_an_ack(ticker: Ticker) -> tuple[FakeSink, Outbox, asyncio.Task[None]]:
    """A connection that sent change 1 at once, opened a window for change 2,
    and sent 2 and 3 at once because 3 carries an ack: its window is empty."""
    sink = FakeSink()
    box = Outbox(sink, Metrics(), ticker)
    task = asyncio.create_task(box.run())
    box.put("s", [it(1)])  # quiet: goes at once
    await asyncio.wait_for(sink.got.wait(), 10)
    sink.got.clear()
    box.put("s", [it(2)])  # busy: a window opens
    box.put("s", [it(3, ack=True)])  # the ack sends both now
    await asyncio.wait_for(sink.got.wait(), 10)
    sink.got.clear()
    return sink, box, task


async def test_a_tick_that_finds_nothing_does_not_swallow_the_next_change():
    # An ack sends everything at once; the window's tick that follows finds
    # nothing. A later change on the quiet connection must still go.
    now = [1000.0]
    sink, box, task = await window_sent_by_an_ack(Ticker(3600.0, clock=lambda: now[0]))
    box.flush()  # the tick, with nothing left to send
    await asyncio.sleep(0.05)
    now[0] += 7200.0  # quiet again
    box.put("s", [it(4)])
    await asyncio.wait_for(sink.got.wait(), 10)
    assert sink.sent == [[1], [2, 3], [4]]
    box.close(SHUTDOWN)
    await asyncio.wait_for(task, 10)


async def test_a_window_an_ack_emptied_does_not_hold_back_the_next_change():
    # The ack sends everything, so the window's end finds nothing: it must
    # not count as a send, or the connection would not look quiet a window
    # after the ack and its next change would wait a window more.
    now = [1000.0]
    sink, box, task = await window_sent_by_an_ack(Ticker(10.0, clock=lambda: now[0]))
    now[0] += 6.0
    box.tick()  # the window ends with nothing in it
    await asyncio.sleep(0.05)
    now[0] += 6.0  # a whole window after the ack
    box.put("s", [it(4)])
    await asyncio.wait_for(sink.got.wait(), 1)  # not another (10 s) window
    assert sink.sent == [[1], [2, 3], [4]]
    box.close(SHUTDOWN)
    await asyncio.wait_for(task, 10)
