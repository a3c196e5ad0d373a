"""The cursor merge and gap detection of one subscription (pure)."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from rowcast.broadcaster.item import Item
from rowcast.broadcaster.subscription import Subscription


def it(change: int, row: str | None = None, ack: bool = False) -> Item:
    row = row or f"r{change}"
    return Item(change, row, ack, b'{"change":%d}' % change)


def numbers(items: list[Item]) -> list[int]:
    return [i.change for i in items]


def test_new_subscription_buffers_live_until_catch_up_then_merges_without_duplicates():
    s = Subscription("s", after=2)
    assert s.start().fetch
    assert s.live(it(5)) == ([], False)
    assert s.live(it(6)) == ([], False)
    # PostgreSQL's snapshot saw up to 5; 6 comes from the buffer, 5 only once.
    step = s.fetched([it(3), it(4), it(5)], complete=True)
    assert numbers(step.deliver) == [3, 4, 5, 6]
    assert not step.fetch
    assert s.last == 6 and not s.fetching


def test_live_changes_at_or_below_the_cursor_are_dropped():
    s = Subscription("s", after=0)
    s.fetched([it(1), it(2)], complete=True)
    assert s.live(it(2)).deliver == []
    assert s.live(it(1)).deliver == []
    assert numbers(s.live(it(3)).deliver) == [3]


def test_a_jump_on_the_live_path_asks_for_the_gap_then_delivers_in_order():
    s = Subscription("s", after=0)
    s.fetched([], complete=True)
    assert numbers(s.live(it(1)).deliver) == [1]
    step = s.live(it(4))
    assert step == ([], True) and s.fetching
    s.live(it(5))
    # The gap read returns current rows: 2 and 4; 3 was superseded by 6, a
    # change PostgreSQL already holds though pub/sub has not brought it yet.
    step = s.fetched([it(2), it(4), it(6, row="r3")], complete=True)
    assert numbers(step.deliver) == [2, 4, 6]
    assert not step.fetch
    assert s.last == 6
    # 5 was in the buffer but the cursor passed it: superseded or duplicate.
    assert s.live(it(6, row="r3")).deliver == []
    assert numbers(s.live(it(7)).deliver) == [7]


def test_a_hole_between_the_snapshot_and_the_buffer_reads_again():
    s = Subscription("s", after=0)
    s.live(it(9))  # buffered during catch-up; 6..8 were lost on pub/sub
    step = s.fetched([it(4), it(5)], complete=True)
    assert numbers(step.deliver) == [4, 5]
    assert step.fetch and s.fetching
    step = s.fetched([it(6), it(7), it(8), it(9)], complete=True)
    assert numbers(step.deliver) == [6, 7, 8, 9]
    assert not step.fetch


def test_catch_up_is_paged_until_a_short_page():
    s = Subscription("s", after=0)
    step = s.fetched([it(1), it(2)], complete=False)
    assert numbers(step.deliver) == [1, 2] and step.fetch
    step = s.fetched([it(3)], complete=True)
    assert numbers(step.deliver) == [3] and not step.fetch


def test_buffer_overflow_is_lossless_it_only_costs_another_read():
    s = Subscription("s", after=0, buffer_max=3)
    for n in range(1, 8):
        s.live(it(n))
    assert s.buffered <= 3
    step = s.fetched([], complete=True)
    # The snapshot was older than the live changes; the buffer was dropped.
    assert step == ([], True)
    step = s.fetched([it(n) for n in range(1, 8)], complete=True)
    assert numbers(step.deliver) == list(range(1, 8))
    assert not step.fetch


def test_poke_reads_when_live_and_marks_a_running_read_stale():
    s = Subscription("s", after=0)
    assert s.poke() is False  # already reading: the read in flight is stale
    assert s.fetched([it(1)], complete=True) == ([it(1)], True)
    assert s.fetched([it(2)], complete=True).fetch is False
    assert s.poke() is True and s.fetching
    assert s.poke() is False


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=60),
    st.lists(st.booleans(), min_size=60, max_size=60),
    st.integers(min_value=0, max_value=10),
)
def test_any_loss_pattern_delivers_a_strictly_increasing_complete_history(rows, lost, cut):
    """A session's history (change n touches row rows[n-1]); pub/sub loses some
    messages; the subscription starts at a cursor; reads return PostgreSQL's
    state at the moment of the read. Whatever happens, delivered change
    numbers strictly increase and every change after the cursor is delivered
    or superseded by a later delivered change of its row."""
    history = [(n, f"r{row}") for n, row in enumerate(rows, start=1)]
    after = min(cut, len(history))
    s = Subscription("s", after=after, buffer_max=4)
    committed = 0
    delivered: list[Item] = []
    want_fetch = s.start().fetch

    def snapshot() -> list[Item]:
        latest: dict[str, int] = {}
        for n, row in history[:committed]:
            latest[row] = n
        return sorted(
            (it(n, row) for row, n in latest.items() if n > s.last), key=lambda i: i.change
        )

    for n, row in history:
        committed = n
        if want_fetch and n % 3 == 0:
            step = s.fetched(snapshot(), complete=True)
            delivered += step.deliver
            want_fetch = step.fetch
        if not lost[n - 1]:
            step = s.live(it(n, row))
            delivered += step.deliver
            want_fetch = want_fetch or step.fetch
    # Quiet afterwards: reads continue until the subscription is live.
    for _ in range(10):
        if not want_fetch:
            break
        step = s.fetched(snapshot(), complete=True)
        delivered += step.deliver
        want_fetch = step.fetch
    # A lost message with nothing after it: the hub's check after a reconnect
    # pokes a subscription that PostgreSQL is ahead of.
    if s.last < len(history) and s.poke():
        delivered += s.fetched(snapshot(), complete=True).deliver
    assert not s.fetching
    got = [i.change for i in delivered]
    assert all(a < b for a, b in itertools.pairwise(got))
    last_of_row: dict[str, int] = {}
    for i in delivered:
        last_of_row[i.row] = i.change
    for n, row in history:
        if n > after:
            assert n in got or last_of_row.get(row, -1) > n
