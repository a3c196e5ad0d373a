"""status: the pure parts (report shape, table)."""

from __future__ import annotations

from rowcast.ops.admin.status import (
    ShardRaw,
    broadcaster_report,
    format_status,
    shard_report,
    table,
)


def _raw(**kw: object) -> ShardRaw:
    base: dict = dict(
        shard=0,
        now_ms=10_000,
        length=0,
        group=None,
        pending_min=None,
        lease_holder=None,
        fence=None,
        dead=0,
        rows_length=0,
        applied=None,
    )
    base.update(kw)
    return ShardRaw(**base)


def test_no_group_means_everything_is_waiting() -> None:
    r = shard_report(_raw(length=5))
    assert r["lag"] == 5 and r["pending"] == 0 and r["last_delivered"] is None
    assert r["lease"] == {"holder": None, "fence": None}
    assert r["oldest_pending_age_ms"] is None


def test_group_figures_and_pending_age() -> None:
    group = {"name": b"writer", "pending": 2, "lag": 3, "last-delivered-id": b"9000-1"}
    r = shard_report(
        _raw(
            length=9,
            group=group,
            pending_min="7500-0",
            lease_holder="h",
            fence=4,
            applied=(8000, 2),
            dead=1,
            rows_length=6,
        )
    )
    assert r == {
        "shard": 0,
        "length": 9,
        "lag": 3,
        "pending": 2,
        "last_applied": "8000-2",
        "dead": 1,
        "rows_length": 6,
        "lease": {"holder": "h", "fence": 4},
        "oldest_pending_age_ms": 2500,
        "last_delivered": "9000-1",
    }


def test_a_claimed_shard_with_nothing_applied_says_null() -> None:
    # The writer's claim creates the record at 0-0 before its first commit.
    assert shard_report(_raw(applied=(0, 0)))["last_applied"] is None
    assert shard_report(_raw(applied=(0, 1)))["last_applied"] == "0-1"


def test_unknown_lag_falls_back_to_the_count() -> None:
    group = {"name": "writer", "pending": 0, "lag": None, "last-delivered-id": "1-0"}
    assert shard_report(_raw(group=group, counted_lag=7))["lag"] == 7
    assert shard_report(_raw(group=group, counted_lag=None))["lag"] is None


def test_broadcaster_heartbeats() -> None:
    assert broadcaster_report("b", b'{"connections": 2, "subscriptions": 3, "x": 1}') == {
        "instance": "b",
        "connections": 2,
        "subscriptions": 3,
        "x": 1,
    }
    assert broadcaster_report("b", b"garbage")["raw"] == "garbage"  # type: ignore[index]
    assert broadcaster_report("b", None) is None


def test_table_and_human_status() -> None:
    assert table(["a", "bb"], [["xxx", "y"]]) == "a    bb\nxxx  y"
    report = {
        "shards": [shard_report(_raw(length=3, lease_holder="host:1", fence=2))],
        "broadcasters": [
            {"instance": "b1", "connections": 4, "subscriptions": None, "host": "h", "port": 8},
        ],
        "verify": {"ok": False, "violations_total": 2, "sessions": 9, "finished_at": "T"},
        "errors": ["PostgreSQL: down"],
    }
    text = format_status(report)
    assert "host:1" in text and "b1" in text and "h:8" in text
    assert "FAILED at T: 2 broken sessions of 9" in text
    assert "error: PostgreSQL: down" in text
    assert "(none)" in format_status({"shards": [shard_report(_raw())], "broadcasters": []})
