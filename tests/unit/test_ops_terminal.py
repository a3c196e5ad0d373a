"""Terminal injection (issue 10, point 5): what dlq and status print shows
control and invisible characters as visible escapes, and truncation never cuts
an escape in half."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from rowcast.ops.admin.dlq import format_letters, letter
from rowcast.ops.admin.shell import safe, shorten
from rowcast.ops.admin.status import format_status

# What a terminal acts on: C0 (but the table's own newlines), DEL, C1, and bidi/invisible marks.
ACTIVE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def test_dead_letters_cannot_retitle_or_recolour_the_terminal():
    evil = "\x1b]0;pwned\x07\x1b[31m\u202e"
    fields = {
        b"op": evil.encode(),
        b"session": ("s" * 29 + "\x1b[2J").encode(),
        b"row": evil.encode(),
        b"body": b"{}",
        b"error": evil.encode(),
        b"source": b"1-0",
    }
    text = format_letters([letter(0, ("9-0" + evil).encode(), fields)], {0: 1})
    assert not ACTIVE.search(text)
    assert "\\x1b]0;pwned\\x07" in text and "\\u202e" in text
    # The session was cut to its column: cut before the escape, not inside it.
    assert "s" * 29 + "…" in text and "\\x1" not in text.split("s" * 29)[1][:2]


def test_status_text_is_safe_too():
    report = {
        "shards": [],
        "broadcasters": [{"instance": "b\x1b[8m", "host": "h\x07", "port": 1}],
        "verify": {"ok": True, "finished_at": "\x1b[2J"},
        "errors": ["PostgreSQL: \x1b]0;x\x07"],
    }
    assert not ACTIVE.search(format_status(report))


@given(st.text(), st.integers(min_value=2, max_value=60))
def test_shorten_keeps_whole_escapes_and_a_bounded_width(value, n):
    out = shorten(value, n)
    assert not ACTIVE.search(out)
    if out.endswith("…") and out != safe(value):
        body = out[:-1]
        assert safe(value).startswith(body)
        assert len(body) <= n
    else:
        assert out == safe(value)
