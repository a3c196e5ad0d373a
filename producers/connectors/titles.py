"""A Claude Code session's titles: ``summary`` lines (a title Claude Code wrote for
the conversation ending at ``leafUuid``) and ``ai-title``/``custom-title`` lines.

A new session's file often starts with the summaries of *earlier* sessions (the
titles ``--resume`` lists), whose leaf is a message of another file: those are not
this conversation and make no row. A summary is shown once its leaf is a line of
this file, whether the leaf came before or comes after it."""

from __future__ import annotations

from typing import Any

from rowcast.producers.connectors.row import RowOp, text_body

_MAX_WAITING = 100
_PREFIX = 8
"""Hex digits of a uuid kept to recognise it: 9 bytes a line of saved state, and a
wrong match (a title shown that belongs elsewhere) needs two random uuids to share them."""


class Titles:
    def __init__(self, saved: dict[str, Any]) -> None:
        # summaries whose leaf has not been seen yet: leaf -> text
        self.waiting: dict[str, str] = dict(saved.get("summaries") or {})
        seen = str(saved.get("seen") or "")
        self.seen: set[str] = {seen[i : i + _PREFIX] for i in range(0, len(seen), _PREFIX)}
        self.title: str | None = saved.get("title")

    def snapshot(self) -> dict[str, Any]:
        return {"summaries": self.waiting, "seen": "".join(sorted(self.seen)), "title": self.title}

    def saw(self, uuid: str) -> list[RowOp]:
        """A message of this file: the summary waiting for it, if any, is shown now."""
        self.seen.add(uuid[:_PREFIX])
        text = self.waiting.pop(uuid, None)
        return [] if text is None else [_summary(uuid, text)]

    def summary(self, rec: dict[str, Any]) -> list[RowOp]:
        leaf, text = rec.get("leafUuid"), rec.get("summary")
        if not isinstance(text, str) or not isinstance(leaf, str) or not leaf:
            return []
        if leaf[:_PREFIX] in self.seen:
            return [_summary(leaf, text)]
        self.waiting[leaf] = text  # its leaf may come later in this file, or never
        while len(self.waiting) > _MAX_WAITING:
            self.waiting.pop(next(iter(self.waiting)))
        return []

    def named(self, rec: dict[str, Any]) -> list[RowOp]:
        text = rec.get("aiTitle") or rec.get("customTitle") or rec.get("title")
        if not isinstance(text, str) or not text.strip() or text == self.title:
            return []  # 2.1 writes the same title again after every turn
        self.title = text
        return [RowOp("upsert", "title", "summary", text_body(text, title=rec.get("type")))]


def _summary(leaf: str, text: str) -> RowOp:
    return RowOp("upsert", f"summary:{leaf}", "summary", text_body(text))
