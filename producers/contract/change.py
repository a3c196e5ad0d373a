"""The change: the unit of ``P:{N}:rows``, ``P:rows``, the HTTP API and the feeds.

A body travels as the JSON text it arrived as (or as PostgreSQL printed it)
and is embedded in published JSON without being decoded and re-encoded.

A change made by ``extend`` entries on an existing row also carries
``extend``: the strings appended, by key, as JSON text. When strings were all
those extends changed, it carries ``base_revision`` too (the revision they
apply to), and is then a delta a client may apply. ``body`` is always the
full new body, so a consumer that knows nothing of deltas stays correct.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Change:
    session: str
    row: str
    sequence: int
    revision: int
    change: int
    kind: str
    body: bytes
    ack: bool = False
    extend: bytes | None = None
    """JSON text of an object of strings: what was appended at each key."""
    base_revision: int | None = None
    """Set when this change is exactly ``base_revision``'s body with
    ``extend`` appended (nothing else changed)."""

    def __post_init__(self) -> None:
        if self.base_revision is not None and self.extend is None:
            raise ValueError("base_revision needs extend")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the body as a pre-encoded fragment."""
        out: dict[str, Any] = {
            "session": self.session,
            "row": self.row,
            "sequence": self.sequence,
            "revision": self.revision,
            "change": self.change,
            "kind": self.kind,
            "body": orjson.Fragment(self.body),
            "ack": self.ack,
        }
        if self.extend is not None:
            out["extend"] = orjson.Fragment(self.extend)
        if self.base_revision is not None:
            out["base_revision"] = self.base_revision
        return out

    def to_json(self) -> bytes:
        return orjson.dumps(self.as_dict())

    def packed(self) -> bytes:
        """The stream fields' values joined by NUL, body last (the publish
        script's wire format; none of the values can contain a NUL). extend
        and base_revision are empty when absent."""
        return b"\0".join(
            (
                self.session.encode(),
                self.row.encode(),
                b"%d" % self.sequence,
                b"%d" % self.revision,
                b"%d" % self.change,
                self.kind.encode(),
                b"1" if self.ack else b"0",
                self.extend or b"",
                b"" if self.base_revision is None else b"%d" % self.base_revision,
                self.body,
            )
        )


def batch_message(shard: int, changes: Iterable[Change]) -> bytes:
    """The ``P:rows`` message of one committed batch."""
    return orjson.dumps({"shard": shard, "changes": [c.as_dict() for c in changes]})


def from_stream_fields(fields: Mapping[bytes, bytes]) -> Change:
    """Read back one ``P:{N}:rows`` entry."""
    return Change(
        session=fields[b"session"].decode(),
        row=fields[b"row"].decode(),
        sequence=int(fields[b"sequence"]),
        revision=int(fields[b"revision"]),
        change=int(fields[b"change"]),
        kind=fields[b"kind"].decode(),
        body=fields[b"body"],
        ack=fields.get(b"ack") == b"1",
        extend=fields.get(b"extend"),
        base_revision=_int_or_none(fields.get(b"base_revision")),
    )


def _int_or_none(value: bytes | int | None) -> int | None:
    return None if value is None else int(value)


def from_json(data: Mapping[str, Any]) -> Change:
    """A change decoded from a pub/sub message or an API answer."""
    return Change(
        session=data["session"],
        row=data["row"],
        sequence=int(data["sequence"]),
        revision=int(data["revision"]),
        change=int(data["change"]),
        kind=data["kind"],
        body=orjson.dumps(data["body"]),
        ack=bool(data.get("ack", False)),
        extend=None if data.get("extend") is None else orjson.dumps(data["extend"]),
        base_revision=_int_or_none(data.get("base_revision")),
    )
