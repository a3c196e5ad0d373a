"""Merging entries of one row and turning PostgreSQL's answer into changes and
receipts: pure logic, no servers."""

from __future__ import annotations

import orjson

from rowcast.contract.change import Change, batch_message, from_json
from rowcast.contract.entry import Entry, fields_of
from rowcast.writer.batch import DEAD_FIELDS, Dead, Result, Valid, merge, outcome, plans


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


def test_dead_letter_repeats_a_repeated_field() -> None:
    flat = [b"op", b"append", b"kind", b"a", b"x", b"1", b"kind", b"b"]
    d = Dead(b"5-0", fields_of(flat), "why", None)
    assert d.dead_fields() == [*flat, "error", "why", "source", b"5-0"]


def test_a_dead_letter_keeps_the_named_fields_of_an_entry_with_thousands() -> None:
    extra = [x for i in range(5000) for x in (b"f%d" % i, b"v")]
    flat = [b"op", b"append", *extra, b"session", b"s", b"reply", b"t"]
    out = Dead(b"5-0", fields_of(flat), "missing field body", "t").dead_fields()
    assert len(out) == 2 * DEAD_FIELDS + 4  # the publish script's XADD stays in Lua's limit
    kept = out[: 2 * DEAD_FIELDS]
    assert kept[:2] == [b"op", b"append"] and kept[-4:] == [b"session", b"s", b"reply", b"t"]
    assert kept[2:-4] == extra[: 2 * (DEAD_FIELDS - 3)]  # in order, the first ones
    assert out[-4:] == [
        "error",
        "missing field body (3003 of its 5003 fields not kept:"
        f" a dead letter keeps at most {DEAD_FIELDS})",
        "source",
        b"5-0",
    ]


def test_a_dead_letter_of_one_name_repeated_thousands_of_times_is_bounded_too() -> None:
    flat = [b"op", b"append", *[b"kind", b"k"] * 5000, b"body", b"{}"]
    out = Dead(b"5-0", fields_of(flat), "field kind appears more than once", None).dead_fields()
    assert len(out) == 2 * DEAD_FIELDS + 4
    kept = out[: 2 * DEAD_FIELDS]
    assert kept[:4] == [b"op", b"append", b"kind", b"k"] and kept[-2:] == [b"body", b"{}"]
    assert "3002 of its 5002 fields not kept" in str(out[-3])


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


def test_extends_fold_in_postgres_as_steps_after_the_first_entry() -> None:
    p = merge(
        [
            v(0, "extend", "s", "a", '{"t":"a"}'),
            v(1, "append", "s", "a", '{"t":"dup"}'),
            v(2, "extend", "s", "a", '{"t":"b"}'),
            v(3, "upsert", "s", "a", '{"t":"u"}'),
            v(4, "extend", "s", "a", '{"t":"c"}'),
        ]
    )
    [m] = p.merged
    # A new row: inserted with the first body, then the steps; an existing
    # one: the first entry is a step too.
    assert m.body == b'{"t":"a"}' and m.first_step == 2
    assert orjson.loads(m.steps or b"") == [[2, {"t": "b"}], [1, {"t": "u"}], [2, {"t": "c"}]]
    assert (m.bumps, m.revision_if_new) == (4, 3)
    assert m.delta() is None  # an upsert among them: no delta


def test_a_delta_joins_the_suffixes_of_string_only_extends() -> None:
    p = merge(
        [
            v(0, "append", "s", "a", '{"t":"x"}'),
            v(1, "extend", "s", "a", '{"t":"he","u":"1"}'),
            v(2, "extend", "s", "a", '{"t":"llo"}'),
        ]
    )
    [m] = p.merged
    assert m.first_step == 0 and m.overwritten == [b'{"t":"x"}']
    gained = m.delta()
    assert gained is not None and orjson.loads(gained[0]) == {"t": "hello", "u": "1"} and gained[1]
    changes, _ = outcome(p, [Result(3, 5, 7, 12, 10, '{"t": "xhello", "u": "1"}')])
    assert changes == [
        Change(
            "s",
            "a",
            3,
            7,
            12,
            "k",
            b'{"t": "xhello", "u": "1"}',
            False,
            b'{"t":"hello","u":"1"}',
            5,
        )
    ]
    # The same entries on a new row: inserted, so no delta.
    changes, _ = outcome(p, [Result(0, None, 2, 1, None, '{"t": "xhello", "u": "1"}')])
    assert changes[0].extend is None and changes[0].base_revision is None


def test_an_extend_with_other_values_carries_its_strings_but_no_delta() -> None:
    p = merge([v(0, "extend", "s", "a", '{"t":"x","n":1}')])
    [m] = p.merged
    assert m.delta() == (b'{"t":"x"}', False)
    changes, _ = outcome(p, [Result(0, 4, 5, 9, 8, '{"t":"..x","n":1}')])
    # The change says what was appended, but without base_revision no
    # client may take it for a delta (the body's "n" changed too).
    assert changes[0].extend == b'{"t":"x"}' and changes[0].base_revision is None
    d = orjson.loads(changes[0].to_json())
    assert d["extend"] == {"t": "x"} and "base_revision" not in d
    assert from_json(d) == changes[0]


def test_a_replaced_key_drops_what_was_appended_to_it_before() -> None:
    [m] = merge(
        [
            v(0, "extend", "s", "a", '{"t":"a","u":"1"}'),
            v(1, "extend", "s", "a", '{"t":5}'),
            v(2, "extend", "s", "a", '{"t":"b"}'),
        ]
    ).merged
    gained = m.delta()
    assert gained is not None and orjson.loads(gained[0]) == {"t": "b", "u": "1"}
    assert gained[1] is False


def test_receipts_count_every_extend() -> None:
    p = merge(
        [
            v(0, "extend", "s", "a", '{"t":"x"}', reply="e0"),
            v(1, "append", "s", "a", reply="dup"),
            v(2, "extend", "s", "a", '{"t":"y"}', reply="e1"),
        ]
    )
    _, receipts = outcome(p, [Result(0, 4, 6, 9, 8, '{"t": "..xy"}')])
    assert [(r.payload["revision"], r.payload["duplicate"]) for r in receipts] == [
        (5, False),
        (5, True),
        (6, False),
    ]


def test_change_with_a_delta_round_trips_through_json_and_stream_fields() -> None:
    c = Change("s", "a", 1, 4, 9, "k", b'{"t":"ab"}', False, b'{"t":"b"}', 3)
    d = orjson.loads(c.to_json())
    assert d["extend"] == {"t": "b"} and d["base_revision"] == 3 and d["body"] == {"t": "ab"}
    assert from_json(d) == c
    plain = Change("s", "a", 1, 4, 9, "k", b"{}")
    assert "extend" not in orjson.loads(plain.to_json())


def test_an_extend_only_postgres_parses_has_no_delta() -> None:
    [m] = merge([v(0, "extend", "s", "a", '{"t":"x","n":1e400}')]).merged
    assert m.delta() is None
