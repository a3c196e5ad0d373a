"""replay: stream ids on the command line, and what is re-fed."""

from __future__ import annotations

import pytest

from rowcast.contract.errors import ConfigError
from rowcast.contract.streamid import MAX_PART
from rowcast.contract.streamid import from_option as parse_stream_id
from rowcast.ops.admin.replay import refeed


def test_stream_ids() -> None:
    assert parse_stream_id("1700-3", "--from") == (1700, 3)
    assert parse_stream_id("1700", "--from") == (1700, 0)
    assert parse_stream_id("1700", "--to", end=True) == (1700, MAX_PART)
    assert parse_stream_id("-", "--from") == (0, 0)
    assert parse_stream_id("+", "--to") == (MAX_PART, MAX_PART)
    for bad in ("", "abc", "1-2-3", "1-", "-1", "99999999999999999999999", "1.5"):
        with pytest.raises(ConfigError, match="--from"):
            parse_stream_id(bad, "--from")


WINDOW = ((100, 0), (200, 0))


def test_an_original_loses_its_reply_and_gains_its_origin() -> None:
    flat = [b"op", b"append", b"session", b"s", b"reply", b"tok", b"body", b"{}"]
    assert refeed(b"150-0", flat, WINDOW) == [
        b"op",
        b"append",
        b"session",
        b"s",
        b"body",
        b"{}",
        b"rowcast.origin",
        b"150-0",
    ]
    # A field name given twice stays twice (the writer judges the entry again).
    twice = [b"kind", b"a", b"kind", b"b"]
    assert refeed(b"150-0", twice, WINDOW) == [*twice, b"rowcast.origin", b"150-0"]


def test_a_replay_keeps_its_origin_or_is_skipped() -> None:
    flat = [b"op", b"upsert", b"rowcast.origin", b"50-0"]
    # its original is older than the window (trimmed, or not replayed): keep the origin
    assert refeed(b"150-0", flat, WINDOW) == flat
    # its original is re-fed by the same run: skip
    assert refeed(b"150-0", [b"op", b"upsert", b"rowcast.origin", b"120-0"], WINDOW) is None
    # a malformed origin is replaced by the entry's own id
    assert refeed("150-1", [b"rowcast.origin", b"junk"], WINDOW) == [b"rowcast.origin", b"150-1"]
