"""Shared pieces of the fuzz suite: example counts and input strategies.

``ROWCAST_FUZZ_EXAMPLES`` scales every test's example count (default 1: the
bounded CI run; e.g. 50 for a long run), so one variable drives both.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

SCALE = float(os.environ.get("ROWCAST_FUZZ_EXAMPLES", "1"))


def fuzz_settings(base: int) -> settings:
    return settings(
        max_examples=max(1, int(base * SCALE)),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=SCALE <= 1,
        database=None,
    )


# JSON of every type, including the values parsers trip on.
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
# Raw JSON number spellings that Python's json reads but orjson refuses.
odd_numbers = st.sampled_from(
    ["1e999", "-1e999", "NaN", "Infinity", "1" + "0" * 400, "0.1e-999", "-0", "1E+2"]
)
ids = st.one_of(
    st.text(max_size=12),
    st.text(min_size=190, max_size=260),
    st.sampled_from([".", "..", "a/b", "../x", "%2e%2e", "\x00", "\x1b[2J", "é", "*", " "]),
)
