"""Coalescing and frames (pure)."""

from __future__ import annotations

import orjson

from rowcast.broadcaster import frames
from rowcast.broadcaster.coalesce import Pending
from rowcast.broadcaster.item import Item, from_change, from_message_change
from rowcast.contract.change import Change


def it(change: int, row: str, ack: bool = False) -> Item:
    return from_change(Change("s", row, 0, change, change, "assistant", b'{"n":%d}' % change, ack))


def test_a_row_revised_within_the_window_collapses_to_its_latest_in_change_order():
    p = Pending(collapse=True)  # ROWCAST_COLLAPSE=1
    p.add("s", [it(1, "a"), it(2, "b"), it(3, "a")])
    p.add("s", [it(4, "a")])
    assert p.count == 2
    [(session, items)] = p.take(100)
    assert session == "s"
    assert [(i.row, i.change) for i in items] == [("b", 2), ("a", 4)]
    assert p.count == 0 and not p.urgent


def test_without_collapse_every_change_is_kept():
    p = Pending(collapse=False)
    p.add("s", [it(1, "a"), it(2, "a")])
    assert [i.change for _, items in p.take(100) for i in items] == [1, 2]


def test_ack_makes_the_batch_urgent():
    p = Pending()
    p.add("s", [it(1, "a")])
    assert not p.urgent
    p.add("s", [it(2, "b", ack=True)])
    assert p.urgent
    p.take(10)
    assert not p.urgent


def test_take_splits_frames_at_the_maximum_size_and_keeps_sessions_apart():
    p = Pending()
    p.add("s", [it(n, f"r{n}") for n in range(1, 6)])
    p.add("t", [it(1, "x")])
    chunks = p.take(2)
    assert [(s, [i.change for i in items]) for s, items in chunks] == [
        ("s", [1, 2]),
        ("s", [3, 4]),
        ("s", [5]),
        ("t", [1]),
    ]


def test_discard_forgets_one_session():
    p = Pending()
    p.add("s", [it(1, "a"), it(2, "b")])
    p.add("t", [it(1, "x")])
    p.discard("s")
    p.discard("never")
    assert p.count == 1
    assert [(s, len(items)) for s, items in p.take(10)] == [("t", 1)]


def test_ws_rows_frame_is_the_contract_message():
    items = [it(1, "a"), it(2, "b", ack=True)]
    msg = orjson.loads(frames.ws_rows("s", items))
    assert msg["type"] == "rows" and msg["session"] == "s"
    assert msg["changes"][1] == {
        "session": "s",
        "row": "b",
        "sequence": 0,
        "revision": 2,
        "change": 2,
        "kind": "assistant",
        "body": {"n": 2},
        "ack": True,
    }
    assert orjson.loads(frames.ws_resync("s")) == {"type": "resync", "session": "s"}
    assert orjson.loads(frames.ws_error("bad", session="s")) == {
        "type": "error",
        "error": "bad",
        "session": "s",
    }


def test_sse_events_carry_the_change_number_as_id():
    text = frames.sse_events([it(7, "a")]).decode()
    lines = text.split("\n")
    assert lines[0] == "id: 7"
    assert lines[1] == "event: change"
    assert orjson.loads(lines[2][len("data: ") :])["change"] == 7
    assert text.endswith("\n\n")
    assert frames.sse_resync("s").startswith(b"event: resync\n")


def test_an_item_from_a_pubsub_message_keeps_the_change_json():
    raw = {
        "session": "s",
        "row": "r",
        "sequence": 1,
        "revision": 0,
        "change": 3,
        "kind": "user",
        "body": {"t": "hi"},
        "ack": False,
    }
    item = from_message_change(raw)
    assert (item.change, item.row, item.ack) == (3, "r", False)
    assert orjson.loads(item.json) == raw
