"""The demo's streamed answers (pure): the extends' pieces join to the answer."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from rowcast.ops.commands.demo import _chunks


@given(words=st.lists(st.text("abc", min_size=1, max_size=5), min_size=1), seed=st.integers())
def test_the_pieces_join_to_the_answer(words: list[str], seed: int) -> None:
    text = " ".join(words)
    pieces = _chunks(text, random.Random(seed))
    assert "".join(pieces) == text and all(pieces)
