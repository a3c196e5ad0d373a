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
from rowcast.contract.entry import KNOWN, Entry, Op, flat_of, parse, reply_token, without
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
        """The dead-letter entry: the original fields byte for byte (a
        repeated name repeated), then ours. Of an entry with more than
        ``DEAD_FIELDS`` fields, the first of each the contract names and then
        the others in order, ``DEAD_FIELDS`` in all: the publish script
        passes a letter to one XADD, and Redis's Lua passes at most ~8,000
        arguments."""
        flat = without(flat_of(self.fields), _OURS)
        pairs = list(zip(flat[::2], flat[1::2], strict=True))
        error = self.error
        if len(pairs) > DEAD_FIELDS:
            # The first of each named field, then the others in order, up to
            # the limit in all (a name repeated 5,000 times counts each time).
            keep: set[int] = set()
            named: set[bytes] = set()
            for i, (name, _) in enumerate(pairs):
                if name in KNOWN and name not in named:
                    named.add(name)
                    keep.add(i)
            for i in range(len(pairs)):
                if len(keep) >= DEAD_FIELDS:
                    break
                keep.add(i)
            kept = [pairs[i] for i in sorted(keep)]
            error += (
                f" ({len(pairs) - len(kept)} of its {len(pairs)} fields not kept:"
                f" a dead letter keeps at most {DEAD_FIELDS})"
            )
            pairs = kept
        out: list[bytes | str] = [x for p in pairs for x in p]
        return [*out, "error", error, "source", self.id]


DEAD_FIELDS = 2000
"""Fields a dead letter keeps of its entry at most (see ``Dead.dead_fields``)."""
_OURS = (b"error", b"source")


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
    """All entries of one (session, row) in one SQL call, in stream order.

    What PostgreSQL does with it: a new row is inserted with ``body`` (then
    ``steps`` applied) at revision ``revision_if_new``; an existing row gets
    ``bumps`` more revisions and, when ``bumps`` > 0, either ``body`` (no
    extend among the entries) or its own body with the entries' upserts and
    extends applied in order (the first entry's, ``first_step``, then ``steps``).
    """

    session: str
    row: str
    kind: str
    """The last kind that changed the row (first entry's if none did)."""
    body: bytes
    """Without extends: the last upsert's body (the first entry's if there is
    none). With extends: the first entry's body, the base of ``steps``."""
    bumps: int
    """Revisions an existing row gains: every upsert and extend."""
    revision_if_new: int
    """The revision a new row ends at: the upserts and extends after its first entry."""
    entry: StreamId
    replayed: bool
    members: list[Valid] = field(default_factory=list)
    overwritten: list[bytes] = field(default_factory=list)
    """Bodies merged away (replaced within the batch), judged by PostgreSQL all
    the same: whether a bad body is refused never depends on batching."""
    steps: bytes | None = None
    """With extends: the entries after the first, as a JSON array of
    ``[code, body]`` (see ``_STEP``), applied to ``body`` for a new row."""
    first_step: int = 0
    """The first entry's code when it changes an existing row too (0: append)."""

    @property
    def extends(self) -> bool:
        return self.steps is not None

    def delta(self) -> tuple[bytes, bool] | None:
        """What an existing row's body gains when every entry that changes it
        is an extend: the string suffixes joined by key (JSON text), and
        whether strings were all they changed (only then may a client apply
        them to the body it holds). None when an upsert is among them."""
        if not self.extends:
            return None
        changers = [v.entry for v in self.members if v.entry.op != Op.APPEND]
        if not changers or any(e.op != Op.EXTEND for e in changers):
            return None
        joined: dict[str, str] = {}
        strings_only = True
        for e in changers:
            try:
                obj = orjson.loads(e.body)
            except orjson.JSONDecodeError:
                # What only PostgreSQL parses (huge numbers, deep nesting):
                # the change goes whole.
                return None
            for key, value in obj.items():
                if isinstance(value, str):
                    joined[key] = joined.get(key, "") + value
                else:
                    # Replaced, not appended: what was appended before it is
                    # gone from the body, and a client cannot take this as a delta.
                    joined.pop(key, None)
                    strings_only = False
        return orjson.dumps(joined), strings_only


_STEP: dict[str, int] = {Op.APPEND: 0, Op.UPSERT: 1, Op.EXTEND: 2}
"""The codes of ``rowcast.extended``'s steps: 1 replaces the body, 2 extends it."""


