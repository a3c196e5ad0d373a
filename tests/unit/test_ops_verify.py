"""verify: classifying a session's figures, and the report."""

from __future__ import annotations

import pytest

from rowcast.ops.admin.verify import Report, SessionFigures, format_report, problems


def fig(
    rows: int = 3,
    distinct: int | None = None,
    lo: int | None = 0,
    hi: int | None = None,
    nxt: int | None = None,
    last: int | None = 5,
    max_change: int | None = 5,
    min_rev: int | None = 0,
    head: bool = True,
) -> SessionFigures:
    distinct = rows if distinct is None else distinct
    hi = (rows - 1) if hi is None else hi
    nxt = rows if nxt is None else nxt
    return SessionFigures(
        "s",
        head,
        nxt if head else None,
        last if head else None,
        rows,
        distinct,
        lo,
        hi,
        max_change,
        min_rev,
    )


def test_healthy_sessions() -> None:
    assert problems(fig()) == []
    empty = SessionFigures("s", True, 0, 0, 0, 0, None, None, None, None)
    assert problems(empty) == []


def test_a_head_ahead_of_its_rows_is_a_violation() -> None:
    # The contract: last_change EQUALS the largest change of the session's rows
    # (issue 10, point 9; this used to be allowed).
    assert problems(fig(last=9)) == ["last_change"]
    ahead = SessionFigures("s", True, 0, 3, 0, 0, None, None, None, None)
    assert problems(ahead) == ["last_change"]


@pytest.mark.parametrize(
    ("figures", "expected"),
    [
        (fig(hi=3), ["gap"]),  # 0,1,3
        (fig(lo=1, hi=3), ["gap"]),  # 1,2,3: not from 0
        (fig(lo=-1, hi=1), ["gap"]),
        (fig(rows=3, distinct=2, hi=1), ["duplicate_sequence"]),  # 0,1,1
        (fig(rows=3, distinct=2, hi=2), ["duplicate_sequence", "gap"]),  # 0,2,2
        (fig(nxt=2), ["next_sequence"]),
        (fig(last=4), ["last_change"]),
        (fig(min_rev=-1), ["negative_revision"]),
        (fig(head=False), ["no_head"]),
        (SessionFigures("s", True, 4, 0, 0, 0, None, None, None, None), ["next_sequence"]),
    ],
)
def test_each_violation(figures: SessionFigures, expected: list[str]) -> None:
    assert problems(figures) == expected


def test_report_keeps_a_bounded_list() -> None:
    r = Report(listed=2)
    for _ in range(5):
        r.add(fig(nxt=0))
    r.add(fig())
    d = r.as_dict()
    assert d["ok"] is False and d["sessions"] == 6 and d["rows"] == 18
    assert d["violations_total"] == 5 and len(d["violations"]) == 2 and d["truncated"]
    text = format_report(d)
    assert "5 broken sessions" in text and "and 3 more" in text
    assert "next_sequence differs" in text
    ok = Report()
    ok.add(fig())
    assert format_report(ok.as_dict()) == "checked 1 sessions, 3 rows: ok"
