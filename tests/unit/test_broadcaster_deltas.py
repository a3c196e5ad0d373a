"""Deltas to one connection (pure): whatever the interleaving of changes,
windows, catch-up reads and forgotten rows, a client that applies what it is
sent never meets a delta on a base it does not hold, and always ends with the
row as it really is."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from rowcast.broadcaster.coalesce import Held, Pending
from rowcast.broadcaster.item import Item, from_change, from_message_change
from rowcast.contract.change import Change


def change(row: str, revision: int, number: int, body: dict, extend: dict | None = None) -> Item:
    base = None if extend is None else revision - 1
    c = Change(
        "s",
        row,
        0,
        revision,
        number,
        "assistant",
        orjson.dumps(body),
        extend=None if extend is None else orjson.dumps(extend),
        base_revision=base,
    )
    # As the hub gets it: decoded from a P:rows message.
    return from_message_change(orjson.loads(c.to_json()))


class Client:
    """Applies frames as the web UI does, refusing a delta on the wrong base."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[int, dict]] = {}
        self.deltas = 0

    def apply(self, item: Item) -> None:
        c = orjson.loads(item.json)
        if "body" in c:
            self.rows[c["row"]] = (c["revision"], c["body"])
            return
        held = self.rows.get(c["row"])
        assert held is not None and held[0] == c["base_revision"], (held, c)
        body = dict(held[1])
        for k, v in c["extend"].items():
            old = body.get(k)
            body[k] = (old if isinstance(old, str) else "") + v
        self.rows[c["row"]] = (c["revision"], body)
        self.deltas += 1


step_st = st.one_of(
    st.tuples(st.just("extend"), st.integers(0, 2), st.text("ab", max_size=3)),
    st.tuples(st.just("extend"), st.integers(0, 2), st.text("ab", max_size=3)),
    st.tuples(st.just("upsert"), st.integers(0, 2), st.text("xy", max_size=3)),
    st.tuples(st.just("take"), st.just(0), st.just("")),
    st.tuples(st.just("catch-up"), st.integers(0, 2), st.just("")),
    st.tuples(st.just("resubscribe"), st.just(0), st.just("")),
)


@given(
    steps=st.lists(step_st, max_size=80),
    collapse=st.booleans(),
    held_rows=st.integers(1, 3),
    skip=st.sets(st.integers(0, 80)),
)
def test_a_delta_never_reaches_a_client_without_its_base(
    steps: list, collapse: bool, held_rows: int, skip: set[int]
) -> None:
    truth: dict[str, tuple[int, dict]] = {}
    p = Pending(collapse)
    p.track("s", True, held_rows)
    client = Client()
    number = 0
    for n, (op, r, text) in enumerate(steps):
        row = f"r{r}"
        if op == "take":
            for _, items in p.take(2):
                for i in items:
                    client.apply(i)
            continue
        if op == "resubscribe":
            # A new subscription on the same connection holds nothing.
            p.discard("s")
            p.track("s", True, held_rows)
            continue
        if op == "catch-up":
            # A read from PostgreSQL: the row whole, at its latest revision.
            if row in truth:
                number += 1
                rev, body = truth[row]
                p.add("s", [change(row, rev, number, body)])
            continue
        number += 1
        if op == "upsert" or row not in truth:
            rev = truth[row][0] + 1 if row in truth else 0
            truth[row] = (rev, {"t": text, "n": rev})
            item = change(row, rev, number, truth[row][1])
        else:
            rev, body = truth[row]
            body = {**body, "t": body["t"] + text}
            truth[row] = (rev + 1, body)
            item = change(row, rev + 1, number, body, {"t": text})
        # A change lost on the live path never reaches the outbox (the
        # subscription reads it from PostgreSQL later: a catch-up above).
        if n not in skip:
            p.add("s", [item])
    for _, items in p.take(2):
        for i in items:
            client.apply(i)
    for row, (rev, body) in client.rows.items():
        assert truth[row][0] >= rev
        if truth[row][0] == rev:
            assert body == truth[row][1]


