"""Prompts typed into Claude Code while the agent is busy. 2.1 writes such a
prompt first as a ``queue-operation`` ``enqueue`` line (``content``), then, when it
is taken, ``dequeue`` and the prompt again as a user line (or a ``queued_command``
attachment). The prompt is shown as soon as it is typed, as a row marked
``queued``, and its delivery replaces that row (same id) instead of adding one;
``remove`` (taken back by the user) marks the row ``queued: "removed"``."""

from __future__ import annotations

import hashlib
from typing import Any

from rowcast.producers.connectors.row import RowOp, text_body

_MAX_WAITING = 100


def _key(text: str) -> str:
    return hashlib.sha1(text.strip().encode("utf-8", "replace")).hexdigest()[:16]


class Queue:
    def __init__(self, saved: dict[str, Any]) -> None:
        # the key of each waiting prompt's text -> its row id
        self.waiting: dict[str, str] = dict(saved.get("queued") or {})

    def snapshot(self) -> dict[str, Any]:
        return {"queued": self.waiting}

    def operation(self, rec: dict[str, Any], offset: int) -> list[RowOp]:
        op, text, ts = rec.get("operation"), rec.get("content"), rec.get("timestamp")
        if not isinstance(text, str) or not text.strip():
            return []  # dequeue: the prompt itself follows
        if op == "enqueue":
            row = f"queued:{offset}"
            self.waiting[_key(text)] = row
            while len(self.waiting) > _MAX_WAITING:
                self.waiting.pop(next(iter(self.waiting)))
            return [RowOp("upsert", row, "user", text_body(text, ts=ts, queued=True))]
        if op == "remove":
            taken = self.waiting.pop(_key(text), None)
            if taken is not None:
                return [RowOp("upsert", taken, "user", text_body(text, ts=ts, queued="removed"))]
        return []

    def delivered(self, text: str) -> str | None:
        """The row of the queued prompt this text delivers, if it was queued."""
        return self.waiting.pop(_key(text), None) if self.waiting else None
