"""The entry wire format: what producers refuse before XADD and the writer
dead-letters after XREADGROUP."""

from __future__ import annotations

import pytest

from rowcast.contract.entry import ORIGIN, Op, Repeated, check_body, fields_of, parse, reply_token
from rowcast.contract.errors import InvalidEntry
from rowcast.contract.keys import Keys, shard_of


def fields(**kw: str | bytes) -> dict[bytes, bytes]:
    base: dict[str, str | bytes] = {
        "op": "append",
        "session": "s",
        "row": "r",
        "kind": "user",
        "body": "{}",
    }
    base.update(kw)
    return {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in base.items()}


def test_valid_entry_keeps_body_bytes() -> None:
    e = parse(fields(body='{"b": [1, 2]}', reply="tok_1-A", ts="123", extra="ignored"))
    assert (e.op, e.session, e.row, e.kind) == ("append", "s", "r", "user")
    assert e.body == b'{"b": [1, 2]}'
    assert e.reply == "tok_1-A"
    assert e.ts == 123


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"op": "delete"}, "unknown op"),
        ({"session": ""}, "session is empty"),
        ({"session": "x" * 201}, "over the limit"),
        ({"row": "a\nb"}, "control character"),
        ({"row": "a\x85b"}, "control character"),
        ({"session": b"\xff\xfe"}, "not valid UTF-8"),
        ({"kind": "k" * 65}, "over the limit"),
        ({"body": "{"}, "not valid JSON"),
        ({"body": "NaN"}, "not valid JSON"),
        ({"body": '"\\ud800"'}, "lone surrogate"),
        ({"body": '{"a": "\\u0000"}'}, "\\u0000"),
        ({"body": b'"\xed\xa0\x80"'}, "not valid JSON"),
        ({"reply": "has space"}, "reply token"),
        ({"reply": "x" * 129}, "reply token"),
        ({"kind": "a\x00b"}, "NUL"),
    ],
)
def test_invalid_entries_say_why(override: dict[str, str], reason: str) -> None:
    with pytest.raises(InvalidEntry, match=reason.replace("\\", "\\\\")):
        parse(fields(**override))


def test_a_malformed_replay_origin_is_refused() -> None:
    f = fields()
    f[ORIGIN.encode()] = b"nope"
    with pytest.raises(InvalidEntry, match=r"rowcast\.origin is not a stream entry id"):
        parse(f)
    f[ORIGIN.encode()] = b"12-3"
    assert parse(f).origin == "12-3"


def test_fields_the_contract_does_not_name_are_ignored() -> None:
    # A producer's own "origin" is not rowcast replay's.
    for value in ("claude-code", "1-0"):
        assert parse(fields(origin=value)).origin is None


def test_a_kind_is_any_text_of_1_to_64_bytes() -> None:
    assert parse(fields(kind="tool\tuse\x1b[31m")).kind == "tool\tuse\x1b[31m"


def test_a_repeated_field_name() -> None:
    flat = [b"op", b"append", b"session", b"s", b"row", b"r", b"kind", b"a", b"body", b"{}"]
    assert type(fields_of(flat)) is dict
    # One with a meaning: which value was meant is unknowable.
    repeated = fields_of([*flat, b"kind", b"b"])
    assert isinstance(repeated, Repeated) and repeated.flat[-2:] == [b"kind", b"b"]
    with pytest.raises(InvalidEntry, match="field kind appears more than once"):
        parse(repeated)
    # One without: ignored like any unknown field.
    assert parse(fields_of([*flat, b"x", b"1", b"x", b"2"])).kind == "a"


def test_missing_fields_are_named() -> None:
    f = fields()
    del f[b"kind"], f[b"body"]
    with pytest.raises(InvalidEntry, match="missing fields kind, body"):
        parse(f)


def test_limits_are_inclusive() -> None:
    e = parse(fields(session="é" * 100, row="r" * 200, kind="k" * 64))
    assert len(e.session.encode()) == 200


def test_body_size_limit() -> None:
    check_body(b'"' + b"x" * 98 + b'"', max_body=100)
    with pytest.raises(InvalidEntry, match="over the limit of 100"):
        check_body(b'"' + b"x" * 99 + b'"', max_body=100)


def test_escaped_backslash_u0000_is_fine() -> None:
    check_body(b'{"a": "\\\\u0000"}')  # the text \u0000, not a NUL


def test_numbers_postgres_takes_are_not_refused_early() -> None:
    check_body(b"1e400")  # orjson refuses it; jsonb stores it
    check_body(b'{"n": ' + b"9" * 5000 + b"}")  # beyond Python's int() limit, too
    check_body(b"-" + b"1" * 5000 + b".5e-3")
    # Deep and beyond a double: the standard parser's turn, at jsonb's depth
    # (before, Python's own recursion limit ended it with a RecursionError).
    check_body(b"[" * 1000 + b"1e999" + b"]" * 1000)
    with pytest.raises(InvalidEntry, match="nested deeper than 1024"):
        check_body(b"[" * 1100 + b"1e999" + b"]" * 1100)
    check_body(b"[" * 1000 + b"]" * 1000)


def test_nesting_deeper_than_1024_is_refused() -> None:
    with pytest.raises(InvalidEntry, match="depth"):
        check_body(b"[" * 1500 + b"]" * 1500)


def test_malformed_ts_is_ignored_not_fatal() -> None:
    assert parse(fields(ts="soon")).ts is None


def test_reply_token_of_a_bad_entry() -> None:
    assert reply_token(fields(op="nope", reply="ok-token")) == "ok-token"
    assert reply_token(fields(reply="bad token")) is None


def test_shard_is_crc32_mod_shards() -> None:
    # zlib.crc32(b"session-1") == 0x1F2E6A7E... checked against an independent value:
    import binascii

    for s in ["a", "session-1", "ünïcode", "x" * 200]:
        assert shard_of(s, 7) == (binascii.crc32(s.encode()) & 0xFFFFFFFF) % 7
    assert shard_of("anything", 1) == 0


def test_keys_share_a_hash_tag_per_shard() -> None:
    k = Keys("p")
    assert k.entries(3) == "p:{3}:entries"
    assert k.rows(3) == "p:{3}:rows"
    assert k.dead(3) == "p:{3}:dead"
    assert k.reply(3, "T") == "p:{3}:reply:T"
    assert k.channel == "p:rows"


@pytest.mark.parametrize(
    ("body", "kind"),
    [("[1]", "an array"), ('"text"', "a string"), ("3", "a number"), ("null", "null")],
)
def test_an_extend_body_must_be_an_object(body: str, kind: str) -> None:
    with pytest.raises(InvalidEntry, match=f"extend's body must be a JSON object, not {kind}"):
        parse(fields(op="extend", body=body))
    assert parse(fields(op="extend", body='{"text": " more"}')).op == Op.EXTEND