@dataclass(slots=True)
class Plan:
    merged: list[Merged]
    _arrays: dict[str, list[Any]] | None = field(default=None, repr=False)

    def arrays(self) -> dict[str, list[Any]]:
        """apply_batch's arrays (made once: the writer makes them while the
        batch before is being committed)."""
        if self._arrays is None:
            self._arrays = self._make_arrays()
        return self._arrays

    def _make_arrays(self) -> dict[str, list[Any]]:
        m = self.merged
        return {
            "sessions": [x.session for x in m],
            "rows": [x.row for x in m],
            "kinds": [x.kind for x in m],
            "bodies": [x.body.decode() for x in m],
            "bumps": [x.bumps for x in m],
            "revision_if_new": [x.revision_if_new for x in m],
            "entry_ms": [x.entry[0] for x in m],
            "entry_seq": [x.entry[1] for x in m],
            "replayed": [x.replayed for x in m],
            "overwritten": [b.decode() for x in m for b in x.overwritten],
            "steps": [None if x.steps is None else x.steps.decode() for x in m],
            "first_step": [x.first_step for x in m],
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
    """Merge live entries of each row, keeping first-seen order."""
    by_key: dict[tuple[str, str], list[Valid]] = {}
    for v in valid:
        by_key.setdefault((v.entry.session, v.entry.row), []).append(v)
    return Plan([merged(members, parse_id(members[-1].id)) for members in by_key.values()])


def merged(members: list[Valid], entry: StreamId, replayed: bool = False) -> Merged:
    """One row's entries as one element.

    Without extends, the body sent is the last upsert's, or the first entry's
    when there is no upsert: if the row turns out to be new, later appends are
    duplicates and every later upsert replaced it; if it exists, only upserts
    count. With an extend among them the result depends on the stored body,
    so PostgreSQL folds the entries in order itself (``steps``).
    """
    first = members[0].entry
    changers = [v.entry for v in members[1:] if v.entry.op != Op.APPEND]
    kind = changers[-1].kind if changers else first.kind
    bumps = len(changers) + (first.op != Op.APPEND)
    m = Merged(
        first.session, first.row, kind, first.body, bumps, len(changers), entry, replayed, members
    )
    if first.op == Op.EXTEND or any(e.op == Op.EXTEND for e in changers):
        m.steps = b"[" + b",".join(b"[%d,%s]" % (_STEP[e.op], e.body) for e in changers) + b"]"
        m.first_step = _STEP[first.op]
        if first.op == Op.APPEND and changers:
            m.overwritten.append(first.body)
    elif changers:
        m.overwritten = [first.body] + [e.body for e in changers[:-1]]
        m.body = changers[-1].body
    return m


def _replay_plan(valid: Sequence[Valid]) -> Plan:
    out = []
    for v in valid:
        assert v.entry.origin is not None
        out.append(merged([v], parse_id(v.entry.origin), replayed=True))
    return Plan(out)


@dataclass(frozen=True, slots=True)
class Result:
    """One line of ``rowcast.apply_batch``."""

    sequence: int
    old_revision: int | None
    revision: int
    change: int | None
    old_change: int | None
    body: str | None = None
    """The body PostgreSQL computed (extends), as it prints it; else None."""


@dataclass(slots=True)
class Reply:
    """A receipt the writer pushes to ``P:{N}:reply:TOKEN`` (the producer reads
    it as a ``rowcast.producers.Receipt``)."""

    token: str
    payload: dict[str, Any]

    def to_json(self) -> bytes:
        return orjson.dumps(self.payload)


def outcome(p: Plan, results: Sequence[Result]) -> tuple[list[Change], list[Reply]]:
    """Changes in first-seen order (so each session's change numbers ascend)
    and one receipt per entry that asked for one."""
    if len(results) != len(p.merged):
        raise ValueError(f"{len(results)} results for {len(p.merged)} merged rows")
    changes: list[Change] = []
    receipts: list[Reply] = []
    for m, r in zip(p.merged, results, strict=True):
        ack = any(v.entry.reply is not None for v in m.members)
        if r.change is not None:
            changes.append(_change(m, r, ack))
        if ack:
            receipts += _receipts(m, r)
    return changes, receipts


def _change(m: Merged, r: Result, ack: bool) -> Change:
    assert r.change is not None
    body = m.body if r.body is None else r.body.encode()
    gained = m.delta() if r.old_revision is not None else None
    extend = None if gained is None else gained[0]
    base = r.old_revision if gained is not None and gained[1] else None
    return Change(
        m.session, m.row, r.sequence, r.revision, r.change, m.kind, body, ack, extend, base
    )


def _receipts(m: Merged, r: Result) -> list[Reply]:
    """Each entry's receipt: the row's revision and change right after it."""
    out: list[Reply] = []
    applied = r.change is not None
    revision = r.old_revision  # None: the row did not exist before this batch
    change = r.old_change
    for v in m.members:
        e = v.entry
        if not applied:
            # Nothing applied (duplicate appends, or a replay the row already reflects).
            duplicate = True
        elif revision is None:
            revision, change, duplicate = 0, r.change, False
        elif e.op == Op.APPEND:
            duplicate = True
        else:
            revision, change, duplicate = revision + 1, r.change, False
        if e.reply is not None:
            payload = ok_receipt(m.session, m.row, r.sequence, revision or 0, change, duplicate)
            out.append(Reply(e.reply, payload))
    return out


def recovery(
    valid: Sequence[Valid],
    rejects: Mapping[bytes, str],
    rows: Mapping[tuple[str, str], tuple[Change, StreamId]],
) -> tuple[list[Change], list[Reply], list[Dead]]:
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
    receipts: list[Reply] = []
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
            receipts.append(Reply(v.entry.reply, receipt))
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
