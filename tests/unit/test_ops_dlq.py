"""dlq: the pure parts."""

from __future__ import annotations

from rowcast.ops.admin.dlq import format_letters, letter, retry_fields, retry_flat


def test_retry_restores_the_original_fields_byte_for_byte() -> None:
    fields = {b"op": b"append", b"body": b"\xff{}", b"error": b"why", b"source": b"1-0"}
    assert retry_fields(fields) == {b"op": b"append", b"body": b"\xff{}"}
    flat = [b"kind", b"a", b"body", b"\xff{}", b"kind", b"b", b"error", b"why", b"source", b"1-0"]
    assert retry_flat(flat) == flat[:6]


def test_letter_and_listing() -> None:
    fields = {
        b"op": b"append",
        b"session": b"s",
        b"row": b"r",
        b"kind": b"user",
        b"body": b'{"t": "' + b"x" * 500 + b'"}',
        b"error": b"too big",
        b"source": b"5-0",
    }
    d = letter(2, b"9-0", fields)
    assert d["shard"] == 2 and d["id"] == "9-0" and d["source"] == "5-0"
    assert d["error"] == "too big" and d["session"] == "s" and d["row"] == "r"
    assert d["fields"] == {"op": "append", "session": "s", "row": "r", "kind": "user"}
    assert d["body_bytes"] == 509 and len(d["body_preview"]) == 200
    text = format_letters([d], {2: 3})
    assert "too big" in text and "showing 1 of 3" in text
    assert format_letters([], {}) == "no dead letters"
    assert letter(0, "1-0", {b"error": b"missing field op"})["body_bytes"] is None
