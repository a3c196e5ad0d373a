"""The workload of the writer's fault tests: appends and upserts over many
sessions reproducible from a printed seed, with poison mixed in; and the
threads that produce it to Redis and listen to what is published.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis as redis_sync

from rowcast.contract.keys import Keys
from tests.integration.processes import SHARD, wait_for


@contextlib.contextmanager
def seeded(name: str) -> Iterator[random.Random]:
    """A random source whose seed is printed (pytest shows it on failure);
    ROWCAST_FAULT_SEED replays a run."""
    seed = int(os.environ.get("ROWCAST_FAULT_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"{name}: seed {seed} (ROWCAST_FAULT_SEED={seed} replays it)")
    yield random.Random(seed)


@dataclass
class Pushed:
    """One entry as pushed: its fields, what must become of it, and its id."""

    fields: dict[str, bytes]
    expect: str = "apply"  # "apply", "dead" (refused by the writer's checks) or "reject" (by PG)
    id: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return self.fields["session"].decode(), self.fields["row"].decode()

    @property
    def reply(self) -> str | None:
        raw = self.fields.get("reply")
        return raw.decode() if raw is not None else None


def _fields(
    op: str, session: str, row: str, kind: str, body: Any, reply: str | None = None
) -> dict[str, bytes]:
    out = {
        "op": op.encode(),
        "session": session.encode(),
        "row": row.encode(),
        "kind": kind.encode(),
        "body": body if isinstance(body, bytes) else orjson.dumps(body),
    }
    if reply is not None:
        out["reply"] = reply.encode()
    return out


def entry(
    op: str, session: str, row: str, body: bytes, reply: str | None = None, expect: str = "apply"
) -> Pushed:
    fields = {"op": op.encode(), "session": session.encode(), "row": row.encode(),
              "kind": b"user", "body": body}  # fmt: skip
    if reply is not None:
        fields["reply"] = reply.encode()
    return Pushed(fields, expect)


@dataclass
class Workload:
    """Appends and upserts over many sessions, reproducible from a seed."""

    rng: random.Random
    tag: str
    sessions: int = 50
    receipt_share: float = 0.03
    known: dict[str, list[str]] = field(default_factory=dict)
    counter: int = 0

    def entries(self, n: int) -> list[Pushed]:
        out = []
        for _ in range(n):
            self.counter += 1
            session = f"{self.tag}-s{self.rng.randrange(self.sessions)}"
            rows = self.known.setdefault(session, [])
            roll = self.rng.random()
            if not rows or roll < 0.55:
                row, op = f"r{self.counter}", self.rng.choice(["append", "append", "upsert"])
                rows.append(row)
            elif roll < 0.92:
                row, op = self.rng.choice(rows[-5:]), "upsert"  # a streaming row
            else:
                row, op = self.rng.choice(rows), "append"  # a producer's retry: a duplicate
            kind = self.rng.choice(["user", "assistant", "tool"])
            body = {"n": self.counter, "text": f"{op} {row} #{self.counter}", "ok": True}
            reply = None
            if self.rng.random() < self.receipt_share:
                reply = f"{self.tag}-{self.counter}"
            out.append(Pushed(_fields(op, session, row, kind, body, reply)))
        return out

    def fresh(self, n: int) -> list[Pushed]:
        """Appends of new rows, each asking for a receipt."""
        out = []
        for _ in range(n):
            self.counter += 1
            session = f"{self.tag}-s{self.rng.randrange(self.sessions)}"
            row = f"r{self.counter}"
            self.known.setdefault(session, []).append(row)
            body = {"n": self.counter}
            reply = f"{self.tag}-{self.counter}"
            out.append(Pushed(_fields("append", session, row, "user", body, reply)))
        return out

    def poison(self) -> list[Pushed]:
        """Entries that can never be persisted; one of each kind of refusal."""
        t, s = self.tag, f"{self.tag}-s0"
        self.counter += 1
        c = self.counter
        dead = [
            {k: v for k, v in _fields("append", s, f"p{c}a", "user", {}).items() if k != "body"},
            _fields("append", s, f"p{c}b", "user", b'{"broken": ', reply=f"{t}-p{c}b"),
            _fields("delete", s, f"p{c}c", "user", {"x": 1}),
            _fields("append", "s" * 201, f"p{c}d", "user", {"x": 1}, reply=f"{t}-p{c}d"),
            _fields("append", s, f"p{c}\ne", "user", {"x": 1}),
            _fields("append", s, f"p{c}f", "user", {"x": 1}, reply="not a token!"),
            _fields("append", s, f"p{c}g", "user", b'{"lone": "\\ud800"}'),
            _fields("upsert", s, f"p{c}h", "", {"x": 1}),
        ]
        # Bodies that pass the writer's JSON checks but PostgreSQL's jsonb
        # refuses ("value overflows numeric format"): isolated under savepoints.
        # (Should the writer's checks learn numeric's limits, they become plain
        # dead letters: the tests accept either refusal for these.)
        huge = b'{"n": 1e1000000}'
        rejected = [
            _fields("append", s, f"p{c}i", "user", huge, reply=f"{t}-p{c}i"),
            _fields("upsert", f"{t}-s1", f"p{c}j", "tool", huge),
        ]
        # An upsert of an existing row with such a body: the row must keep its
        # earlier state. No later entry touches that row (a later upsert in the
        # same batch would be merged over it: see the test of that case).
        existing = self.known.get(f"{t}-s2")
        if existing:
            row = existing.pop(0)
            rejected.append(_fields("upsert", f"{t}-s2", row, "tool", huge))
        return [Pushed(f, "dead") for f in dead] + [Pushed(f, "reject") for f in rejected]


def push(r: redis_sync.Redis, stream: str, items: list[Pushed]) -> None:
    """XADD in one round trip, in order; records each entry's id."""
    pipe = r.pipeline(transaction=False)
    for it in items:
        pipe.xadd(stream, it.fields)  # type: ignore[arg-type]
    for it, raw in zip(items, pipe.execute(), strict=True):
        it.id = raw.decode()


