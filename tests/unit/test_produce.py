"""``rowcast produce``'s line parsing (pure)."""

from __future__ import annotations

import pytest

from rowcast.contract.entry import Op
from rowcast.contract.errors import InvalidEntry
from rowcast.ops.commands.produce import parse_line


def test_a_line_may_extend_a_row() -> None:
    line = b'{"op":"extend","session":"s","row":"a","kind":"assistant","body":{"text":" more"}}'
    e = parse_line(line, 1 << 20)
    assert (e.op, e.body) == (Op.EXTEND, b'{"text":" more"}')


def test_an_extend_line_without_an_object_body_is_refused() -> None:
    line = b'{"op":"extend","session":"s","row":"a","kind":"assistant","body":" more"}'
    with pytest.raises(InvalidEntry, match="must be a JSON object"):
        parse_line(line, 1 << 20)
