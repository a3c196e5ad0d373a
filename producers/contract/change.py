"""The change: the unit of ``P:{N}:rows``, ``P:rows``, the HTTP API and the feeds.

A body travels as the JSON text it arrived as (or as PostgreSQL printed it)
and is embedded in published JSON without being decoded and re-encoded.
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

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the body as a pre-encoded fragment."""
        return {
            "session": self.session,
            "row": self.row,
            "sequence": self.sequence,
            "revision": self.revision,
            "change": self.change,
            "kind": self.kind,
            "body": orjson.Fragment(self.body),
            "ack": self.ack,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.as_dict())

    def packed(self) -> bytes:
        """The stream fields' values joined by NUL, body last (the publish
        script's wire format; none of the values can contain a NUL)."""
        return b"\0".join(
            (
                self.session.encode(),
                self.row.encode(),
                b"%d" % self.sequence,
                b"%d" % self.revision,
                b"%d" % self.change,
                self.kind.encode(),
                b"1" if self.ack else b"0",
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
    )


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
    )
