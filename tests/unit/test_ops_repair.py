"""repair: the plan and its description."""

from __future__ import annotations

from rowcast.ops.admin.repair import Move, Renumbering, changes_of, describe
from rowcast.ops.admin.verify import SessionFigures


def test_plan_head_and_description() -> None:
    before = SessionFigures("s", True, 2, 4, 5, 5, 0, 6, 7, 0)
    plan = Renumbering(before, ["gap", "next_sequence", "last_change"], [Move("r5", 6, 4)])
    assert plan.head_after() == (5, 8)
    text = describe(plan, done=False)
    assert "would renumber 1 rows" in text
    assert "next_sequence 2 -> 5" in text and "last_change 4 -> 8" in text
    assert "row 'r5': sequence 6 -> 4" in text
    assert "not fixed" not in text


def test_an_unfixable_problem_is_named() -> None:
    before = SessionFigures("s", True, 1, 1, 1, 1, 0, 0, 1, -1)
    text = describe(Renumbering(before, ["negative_revision"], []), done=True)
    assert "renumbered 0 rows" in text and "not fixed by repair: a revision is negative" in text


def test_changes_of_repair_lines() -> None:
    (c,) = changes_of("s", [("r", 3, 1, 9, "user", '{"a": 1}')])
    assert (c.session, c.row, c.sequence, c.revision, c.change, c.kind) == (
        "s",
        "r",
        3,
        1,
        9,
        "user",
    )
    assert c.body == b'{"a": 1}' and c.ack is False
