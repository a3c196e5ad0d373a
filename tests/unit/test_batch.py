"""Merging entries of one row and turning PostgreSQL's answer into changes and
receipts: pure logic, no servers."""

from __future__ import annotations

import orjson

from rowcast.contract.change import Change, batch_message
from rowcast.contract.entry import Entry
from rowcast.writer.batch import Dead, Result, Valid, merge, outcome, plans


def v(
    i: int,
    op: str,
    session: str,
    row: str,
    body: str = "{}",
    reply: str | None = None,
    origin: str | None = None,
) -> Valid:
    e = Entry(op, session, row, "k", body.encode(), reply, None, origin)
    return Valid(f"1-{i}".encode(), e, {})


def test_merge_keeps_first_seen_order_and_last_upsert_body() -> None:
    p = merge(
        [
            v(0, "append", "s", "a", '"a0"'),
            v(1, "upsert", "s", "b", '"b0"'),
            v(2, "upsert", "s", "a", '"a1"'),
            v(3, "append", "s", "a", '"a2"'),
            v(4, "upsert", "s", "a", '"a3"'),
        ]
    )
    assert [(m.row, m.body, m.bumps, m.revision_if_new, m.entry) for m in p.merged] == [
        ("a", b'"a3"', 2, 2, (1, 4)),
        ("b", b'"b0"', 1, 0, (1, 1)),
    ]


def test_first_entry_body_when_no_upsert() -> None:
    p = merge([v(0, "append", "s", "a", '"first"'), v(1, "append", "s", "a", '"dup"')])
    assert p.merged[0].body == b'"first"' and p.merged[0].bumps == 0


def test_replayed_entries_never_merge_and_cut_at_repeats() -> None:
    batch = [
        v(0, "append", "s", "a"),
        v(1, "upsert", "s", "a", origin="0-1"),
        v(2, "upsert", "s", "b", origin="0-2"),
        v(3, "upsert", "s", "a", origin="0-3"),
        v(4, "append", "s", "c"),
    ]
    ps = plans(batch)
    assert [[(m.row, m.replayed, m.entry) for m in p.merged] for p in ps] == [
        [("a", False, (1, 0))],
        [("a", True, (0, 1)), ("b", True, (0, 2))],
        [("a", True, (0, 3))],
        [("c", False, (1, 4))],
    ]


def test_outcome_new_row_with_later_upserts() -> None:
    p = merge(
        [
            v(0, "append", "s", "a", '"x"', reply="t0"),
            v(1, "upsert", "s", "a", '"y"', reply="t1"),
            v(2, "append", "s", "a", '"z"', reply="t2"),
        ]
    )
    changes, receipts = outcome(
        p, [Result(sequence=4, old_revision=None, revision=1, change=9, old_change=None)]
    )
    assert changes == [Change("s", "a", 4, 1, 9, "k", b'"y"', True)]
    got = [
        (r.token, r.payload["revision"], r.payload["duplicate"], r.payload["change"])
        for r in receipts
    ]
    assert got == [("t0", 0, False, 9), ("t1", 1, False, 9), ("t2", 1, True, 9)]


def test_outcome_duplicate_append_of_existing_row_is_no_change() -> None:
    p = merge([v(0, "append", "s", "a", reply="t")])
    changes, receipts = outcome(p, [Result(2, 3, 3, None, 7)])
    assert changes == []
    assert receipts[0].payload == {
        "ok": True,
        "session": "s",
        "row": "a",
        "sequence": 2,
        "revision": 3,
        "change": 7,
        "duplicate": True,
    }


def test_outcome_existing_row_upserts_count_every_upsert() -> None:
    p = merge(
        [
            v(0, "append", "s", "a", reply="dup"),
            v(1, "upsert", "s", "a", '"n"', reply="up"),
        ]
    )
    changes, receipts = outcome(p, [Result(0, 5, 6, 11, 10)])
    assert changes[0].revision == 6 and changes[0].change == 11
    assert [
        (r.payload["revision"], r.payload["change"], r.payload["duplicate"]) for r in receipts
    ] == [(5, 10, True), (6, 11, False)]


def test_unacked_changes_do_not_flush() -> None:
    changes, receipts = outcome(merge([v(0, "append", "s", "a")]), [Result(0, None, 0, 1, None)])
    assert not changes[0].ack and receipts == []


def test_dead_letter_keeps_original_fields_then_reason() -> None:
    d = Dead(b"5-0", {b"op": b"x", b"body": b"\xff", b"error": b"theirs"}, "why", None)
    assert d.dead_fields() == [b"op", b"x", b"body", b"\xff", "error", "why", "source", b"5-0"]


def test_batch_message_embeds_body_without_reencoding() -> None:
    msg = batch_message(2, [Change("s", "r", 0, 0, 1, "k", b'{"z":1,  "a":[true]}', True)])
    assert b'{"z":1,  "a":[true]}' in msg
    assert orjson.loads(msg) == {
        "shard": 2,
        "changes": [
            {
                "session": "s",
                "row": "r",
                "sequence": 0,
                "revision": 0,
                "change": 1,
                "kind": "k",
                "body": {"z": 1, "a": [True]},
                "ack": True,
            }
        ],
    }


def test_reads_are_cut_by_size_but_never_below_one_entry() -> None:
    from rowcast.writer.writer import split_by_size

    items = [(b"1-%d" % i, {b"body": b"x" * n}) for i, n in enumerate([4, 4, 4, 20, 1])]
    chunks = split_by_size(items, 10)
    assert [[i for i, _ in c] for c in chunks] == [[b"1-0", b"1-1"], [b"1-2"], [b"1-3"], [b"1-4"]]
