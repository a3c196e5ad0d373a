"""Synthetic connectors for ``rowcast up --demo``: a few agent sessions that look
alive — user prompts, assistant text streaming in as extends of one row, tool
calls moving from pending to running to completed (sometimes failed), and now
and then an entry that waits for its receipt.

Session ids are fixed (``demo:...``) and row ids carry a token of this run, so
a restarted ``rowcast up --demo`` continues the same sessions: their
sequences go on from where they stopped.

Row bodies use the same vocabulary as the bundled connectors
(``producers/connectors``): ``user``/``assistant``/``thinking`` rows carry
``text``; ``tool`` rows carry ``name``, ``input``, ``status`` and ``output``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rowcast.contract.errors import RowcastError
from rowcast.producers.producer import Producer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToolCall:
    """One tool call of a turn."""

    name: str
    input: dict[str, object]
    output: str
    fails: bool = False


@dataclass(frozen=True)
class Turn:
    prompt: str
    thinking: str
    steps: Sequence[ToolCall]
    answer: str


@dataclass(frozen=True)
class Script:
    session: str
    turns: Sequence[Turn]


SCRIPTS: tuple[Script, ...] = (
    Script(
        "demo:fix-flaky-test",
        (
            Turn(
                "test_reconnect in tests/test_client.py fails about one run in ten. Can you find"
                " out why?",
                "A test that fails sometimes usually depends on timing. Read the test first,"
                " then run it in a loop to reproduce.",
                (
                    ToolCall(
                        "Read",
                        {"file_path": "tests/test_client.py", "offset": 120, "limit": 40},
                        "121  async def test_reconnect(server):\n122      client = await"
                        " connect(server.url)\n123      await server.restart()\n124      await"
                        " asyncio.sleep(0.1)\n125      assert client.connected",
                    ),
                    ToolCall(
                        "Bash",
                        {"command": "for i in $(seq 20); do pytest -qk reconnect || break; done"},
                        "....F\nFAILED tests/test_client.py::test_reconnect - assert False\n"
                        "1 failed, 4 passed in 3.02s",
                        fails=True,
                    ),
                ),
                "Found it: the test sleeps a fixed 100 ms after restarting the server and then"
                " asserts the client is connected, but the client's reconnect backoff starts"
                " at 50 ms with jitter up to 2x, so on a slow run it has not reconnected yet."
                " I'll make the test wait for the `connected` event instead of sleeping.",
            ),
            Turn(
                "Yes, do that, and make sure it can't hang forever.",
                "Use asyncio.wait_for around the event so a real failure still ends the test.",
                (
                    ToolCall(
                        "Edit",
                        {
                            "file_path": "tests/test_client.py",
                            "old_string": "    await asyncio.sleep(0.1)\n",
                            "new_string": "    await asyncio.wait_for(client.connected_event"
                            ".wait(), timeout=5)\n",
                        },
                        "The file tests/test_client.py has been updated.",
                    ),
                    ToolCall(
                        "Bash",
                        {"command": "for i in $(seq 50); do pytest -qk reconnect || break; done"},
                        "1 passed in 0.41s\n" * 3 + "...\n1 passed in 0.39s",
                    ),
                ),
                "Done. The test now waits for the reconnect (at most 5 s) instead of guessing;"
                " 50 runs in a row pass.",
            ),
        ),
    ),
    Script(
        "demo:add-pagination",
        (
            Turn(
                "Add cursor pagination to GET /api/orders: `before` and `limit`, newest first.",
                "Look at the handler and the query; keyset pagination on (created_at, id) keeps"
                " pages stable while rows are inserted.",
                (
                    ToolCall(
                        "Grep",
                        {"pattern": "def list_orders", "path": "app/"},
                        "app/api/orders.py:42:async def list_orders(request):",
                    ),
                    ToolCall(
                        "Read",
                        {"file_path": "app/api/orders.py"},
                        "42  async def list_orders(request):\n43      rows = await db.fetch("
                        "'SELECT * FROM orders ORDER BY created_at DESC')\n44      return"
                        " JSONResponse([dict(r) for r in rows])",
                    ),
                    ToolCall(
                        "Edit",
                        {
                            "file_path": "app/api/orders.py",
                            "old_string": "ORDER BY created_at DESC'",
                            "new_string": "WHERE (created_at, id) < ($1, $2) ORDER BY"
                            " created_at DESC, id DESC LIMIT $3'",
                        },
                        "The file app/api/orders.py has been updated.",
                    ),
                    ToolCall(
                        "Bash",
                        {"command": "pytest -q tests/api/test_orders.py"},
                        "........\n8 passed in 1.88s",
                    ),
                ),
                "GET /api/orders now takes `before` (an opaque cursor of created_at and id) and"
                " `limit` (1-200, default 50), and returns `next` when there are older orders."
                " Keyset pagination means a page never shifts when new orders arrive.",
            ),
        ),
    ),
    Script(
        "demo:write-release-notes",
        (
            Turn(
                "Draft release notes for v2.4 from the merged PRs since v2.3.",
                "List the merge commits between the tags, group them by label.",
                (
                    ToolCall(
                        "Bash",
                        {"command": "git log --merges --oneline v2.3..HEAD"},
                        "a1f3c2e Merge #412: retry uploads on 503\n"
                        "9bd0e41 Merge #409: dark mode for the settings page\n"
                        "77c1a90 Merge #405: drop Python 3.9",
                    ),
                    ToolCall(
                        "WebFetch",
                        {"url": "https://example.invalid/pulls/412"},
                        "error: network access is disabled",
                        fails=True,
                    ),
                ),
                "## v2.4\n\n**Features**\n- Dark mode for the settings page (#409)\n\n"
                "**Fixes**\n- Uploads are retried when the server answers 503 (#412)\n\n"
                "**Breaking**\n- Python 3.9 is no longer supported (#405)",
            ),
        ),
    ),
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _chunks(text: str, rng: random.Random) -> list[str]:
    """``text`` in pieces, as a model streams it (a few words at a time)."""
    words = text.split(" ")
    out, i = [], 0
    while i < len(words):
        n = rng.randint(2, 6)
        out.append(("" if i == 0 else " ") + " ".join(words[i : i + n]))
        i += n
    return out


@dataclass(eq=False)
class DemoSession:
    p: Producer
    script: Script
    run: str
    rng: random.Random
    speed: float
    n: int = field(default=0, init=False)
    turns: int = field(default=0, init=False)

    def _row(self, what: str) -> str:
        self.n += 1
        return f"{self.run}-{self.n:05d}-{what}"

    async def _pause(self, low: float, high: float) -> None:
        await asyncio.sleep(self.rng.uniform(low, high) * self.speed)

    async def play_turn(self, turn: Turn) -> None:
        s = self.script.session
        self.turns += 1
        await self.p.append(s, self._row("user"), "user", {"text": turn.prompt, "ts": _now()})
        await self._pause(0.3, 0.8)
        await self.p.append(s, self._row("thinking"), "thinking", {"text": turn.thinking})
        for step in turn.steps:
            await self._tool(step)
        await self._stream(turn.answer)

    async def _tool(self, step: ToolCall) -> None:
        s, row = self.script.session, self._row("tool")
        body: dict[str, object] = {"name": step.name, "input": step.input, "status": "pending"}
        await self.p.upsert(s, row, "tool", body)
        await self._pause(0.2, 0.5)
        await self.p.upsert(s, row, "tool", {**body, "status": "running", "started": _now()})
        await self._pause(0.4, 1.5)
        done = {
            **body,
            "status": "failed" if step.fails else "completed",
            "output": step.output,
            "ended": _now(),
        }
        # Now and then a connector needs to know its row is stored before it goes on
        # (for example before acknowledging its own source): wait for the receipt.
        if self.rng.random() < 0.3:
            receipt = await self.p.upsert(s, row, "tool", done, wait=True, timeout=30.0)
            log.debug("demo %s: %s stored at sequence %d", s, row, receipt.sequence)
        else:
            await self.p.upsert(s, row, "tool", done)

    async def _stream(self, text: str) -> None:
        """The answer grows by extends: each carries only its new words (the
        writer, PostgreSQL and the clients that ask for deltas never move the
        whole text again); the last one marks it finished."""
        s, row = self.script.session, self._row("assistant")
        await self.p.append(s, row, "assistant", {"text": "", "streaming": True})
        for part in _chunks(text, self.rng):
            await self.p.extend(s, row, "assistant", {"text": part})
            await self._pause(0.05, 0.2)
        receipt = await self.p.extend(
            s, row, "assistant", {"streaming": False, "ts": _now()}, wait=True, timeout=30.0
        )
        log.debug("demo %s: answer stored at sequence %d", s, receipt.sequence)

    async def run_forever(self) -> None:
        turns = self.script.turns
        i = 0
        while True:
            await self.play_turn(turns[i % len(turns)])
            i += 1
            await self._pause(1.5, 4.0)


async def run_demo(producer: Producer, speed: float = 1.0, seed: int | None = None) -> None:
    """Play every script until cancelled; Redis outages are waited out."""
    run = secrets.token_hex(3)
    rng = random.Random(seed)
    log.info("demo connectors started (run %s): sessions %s", run,
             ", ".join(s.session for s in SCRIPTS))  # fmt: skip

    async def keep_playing(script: Script, delay: float) -> None:
        await asyncio.sleep(delay)
        session = DemoSession(producer, script, run, random.Random(rng.random()), speed)
        backoff = 0.5
        while True:
            try:
                await session.run_forever()
            except RowcastError as e:  # Unavailable, ReceiptTimeout, Rejected
                log.warning("demo %s: %s; retrying in %.1fs", script.session, e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async with asyncio.TaskGroup() as tg:
        for i, script in enumerate(SCRIPTS):
            tg.create_task(keep_playing(script, delay=0.4 * i * speed))
