"""The recovery decision (pure): what a new leader tells the world again
about entries an earlier leader committed but may not have announced."""

from __future__ import annotations

from rowcast.contract.change import Change
from rowcast.contract.entry import Entry
from rowcast.writer.batch import Valid, recovery, recovery_rows


def v(
    i: int,
    op: str,
    row: str,
    reply: str | None = None,
    origin: str | None = None,
    session: str = "s",
) -> Valid:
    e = Entry(op, session, row, "k", b"{}", reply, None, origin)
    return Valid(f"1-{i}".encode(), e, {b"op": op.encode()})


def state(row: str, change: int, written_by: tuple[int, int], session: str = "s") -> tuple:
    return (session, row), (Change(session, row, change - 1, 0, change, "k", b"{}"), written_by)


def test_rows_these_entries_wrote_are_announced_again_with_receipts() -> None:
    valid = [v(0, "append", "a", reply="ta"), v(1, "upsert", "b")]
    rows = dict([state("a", 3, (1, 0)), state("b", 4, (1, 1))])
    changes, receipts, dead = recovery(valid, {}, rows)
    assert [(c.row, c.change, c.ack) for c in changes] == [("a", 3, True), ("b", 4, False)]
    assert [(r.token, r.payload["change"], r.payload["duplicate"]) for r in receipts] == [
        ("ta", 3, False)
    ]
    assert dead == []


def test_a_row_the_entry_left_alone_is_not_announced_backwards() -> None:
    # A duplicate append: its row was last written by an older entry (0-9),
    # so its change is old news; the receipt says duplicate.
    valid = [v(0, "append", "a", reply="t")]
    changes, receipts, dead = recovery(valid, {}, dict([state("a", 2, (0, 9))]))
    assert changes == []
    assert receipts[0].payload["duplicate"] is True and receipts[0].payload["change"] == 2
    assert dead == []


def test_a_row_later_entries_rewrote_is_announced_once() -> None:
    valid = [v(0, "append", "a"), v(1, "upsert", "a", reply="t")]
    changes, receipts, _ = recovery(valid, {}, dict([state("a", 5, (1, 1))]))
    assert [(c.row, c.change, c.ack) for c in changes] == [("a", 5, True)]
    # Both entries' rows are the current state; the first did not write it last.
    assert [r.payload["duplicate"] for r in receipts] == [False]


def test_replayed_entry_counts_by_its_origin() -> None:
    valid = [v(0, "upsert", "a", origin="0-5")]
    changes, _, _ = recovery(valid, {}, dict([state("a", 7, (0, 5))]))
    assert [c.change for c in changes] == [7]


def test_recorded_refusals_are_dead_letters_again() -> None:
    valid = [v(0, "append", "a", reply="t"), v(1, "append", "b")]
    rejects = {b"1-0": "PostgreSQL refused: numeric overflow"}
    assert recovery_rows(valid, rejects) == [("s", "b")]
    changes, receipts, dead = recovery(valid, rejects, dict([state("b", 1, (1, 1))]))
    assert [c.row for c in changes] == ["b"] and receipts == []
    assert [(d.id, d.error, d.reply) for d in dead] == [
        (b"1-0", "PostgreSQL refused: numeric overflow", "t")
    ]


def test_a_row_missing_although_applied_is_a_dead_letter_not_silence() -> None:
    valid = [v(0, "append", "a", reply="t")]
    changes, receipts, dead = recovery(valid, {}, {})
    assert changes == [] and receipts == []
    assert dead[0].id == b"1-0" and "missing" in dead[0].error and dead[0].reply == "t"


def test_changes_ascend_per_session() -> None:
    valid = [v(0, "upsert", "b"), v(1, "upsert", "a"), v(2, "upsert", "z", session="r")]
    rows = dict([state("b", 9, (1, 0)), state("a", 8, (1, 1)), state("z", 1, (1, 2), "r")])
    changes, _, _ = recovery(valid, {}, rows)
    assert [(c.session, c.change) for c in changes] == [("r", 1), ("s", 8), ("s", 9)]
