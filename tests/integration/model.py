"""A reference model of the contract's row semantics, independent of the
writer's code: what PostgreSQL must hold after a sequence of batches."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Row:
    sequence: int
    revision: int
    change: int
    kind: str
    body: str
    first_pos: int  # stream position of the entry that created it


@dataclass
class Model:
    rows: dict[tuple[str, str], Row] = field(default_factory=dict)
    next_sequence: dict[str, int] = field(default_factory=dict)
    last_change: dict[str, int] = field(default_factory=dict)
    position: int = 0

    def apply(self, batch: list[tuple[str, str, str, str, str]]) -> None:
        """One committed batch of (op, session, row, kind, body), in stream order.

        Sequences and revisions follow entry by entry. Change numbers: each
        row changed in the batch gets one, in the order its first entry of
        the batch appears (the contract allows merging a row's changes).
        """
        changed: list[tuple[str, str]] = []
        for op, session, row, kind, body in batch:
            key = (session, row)
            r = self.rows.get(key)
            if r is None:
                seq = self.next_sequence.get(session, 0)
                self.next_sequence[session] = seq + 1
                self.rows[key] = Row(seq, 0, 0, kind, body, self.position)
                changed.append(key)
            elif op == "upsert":
                r.revision += 1
                r.kind, r.body = kind, body
                changed.append(key)
            self.position += 1
        for key in dict.fromkeys(changed):
            n = self.last_change.get(key[0], 0) + 1
            self.last_change[key[0]] = n
            self.rows[key].change = n
