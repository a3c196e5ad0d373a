"""A reference model of the contract's row semantics, independent of the
writer's code: what PostgreSQL must hold after a sequence of batches."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Row:
    sequence: int
    revision: int
    change: int
    kind: str
    body: str
    first_pos: int  # stream position of the entry that created it


def extended(body: Any, ext: dict[str, Any]) -> Any:
    """The contract's extend, on decoded JSON: strings are appended to the
    row's string at that key (empty when absent or not a string), other values
    replace, other keys stay. Raises ValueError when the row is not an object."""
    if not isinstance(body, dict):
        raise ValueError("the row's body is not an object")
    out = dict(body)
    for key, value in ext.items():
        if isinstance(value, str):
            old = out.get(key)
            out[key] = (old if isinstance(old, str) else "") + value
        else:
            out[key] = value
    return out


def jsonb_text(value: Any) -> str:
    """JSON as PostgreSQL prints jsonb (for ASCII strings and integers): object
    keys shortest first, then bytewise; ", " and ": " between items."""
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (len(k.encode()), k.encode()))
        return "{" + ", ".join(f"{json.dumps(k)}: {jsonb_text(value[k])}" for k in keys) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(jsonb_text(v) for v in value) + "]"
    return json.dumps(value)


@dataclass
class Model:
    rows: dict[tuple[str, str], Row] = field(default_factory=dict)
    next_sequence: dict[str, int] = field(default_factory=dict)
    last_change: dict[str, int] = field(default_factory=dict)
    position: int = 0
    max_body: int | None = None
    """The largest body an extend may make (as jsonb prints it); None: no limit."""
    refused: list[int] = field(default_factory=list)
    """Stream positions of the entries the writer must refuse (dead-letter)."""

    def apply(self, batch: list[tuple[str, str, str, str, str]]) -> None:
        """One committed batch of (op, session, row, kind, body), in stream order.

        Sequences and revisions follow entry by entry. Change numbers: each
        row changed in the batch gets one, in the order its first entry of
        the batch appears (the contract allows merging a row's changes).
        An extend that cannot apply (the row's body is not an object, or it
        would grow past ``max_body``) is refused and changes nothing.
        """
        changed: set[tuple[str, str]] = set()
        seen: list[tuple[str, str]] = []  # first entries, in batch order
        for op, session, row, kind, body in batch:
            key = (session, row)
            seen.append(key)
            r = self.rows.get(key)
            if r is None:
                seq = self.next_sequence.get(session, 0)
                self.next_sequence[session] = seq + 1
                self.rows[key] = Row(seq, 0, 0, kind, body, self.position)
                changed.add(key)
            elif op == "upsert":
                r.revision += 1
                r.kind, r.body = kind, body
                changed.add(key)
            elif op == "extend":
                try:
                    new = extended(json.loads(r.body), json.loads(body))
                except ValueError:
                    self.refused.append(self.position)
                else:
                    text = jsonb_text(new)
                    if self.max_body is not None and len(text.encode()) > self.max_body:
                        self.refused.append(self.position)
                    else:
                        r.revision += 1
                        r.kind, r.body = kind, text
                        changed.add(key)
            self.position += 1
        # A row whose first entry changed nothing (a duplicate append) and a
        # later one did still takes its place at that first entry.
        for key in (k for k in dict.fromkeys(seen) if k in changed):
            n = self.last_change.get(key[0], 0) + 1
            self.last_change[key[0]] = n
            self.rows[key].change = n
