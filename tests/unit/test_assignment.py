"""The fleet's assignment of shards to writers (pure): balanced, every shard
once, deterministic, sticky (a join or a leave moves only what it must)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from rowcast.writer.assignment import assign, quotas

names = st.text(alphabet="abcdefgh:0123456789", min_size=1, max_size=12)
member_sets = st.lists(names, min_size=1, max_size=9, unique=True)
shard_counts = st.integers(min_value=0, max_value=40)


@st.composite
def situations(draw: st.DrawFn) -> tuple[list[str], int, dict[int, str | None]]:
    """Members, a shard count and any holders at all: members holding too
    many, processes that are not members, free shards."""
    members = draw(member_sets)
    shards = draw(shard_counts)
    strangers = draw(st.lists(names, max_size=3))
    holder = st.one_of(st.none(), st.sampled_from(members + strangers))
    holders = draw(st.dictionaries(st.integers(0, max(0, shards - 1)), holder, max_size=shards))
    return members, shards, holders


def owners(plan: dict[str, frozenset[int]]) -> dict[int, str]:
    return {s: m for m, ss in plan.items() for s in ss}


def check_balanced(plan: dict[str, frozenset[int]], members: list[str], shards: int) -> None:
    assert set(plan) == set(members)
    every = [s for ss in plan.values() for s in ss]
    assert sorted(every) == list(range(shards)), "each shard exactly once"
    lo, hi = shards // len(members), -(-shards // len(members))
    assert all(lo <= len(ss) <= hi for ss in plan.values()), {m: len(s) for m, s in plan.items()}


@settings(max_examples=400)
@given(situations())
def test_balanced_whatever_is_held(s: tuple[list[str], int, dict[int, str | None]]) -> None:
    members, shards, holders = s
    check_balanced(assign(members, range(shards), holders), members, shards)


@settings(max_examples=200)
@given(situations(), st.randoms(use_true_random=False))
def test_deterministic(s: tuple[list[str], int, dict[int, str | None]], rnd: random.Random) -> None:
    members, shards, holders = s
    shuffled = list(members)
    rnd.shuffle(shuffled)
    items = list(holders.items())
    rnd.shuffle(items)
    order = list(range(shards))
    rnd.shuffle(order)
    assert assign(members, range(shards), holders) == assign(shuffled, order, dict(items))


@settings(max_examples=300)
@given(situations())
def test_a_settled_fleet_stays_put(s: tuple[list[str], int, dict[int, str | None]]) -> None:
    members, shards, holders = s
    plan = assign(members, range(shards), holders)
    assert assign(members, range(shards), owners(plan)) == plan


@settings(max_examples=300)
@given(situations(), names)
def test_a_member_joining_takes_only_its_share(
    s: tuple[list[str], int, dict[int, str | None]], newcomer: str
) -> None:
    members, shards, holders = s
    if newcomer in members:
        return
    before = assign(members, range(shards), holders)
    after = assign([*members, newcomer], range(shards), owners(before))
    check_balanced(after, [*members, newcomer], shards)
    for m in members:
        assert after[m] <= before[m], "an old member gained a shard or swapped one"
    moved = {x for x, m in owners(after).items() if owners(before)[x] != m}
    # The minimum: exactly the newcomer's share moves, and only to it.
    assert moved == after[newcomer]
    assert len(moved) == shards // (len(members) + 1)


@settings(max_examples=300)
@given(situations(), st.data())
def test_a_member_leaving_hands_over_only_its_own(
    s: tuple[list[str], int, dict[int, str | None]], data: st.DataObject
) -> None:
    members, shards, holders = s
    if len(members) < 2:
        return
    gone = data.draw(st.sampled_from(members))
    rest = [m for m in members if m != gone]
    before = assign(members, range(shards), holders)
    after = assign(rest, range(shards), owners(before))
    check_balanced(after, rest, shards)
    for m in rest:
        assert before[m] <= after[m], "a remaining member lost a shard"
    moved = {x for x, m in owners(after).items() if owners(before)[x] != m}
    assert moved == before[gone]


def test_six_shards_over_three_then_two_then_three() -> None:
    three = assign(["a", "b", "c"], range(6), {})
    assert sorted(len(v) for v in three.values()) == [2, 2, 2]
    two = assign(["a", "b"], range(6), owners({m: three[m] for m in "ab"}))
    assert two["a"] >= three["a"] and two["b"] >= three["b"]
    assert sorted(len(v) for v in two.values()) == [3, 3]
    back = assign(["a", "b", "c"], range(6), owners(two))
    assert sorted(len(v) for v in back.values()) == [2, 2, 2]


def test_spread_from_nothing_follows_the_weights_not_the_names() -> None:
    # Rendezvous hashing: with 2 members and many shards, neither takes the
    # first half in shard order.
    plan = assign(["host:1:aa", "host:2:bb"], range(64), {})
    halves = [sorted(v) for v in plan.values()]
    assert all(h != list(range(32)) and h != list(range(32, 64)) for h in halves)


def test_holders_that_are_not_members_count_as_free() -> None:
    plan = assign(["a"], range(3), {0: "dead", 1: "dead", 2: None})
    assert plan == {"a": frozenset({0, 1, 2})}


def test_no_members_no_plan() -> None:
    assert assign([], range(4), {0: "x"}) == {}


def test_quota_extra_goes_to_those_holding_more() -> None:
    q = quotas(["a", "b", "c"], 7, {"a": 1, "b": 5, "c": 1})
    assert q["b"] == 3 and sorted(q.values()) == [2, 2, 3]
