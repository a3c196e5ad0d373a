"""The item: one change as the broadcaster carries it.

Its JSON is encoded once, when it enters the process, and the same bytes are
shared by every connection that sends it; the numbers beside it are what the
cursor logic orders and deduplicates by.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from rowcast.contract.change import Change


@dataclass(frozen=True, slots=True)
class Item:
    change: int
    row: str
    ack: bool
    json: bytes
    """The change as the contract spells it, encoded."""


def from_change(c: Change) -> Item:
    return Item(c.change, c.row, c.ack, c.to_json())


def from_message_change(data: Mapping[str, Any]) -> Item:
    """One element of a ``P:rows`` message's ``changes`` (already decoded).

    Raises KeyError, TypeError or ValueError on a change that breaks the format.
    """
    change = data["change"]
    row = data["row"]
    if not isinstance(change, int) or isinstance(change, bool) or not isinstance(row, str):
        raise TypeError("change must be an integer and row a string")
    return Item(change, row, bool(data.get("ack", False)), orjson.dumps(data))