class Producer(threading.Thread):
    """Pushes a list of entries in small bursts with pauses, so the whole run
    spans the faults injected meanwhile. Stops at the first Redis error."""

    def __init__(
        self, url: str, stream: str, items: list[Pushed], burst: int, pause: float
    ) -> None:
        super().__init__(daemon=True)
        self.url, self.stream, self.items = url, stream, items
        self.burst, self.pause = burst, pause
        self.pushed: list[Pushed] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        r = redis_sync.Redis.from_url(self.url)
        try:
            for i in range(0, len(self.items), self.burst):
                chunk = self.items[i : i + self.burst]
                push(r, self.stream, chunk)
                self.pushed += chunk
                time.sleep(self.pause)
        except Exception as e:
            self.error = e
        finally:
            r.close()

    def finish(self, timeout: float = 60) -> list[Pushed]:
        self.join(timeout)
        assert not self.is_alive(), "the producer did not finish"
        if self.error is not None:
            raise self.error
        return self.pushed


class Subscriber(threading.Thread):
    """Collects every ``P:rows`` message; subscribed before it returns from start()."""

    def __init__(self, url: str, channel: str) -> None:
        super().__init__(daemon=True)
        self.r = redis_sync.Redis.from_url(url)
        self.ps = self.r.pubsub(ignore_subscribe_messages=True)
        self.ps.subscribe(channel)
        wait_for("the subscription", lambda: self.ps.get_message(timeout=0.1) is None, 5)
        self.messages: list[dict[str, Any]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            m = self.ps.get_message(timeout=0.1)
            if m is not None and m["type"] == "message":
                self.messages.append(orjson.loads(m["data"]))

    def close(self) -> list[dict[str, Any]]:
        self.halt.set()
        self.join(10)
        self.ps.close()
        self.r.close()
        return self.messages

    def changes(self) -> set[tuple[str, str, int]]:
        return {(c["session"], c["row"], c["change"]) for m in self.messages for c in m["changes"]}


class AckedProducer(threading.Thread):
    """Pushes entries a few at a time, each asking for a receipt, and waits for
    the receipts of one chunk before pushing the next: ``acked`` is exactly
    what the writer confirmed. Stops at the first Redis error or silence."""

    def __init__(
        self, url: str, prefix: str, items: list[Pushed], chunk: int = 10, timeout: float = 5.0
    ) -> None:
        super().__init__(daemon=True)
        self.url, self.keys, self.items = url, Keys(prefix), items
        self.chunk, self.timeout = chunk, timeout
        self.acked: list[tuple[Pushed, dict[str, Any]]] = []
        self.stopped_by: str = ""

    def run(self) -> None:
        r = redis_sync.Redis.from_url(self.url, socket_timeout=self.timeout + 2)
        try:
            for i in range(0, len(self.items), self.chunk):
                chunk = self.items[i : i + self.chunk]
                push(r, self.keys.entries(SHARD), chunk)
                for it in chunk:
                    assert it.reply is not None
                    got = r.blpop([self.keys.reply(SHARD, it.reply)], timeout=self.timeout)
                    if got is None:
                        self.stopped_by = f"no receipt for {it.id}"
                        return
                    self.acked.append((it, orjson.loads(got[1])))
            self.stopped_by = "done"
        except redis_sync.exceptions.RedisError as e:
            self.stopped_by = f"{type(e).__name__}: {e}"
        finally:
            r.close()
