"""A memo of values that every connection of a session would otherwise make
again (a change's frame, a merged delta): kept by key, and forgotten whole
when it holds too many entries or bytes, so it never grows without bound."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class Memo(Generic[V]):
    __slots__ = ("_bytes", "_values", "max_bytes", "max_items")

    def __init__(self, max_items: int = 4096, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._values: dict[Hashable, V] = {}
        self._bytes = 0

    def get(self, key: Hashable) -> V | None:
        return self._values.get(key)

    def put(self, key: Hashable, value: V, size: int) -> None:
        """``size``: the bytes this entry keeps alive (its value's and key's)."""
        if len(self._values) >= self.max_items or self._bytes > self.max_bytes:
            self._values.clear()
            self._bytes = 0
        self._values[key] = value
        self._bytes += size
