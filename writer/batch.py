"""A batch, as pure logic: sort entries into valid and dead, merge the entries
of one row, and turn PostgreSQL's answer into changes and receipts.

No I/O here. Python merges and reports; PostgreSQL chooses every number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from rowcast.contract.change import Change
from rowcast.contract.entry import Entry, parse, reply_token
from rowcast.contract.errors import InvalidEntry
from rowcast.contract.streamid import StreamId
from rowcast.contract.streamid import parse as parse_id


@dataclass(slots=True)
class Read:
    """One entry as XREADGROUP returned it."""

    id: bytes
    fields: dict[bytes, bytes]


@dataclass(slots=True)
class Valid:
    id: bytes
    entry: Entry
    fields: dict[bytes, bytes]


@dataclass(slots=True)
class Dead:
    id: bytes
    fields: dict[bytes, bytes]
    error: str
    reply: str | None

    def dead_fields(self) -> list[bytes | str]:
        """The dead-letter entry: the original fields byte for byte, then ours."""
        out: list[bytes | str] = []
        for k, v in self.fields.items():
            if k not in (b"error", b"source"):
                out += [k, v]
        return [*out, "error", self.error, "source", self.id]


def sort_out(items: Sequence[Read], max_body: int) -> tuple[list[Valid], list[Dead]]:
    valid: list[Valid] = []
    dead: list[Dead] = []
    for item in items:
        try:
            valid.append(Valid(item.id, parse(item.fields, max_body), item.fields))
        except InvalidEntry as e:
            dead.append(Dead(item.id, item.fields, str(e), reply_token(item.fields)))
    return valid, dead


@dataclass(slots=True)
class Merged:
    """All entries of one (session, row) in one SQL call, in stream order."""

    session: str
    row: str
    kind: str
    body: bytes
    upserts: int
    later: int
    entry: StreamId
    replayed: bool
    members: list[Valid] = field(default_factory=list)
    overwritten: list[bytes] = field(default_factory=list)


@dataclass(slots=True)
class Plan:
    merged: list[Merged]

    def arrays(self) -> dict[str, list[Any]]:
        m = self.merged
        return {
            "sessions": [x.session for x in m],
            "rows": [x.row for x in m],
            "kinds": [x.kind for x in m],
            "bodies": [x.body.decode() for x in m],
            "upserts": [x.upserts for x in m],
            "later": [x.later for x in m],
            "entry_ms": [x.entry[0] for x in m],
            "entry_seq": [x.entry[1] for x in m],
            "replayed": [x.replayed for x in m],
            "overwritten": [b.decode() for x in m for b in x.overwritten],
        }


def plans(valid: Sequence[Valid]) -> list[Plan]:
    """The SQL calls that apply these entries, in stream order.

    Live entries of one row merge into one element. Replayed entries never
    merge: each must be checked against what its row already reflects, so a
    run of them is cut wherever a row repeats.
    """
    out: list[Plan] = []
    live: list[Valid] = []
    replay: list[Valid] = []
    seen: set[tuple[str, str]] = set()
    for v in valid:
        if v.entry.origin is None:
            if replay:
                out.append(_replay_plan(replay))
                replay, seen = [], set()
            live.append(v)
            continue
        if live:
            out.append(merge(live))
            live = []
        key = (v.entry.session, v.entry.row)
        if key in seen:
            out.append(_replay_plan(replay))
            replay, seen = [], set()
        replay.append(v)
        seen.add(key)
    if live:
        out.append(merge(live))
    if replay:
        out.append(_replay_plan(replay))
    return out


def merge(valid: Sequence[Valid]) -> Plan:
    """Merge live entries of each row, keeping first-seen order.

    The body sent is the last upsert's, or the first entry's when there is no
    upsert: if the row turns out to be new, later appends are duplicates and
    every later upsert replaced it; if it exists, only upserts count.
    """
    by_key: dict[tuple[str, str], Merged] = {}
    for v in valid:
        e = v.entry
        key = (e.session, e.row)
        m = by_key.get(key)
        if m is None:
            up = 1 if e.op == "upsert" else 0
            by_key[key] = Merged(
                e.session, e.row, e.kind, e.body, up, 0, parse_id(v.id), False, [v]
            )
            continue
        m.members.append(v)
        m.entry = parse_id(v.id)
        if e.op == "upsert":
            m.upserts += 1
            m.later += 1
            m.overwritten.append(m.body)
            m.kind, m.body = e.kind, e.body
    return Plan(list(by_key.values()))


def _replay_plan(valid: Sequence[Valid]) -> Plan:
    merged = []
    for v in valid:
        e = v.entry
        assert e.origin is not None
        up = 1 if e.op == "upsert" else 0
        merged.append(
            Merged(e.session, e.row, e.kind, e.body, up, 0, parse_id(e.origin), True, [v])
        )
    return Plan(merged)


@dataclass(frozen=True, slots=True)
class Result:
    """One line of ``rowcast.apply_batch``."""

    sequence: int
    old_revision: int | None
    revision: int
    change: int | None
    old_change: int | None


@dataclass(slots=True)
class Receipt:
    token: str
    payload: dict[str, Any]

    def to_json(self) -> bytes:
        return orjson.dumps(self.payload)


def outcome(p: Plan, results: Sequence[Result]) -> tuple[list[Change], list[Receipt]]:
    """Changes in first-seen order (so each session's change numbers ascend)
    and one receipt per entry that asked for one."""
    if len(results) != len(p.merged):
        raise ValueError(f"{len(results)} results for {len(p.merged)} merged rows")
    changes: list[Change] = []
    receipts: list[Receipt] = []
    for m, r in zip(p.merged, results, strict=True):
        ack = any(v.entry.reply is not None for v in m.members)
        if r.change is not None:
            changes.append(
                Change(m.session, m.row, r.sequence, r.revision, r.change, m.kind, m.body, ack)
            )
        if not ack:
            continue
        new = r.old_revision is None
        revision = 0 if new else r.old_revision or 0
        if not new and r.change is None:
            # Nothing applied (duplicate appends, or a replay the row already reflects).
            for v in m.members:
                if v.entry.reply is not None:
                    receipts.append(
                        Receipt(
                            v.entry.reply,
                            ok_receipt(m.session, m.row, r.sequence, revision, r.old_change, True),
                        )
                    )
            continue
        for i, v in enumerate(m.members):
            e = v.entry
            duplicate = False
            change: int | None = r.change
            if new and i == 0:
                pass
            elif e.op == "upsert":
                revision += 1
            else:
                duplicate = True
                if not new and r.old_change is not None and revision == r.old_revision:
                    change = r.old_change
            if e.reply is not None:
                receipts.append(
                    Receipt(
                        e.reply,
                        ok_receipt(m.session, m.row, r.sequence, revision, change, duplicate),
                    )
                )
    return changes, receipts


def recovery(
    valid: Sequence[Valid],
    rejects: Mapping[bytes, str],
    rows: Mapping[tuple[str, str], tuple[Change, StreamId]],
) -> tuple[list[Change], list[Receipt], list[Dead]]:
    """What to tell the world again about entries a crashed leader committed
    but may not have announced: ``rejects`` are PostgreSQL's recorded
    refusals among them (entry id -> reason), ``rows`` the current state of
    their rows with the id of the entry that last wrote each.

    Only rows these entries wrote are announced again: a row they left alone
    (a duplicate append) carries an older change number, and announcing it
    now would take its session's feed backwards. Receipts carry the row's
    current state. A row missing although its entry was applied is a dead
    letter, never silence."""
    keep = [v for v in valid if v.id not in rejects]
    dead = [Dead(v.id, v.fields, rejects[v.id], v.entry.reply) for v in valid if v.id in rejects]
    keys = list(dict.fromkeys((v.entry.session, v.entry.row) for v in keep))
    wrote = {parse_id(v.id) for v in keep}
    wrote |= {parse_id(v.entry.origin) for v in keep if v.entry.origin}
    asked = {(v.entry.session, v.entry.row) for v in keep if v.entry.reply is not None}
    changes: list[Change] = []
    for key in keys:
        got = rows.get(key)
        if got is not None and got[1] in wrote:
            changes.append(replace(got[0], ack=key in asked))
    changes.sort(key=lambda c: (c.session, c.change))
    receipts: list[Receipt] = []
    for v in keep:
        got = rows.get((v.entry.session, v.entry.row))
        if got is None:
            dead.append(
                Dead(
                    v.id,
                    v.fields,
                    "row missing from PostgreSQL although its entry was recorded as applied",
                    v.entry.reply,
                )
            )
        elif v.entry.reply is not None:
            c = got[0]
            receipt = ok_receipt(
                c.session, c.row, c.sequence, c.revision, c.change, got[1] not in wrote
            )
            receipts.append(Receipt(v.entry.reply, receipt))
    return changes, receipts, dead


def recovery_rows(valid: Sequence[Valid], rejects: Mapping[bytes, str]) -> list[tuple[str, str]]:
    """The rows ``recovery`` needs to see."""
    keys = ((v.entry.session, v.entry.row) for v in valid if v.id not in rejects)
    return list(dict.fromkeys(keys))


def ok_receipt(
    session: str, row: str, sequence: int, revision: int, change: int | None, duplicate: bool
) -> dict[str, Any]:
    return {
        "ok": True,
        "session": session,
        "row": row,
        "sequence": sequence,
        "revision": revision,
        "change": change,
        "duplicate": duplicate,
    }


def error_receipt(error: str) -> dict[str, Any]:
    return {"ok": False, "error": error}
