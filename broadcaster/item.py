"""The item: one change as the broadcaster carries it.

Its JSON is encoded once, when it enters the process, and the same bytes are
shared by every connection that sends it; the numbers beside it are what the
cursor logic orders and deduplicates by.

A change made by extends carries its delta too: ``extend`` (the strings
appended, by key) on top of ``base_revision``. Its delta form (the change
without ``body``) is encoded once as well; a connection sends it only to a
client known to hold the row at ``base_revision`` (coalesce.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from rowcast.broadcaster.memo import Memo
from rowcast.contract.change import Change


@dataclass(frozen=True, slots=True)
class Item:
    change: int
    row: str
    ack: bool
    json: bytes
    """The change as the contract spells it, encoded (full form: with body)."""
    revision: int = 0
    base: int | None = None
    """``base_revision`` when the change has a delta form, else None."""
    extend: Mapping[str, str] | None = None
    """The delta's strings by key (with ``base``)."""
    delta: Item | None = None
    """The delta form (the change without body, encoded once), with ``base``."""

    def as_delta(self) -> Item:
        assert self.delta is not None
        return self.delta


def from_change(c: Change) -> Item:
    if c.extend is None:
        return Item(c.change, c.row, c.ack, c.to_json(), c.revision)
    return from_message_change(orjson.loads(c.to_json()))


def from_message_change(data: Mapping[str, Any]) -> Item:
    """One element of a ``P:rows`` message's ``changes`` (already decoded).

    Raises KeyError, TypeError or ValueError on a change that breaks the format.
    """
    change = data["change"]
    row = data["row"]
    revision = data.get("revision", 0)
    if not all(_is_int(v) for v in (change, revision)) or not isinstance(row, str):
        raise TypeError("change and revision must be integers and row a string")
    ack = bool(data.get("ack", False))
    full = orjson.dumps(data)
    base, extend = data.get("base_revision"), data.get("extend")
    if not _is_int(base) or not _strings(extend) or base >= revision:
        # No usable delta: the change is sent whole, as every consumer reads it.
        return Item(change, row, ack, full, revision)
    form = orjson.dumps({k: v for k, v in data.items() if k != "body"})
    delta = Item(change, row, ack, form, revision, base)
    return Item(change, row, ack, full, revision, base, extend, delta)


def merged_delta(session: str, chain: Sequence[Item]) -> Item:
    """Consecutive deltas of one row (each on the revision of the one before)
    as one delta from the first's base to the last's revision."""
    if len(chain) == 1:
        return chain[0].as_delta()
    first, last = chain[0], chain[-1]
    key = (first.json, last.json)
    hit = _merged.get(key)
    if hit is not None:
        return hit
    joined: dict[str, str] = {}
    for i in chain:
        assert i.extend is not None
        for k, v in i.extend.items():
            joined[k] = joined.get(k, "") + v
    fields = orjson.loads(last.delta.json if last.delta else b"{}")
    fields["extend"] = joined
    fields["base_revision"] = first.base
    ack = any(i.ack for i in chain)
    fields["ack"] = ack
    out = Item(last.change, last.row, ack, orjson.dumps(fields), last.revision, first.base)
    _merged.put(key, out, len(out.json) + len(first.json) + len(last.json))
    return out


# The connections watching one session merge the same chains on the same tick:
# encode each merge once. A chain is named by its first and last changes as
# encoded (the same bytes objects for every connection, so a lookup compares
# identities), which hold its session, row and change numbers and the bodies
# the deltas lead to: a history renumbered from scratch (a database restored
# while the broadcaster runs) can never hit an older chain's merge.
_merged: Memo[Item] = Memo()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _strings(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