def test_extends_in_one_window_go_as_one_delta_on_the_held_revision() -> None:
    p = Pending(collapse=True)  # ROWCAST_COLLAPSE=1
    p.track("s", True)
    p.add("s", [change("a", 0, 1, {"t": ""})])
    [(_, [first])] = p.take(10)
    assert b'"body"' in first.json
    p.add("s", [change("a", 1, 2, {"t": "he"}, {"t": "he"})])
    p.add("s", [change("a", 2, 3, {"t": "hel"}, {"t": "l"})])
    p.add("s", [change("a", 3, 4, {"t": "hello"}, {"t": "lo"})])
    [(_, [merged])] = p.take(10)
    assert orjson.loads(merged.json) == {
        "session": "s",
        "row": "a",
        "sequence": 0,
        "revision": 3,
        "change": 4,
        "kind": "assistant",
        "ack": False,
        "extend": {"t": "hello"},
        "base_revision": 0,
    }


def test_without_deltas_or_without_the_base_the_change_goes_whole() -> None:
    plain = Pending()
    plain.add("s", [change("a", 1, 2, {"t": "xy"}, {"t": "y"})])
    [(_, [whole])] = plain.take(10)
    assert orjson.loads(whole.json)["body"] == {"t": "xy"}
    p = Pending()
    p.track("s", True)
    # Subscribed after revision 0 was sent to others: this client holds nothing.
    p.add("s", [change("a", 1, 2, {"t": "xy"}, {"t": "y"})])
    [(_, [item])] = p.take(10)
    assert orjson.loads(item.json)["body"] == {"t": "xy"}


def test_held_forgets_the_least_recently_sent_row() -> None:
    h = Held(2)
    h.sent("a", 1)
    h.sent("b", 1)
    h.sent("a", 2)
    h.sent("c", 0)
    assert (h.get("a"), h.get("b"), h.get("c"), len(h)) == (2, None, 0, 2)


def test_a_change_without_a_usable_delta_has_no_delta_form() -> None:
    c = Change("s", "a", 0, 3, 7, "k", b'{"t":"x"}')
    assert from_change(c).delta is None
    bad = orjson.loads(c.to_json()) | {"extend": {"t": 1}, "base_revision": 2}
    assert from_message_change(bad).delta is None


def test_a_history_numbered_again_never_gets_an_older_chains_merge() -> None:
    """The same session, row and change numbers with other contents (the
    database was restored while the broadcaster ran): merged from these."""
    merged = []
    for text in ("ab", "xy"):
        p = Pending(collapse=True)
        p.track("s", True)
        p.add("s", [change("a", 0, 1, {"t": ""})])
        p.take(10)
        p.add("s", [change("a", 1, 2, {"t": text[0]}, {"t": text[0]})])
        p.add("s", [change("a", 2, 3, {"t": text}, {"t": text[1]})])
        [(_, [m])] = p.take(10)
        merged.append(orjson.loads(m.json)["extend"])
    assert merged == [{"t": "ab"}, {"t": "xy"}]


@given(
    collapse=st.booleans(),
    held=st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 3)), max_size=3),
    row=st.sampled_from("ab"),
    revision=st.integers(0, 4),
    tracked=st.booleans(),
)
def test_one_change_alone_is_framed_as_add_then_take_frames_it(
    collapse: bool, held: list[tuple[str, int]], row: str, revision: int, tracked: bool
) -> None:
    """``Pending.one`` (the outbox's fast path) sends what adding the change
    and taking everything would, and leaves the same record of what the
    client holds."""
    boxes = [Pending(collapse), Pending(collapse)]
    for box in boxes:
        box.track("s", tracked)
        h = box.held("s")
        for r, rev in held:
            if h is not None:
                h.sent(r, rev)
    body = {"t": "x" * revision}
    item = change(row, revision, 10 + revision, body, {"t": "x"} if revision else None)
    fast = boxes[0].one("s", item)
    boxes[1].add("s", [item])
    [(_, [slow])] = boxes[1].take(10)
    assert fast.json == slow.json
    h0, h1 = boxes[0].held("s"), boxes[1].held("s")
    assert (h0 is None) == (h1 is None)
    if h0 is not None and h1 is not None:
        assert [h0.get(r) for r in "ab"] == [h1.get(r) for r in "ab"]
