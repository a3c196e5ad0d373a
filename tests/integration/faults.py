"""Tools of the writer's fault tests: writer processes to kill, a private Redis
to restart, a known workload with poison mixed in, and the checks that compare
PostgreSQL and Redis with what was produced.

The reference semantics here are written from the contract alone (not from
the writer's code): a row is created by its first entry with the next
sequence of its session and revision 0; a later upsert replaces kind and body
and adds one to revision; a later append changes nothing.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg
import redis as redis_sync

from producers.keys import GROUP, Keys

ROWCAST = str(Path(sys.executable).with_name("rowcast"))
SHARD = 0


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


# --------------------------------------------------------------------------
# Processes


class WriterProcess:
    """One ``rowcast writer`` subprocess with its log (JSON lines on stderr)."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in reap()
        self.proc = subprocess.Popen(
            [ROWCAST, "writer"], env=env, stdout=subprocess.DEVNULL, stderr=self._log
        )
        self.pid = self.proc.pid

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for raw in self.log_path.read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                out.append(orjson.loads(raw))
        return out

    def messages(self) -> list[str]:
        return [str(line.get("msg", "")) for line in self.lines()]

    def count(self, fragment: str) -> int:
        return sum(fragment in m for m in self.messages())

    def leading(self) -> int:
        """How many times this process started leading a shard."""
        return self.count("leading with fence")

    def wait_leading(self, times: int = 1, timeout: float = 15.0) -> None:
        def check() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"writer {self.pid} exited: {self.tail()}")
            return self.leading() >= times

        wait_for(f"writer {self.pid} to lead", check, timeout)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def reap(self) -> None:
        """Make sure the process is gone (continued first, in case a test
        stopped it) and close its log."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
                os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()

    def tail(self, n: int = 15) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])


class Writers:
    """Starts writer processes for one test and reaps every one of them."""

    def __init__(self, tmp: Path, redis_url: str, db_url: str, prefix: str) -> None:
        self.tmp = tmp
        # Nothing of the caller's rowcast configuration (metrics port, shards...).
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ROWCAST_")},
            "ROWCAST_REDIS_URL": redis_url,
            "ROWCAST_DATABASE_URL": db_url,
            "ROWCAST_PREFIX": prefix,
            "ROWCAST_LEASE_MS": "1000",
        }
        self.started: list[WriterProcess] = []

    def start(self, **env: str) -> WriterProcess:
        w = WriterProcess({**self.env, **env}, self.tmp / f"writer-{len(self.started)}.log")
        self.started.append(w)
        return w

    def reap(self) -> None:
        for w in self.started:
            w.reap()

    def logs(self) -> str:
        return "\n".join(f"--- writer {w.pid}\n{w.tail()}" for w in self.started)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of the test's own, without persistence: a restart loses
    everything, as an unconfigured production Redis would."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def start(self) -> None:
        log = open(self.tmp / f"redis-{self.restarts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
                "--dir", str(self.tmp),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        self.restarts += 1

        def ping() -> bool:
            try:
                with redis_sync.Redis.from_url(self.url, socket_timeout=1) as r:
                    return bool(r.ping())
            except redis_sync.exceptions.ConnectionError:
                return False

        wait_for("the private redis-server to answer", ping, 15)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def client(self) -> redis_sync.Redis:
        return redis_sync.Redis.from_url(self.url)


# --------------------------------------------------------------------------
# The workload


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


# --------------------------------------------------------------------------
# What PostgreSQL and Redis must hold


@dataclass
class Expected:
    rows: dict[tuple[str, str], dict[str, Any]]
    order: dict[str, list[str]]  # each session's rows in first-appearance order


def expected(items: list[Pushed]) -> Expected:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    order: dict[str, list[str]] = {}
    for it in items:
        if it.expect != "apply":
            continue
        f = it.fields
        session, row = it.key
        cur = rows.get((session, row))
        if cur is None:
            rows[(session, row)] = {"kind": f["kind"].decode(), "body": f["body"], "revision": 0}
            order.setdefault(session, []).append(row)
        elif f["op"] == b"upsert":
            cur.update(kind=f["kind"].decode(), body=f["body"], revision=cur["revision"] + 1)
    return Expected(rows, order)


def stored_rows(db_url: str) -> dict[tuple[str, str], dict[str, Any]]:
    with psycopg.connect(db_url) as c:
        cur = c.execute(
            "SELECT session_id, row_id, sequence, revision, change, kind, body::text"
            " FROM rowcast.rows"
        )
        return {
            (s, r): {"sequence": q, "revision": v, "change": ch, "kind": k, "body": b}
            for s, r, q, v, ch, k, b in cur
        }


def check_heads(db_url: str) -> None:
    """Each session: sequences 0..n-1, unique change numbers, heads matching."""
    with psycopg.connect(db_url) as c:
        bad = c.execute(
            """
            SELECT h.session_id, h.next_sequence, h.last_change,
                   count(r.row_id), coalesce(max(r.sequence), -1),
                   count(DISTINCT r.sequence), count(DISTINCT r.change),
                   coalesce(max(r.change), 0)
              FROM rowcast.sessions h
              LEFT JOIN rowcast.rows r ON r.session_id = h.session_id
             GROUP BY h.session_id, h.next_sequence, h.last_change
            HAVING h.next_sequence <> count(r.row_id)
                OR coalesce(max(r.sequence), -1) <> count(r.row_id) - 1
                OR count(DISTINCT r.sequence) <> count(r.row_id)
                OR count(DISTINCT r.change) <> count(r.row_id)
                OR h.last_change <> coalesce(max(r.change), 0)
            """
        ).fetchall()
    assert not bad, f"sessions violating the invariants: {bad[:5]}"


def check_rows(
    db_url: str, items: list[Pushed], tag: str | None = None
) -> dict[tuple[str, str], dict[str, Any]]:
    """PostgreSQL holds exactly what the pushed entries say: nothing lost or
    duplicated, sequences in first-appearance order, last bodies, revisions.
    With ``tag``, only the sessions whose id starts with ``tag-`` are compared."""
    want = expected(items)
    got = stored_rows(db_url)
    if tag is not None:
        got = {k: v for k, v in got.items() if k[0].startswith(f"{tag}-")}
        want.rows = {k: v for k, v in want.rows.items() if k[0].startswith(f"{tag}-")}
        want.order = {k: v for k, v in want.order.items() if k.startswith(f"{tag}-")}
    missing = sorted(set(want.rows) - set(got))
    extra = sorted(set(got) - set(want.rows))
    assert not missing, f"{len(missing)} rows lost, e.g. {missing[:5]}"
    assert not extra, f"{len(extra)} rows that were never produced, e.g. {extra[:5]}"
    for session, rows in want.order.items():
        seqs = [got[(session, r)]["sequence"] for r in rows]
        assert seqs == list(range(len(rows))), f"session {session}: sequences {seqs[:20]}..."
    wrong = [
        (key, w, got[key])
        for key, w in want.rows.items()
        if (w["kind"], orjson.loads(w["body"]), w["revision"])
        != (got[key]["kind"], orjson.loads(got[key]["body"]), got[key]["revision"])
    ]
    assert not wrong, f"{len(wrong)} rows with a wrong final state, e.g. {wrong[:3]}"
    check_heads(db_url)
    return got


def rows_stream(r: redis_sync.Redis, prefix: str) -> list[dict[bytes, bytes]]:
    out: list[dict[bytes, bytes]] = []
    start = "-"
    key = Keys(prefix).rows(SHARD)
    while True:
        chunk: Any = r.xrange(key, start, "+", count=5000)
        out += [f for _, f in chunk]
        if len(chunk) < 5000:
            return out
        last = chunk[-1][0].decode()
        ms, seq = last.split("-")
        start = f"{ms}-{int(seq) + 1}"


def check_published(
    r: redis_sync.Redis,
    prefix: str,
    got: dict[tuple[str, str], dict[str, Any]],
    announced: set[tuple[str, str, int]] | None,
) -> list[tuple[str, int, int]]:
    """Every row's final change reached ``P:{N}:rows`` (and ``P:rows`` when
    ``announced`` is given). Returns the places where a session's change
    numbers went backwards in ``P:{N}:rows`` (re-publishing after a crash
    repeats changes; it should never go back)."""
    entries = rows_stream(r, prefix)
    streamed = {(f[b"session"].decode(), f[b"row"].decode(), int(f[b"change"])) for f in entries}
    final = {(s, row, v["change"]) for (s, row), v in got.items()}
    missing = sorted(final - streamed)
    assert not missing, f"{len(missing)} final changes missing from P:{{N}}:rows: {missing[:5]}"
    if announced is not None:
        missing = sorted(final - announced)
        assert not missing, f"{len(missing)} final changes never published: {missing[:5]}"
    backwards = []
    last: dict[str, int] = {}
    for f in entries:
        s, ch = f[b"session"].decode(), int(f[b"change"])
        if ch < last.get(s, 0):
            backwards.append((s, last[s], ch))
        last[s] = max(ch, last.get(s, 0))
    return backwards


def wait_applied(
    db_url: str,
    r: redis_sync.Redis,
    prefix: str,
    last_id: str,
    timeout: float,
    writers: Writers,
) -> None:
    """Until PostgreSQL's tracking record reached ``last_id`` and nothing is
    pending in the group (every batch's Redis side effects went out). Fails
    at once when no writer process is left running."""
    stream = Keys(prefix).entries(SHARD)
    want = tuple(int(x) for x in last_id.split("-"))

    def done() -> bool:
        if all(w.proc.poll() is not None for w in writers.started):
            raise AssertionError(f"every writer exited\n{writers.logs()}")
        with psycopg.connect(db_url) as c:
            row = c.execute(
                "SELECT last_ms, last_seq FROM rowcast.offsets WHERE stream = %s", (stream,)
            ).fetchone()
        if row is None or tuple(row) < want:
            return False
        try:
            return int(r.xpending(stream, GROUP)["pending"]) == 0
        except redis_sync.exceptions.ResponseError:
            return False

    try:
        wait_for(f"entries up to {last_id} to be applied", done, timeout, every=0.1)
    except AssertionError as e:
        if "every writer exited" in str(e):
            raise
        raise AssertionError(f"{e}\n{writers.logs()}") from None


def receipts(r: redis_sync.Redis, prefix: str, token: str) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in r.lrange(Keys(prefix).reply(SHARD, token), 0, -1)]


def check_receipts(
    r: redis_sync.Redis,
    prefix: str,
    items: list[Pushed],
    got: dict[tuple[str, str], dict[str, Any]],
) -> int:
    """Every entry that asked for a receipt with a valid token has one: ok with
    its row's sequence when stored, an error when refused. Returns how many
    tokens received more than one receipt (redelivery after a crash)."""
    repeated = 0
    for it in items:
        token = it.reply
        if token is None or token == "not a token!":
            continue
        rs = receipts(r, prefix, token)
        assert rs, f"no receipt for {it.fields} ({it.id})"
        repeated += len(rs) > 1
        if it.expect == "apply":
            row = got[it.key]
            for x in rs:
                assert x["ok"] is True, x
                assert (x["session"], x["row"], x["sequence"]) == (*it.key, row["sequence"]), x
        else:
            assert all(x["ok"] is False and x["error"] for x in rs), rs
    return repeated


def check_dead(r: redis_sync.Redis, prefix: str, items: list[Pushed]) -> int:
    """Every refused entry is in ``P:{N}:dead`` with a reason and its original
    fields byte for byte; nothing else is. Returns the number of repeats."""
    dead: Any = r.xrange(Keys(prefix).dead(SHARD), "-", "+")
    by_source: dict[str, list[dict[bytes, bytes]]] = {}
    for _, f in dead:
        by_source.setdefault(f[b"source"].decode(), []).append(f)
    poison = {it.id: it for it in items if it.expect != "apply"}
    missing = sorted(set(poison) - set(by_source))
    assert not missing, f"dead letters missing for {[poison[i].fields for i in missing]}"
    unexpected = sorted(set(by_source) - set(poison))
    assert not unexpected, f"entries dead-lettered by mistake: {by_source[unexpected[0]]}"
    for source, letters in by_source.items():
        for f in letters:
            assert f[b"error"], f
            original = {k.decode(): v for k, v in f.items() if k not in (b"error", b"source")}
            assert original == poison[source].fields, (original, poison[source].fields)
    return sum(len(v) - 1 for v in by_source.values())


def refused_by_postgres(r: redis_sync.Redis, prefix: str) -> set[str]:
    """Ids of the entries dead-lettered because PostgreSQL refused them."""
    dead: Any = r.xrange(Keys(prefix).dead(SHARD), "-", "+")
    return {f[b"source"].decode() for _, f in dead if f[b"error"].startswith(b"PostgreSQL refused")}


def terminate_backends(db_url: str) -> int:
    """pg_terminate_backend on every connection of the writer to this database."""
    dbname = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    with psycopg.connect(db_url, autocommit=True) as c:
        rows = c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'rowcast-writer' AND datname = %s"
            " AND pid <> pg_backend_pid()",
            (dbname,),
        ).fetchall()
    return sum(1 for (ok,) in rows if ok)


def lease_holder(r: redis_sync.Redis, prefix: str) -> str | None:
    raw: Any = r.get(Keys(prefix).lease(SHARD))
    return raw.decode() if raw is not None else None


def holder_pid(holder: str | None) -> int | None:
    """The pid in a holder id ``host:pid:random``."""
    return None if holder is None else int(holder.split(":")[-2])


@contextlib.contextmanager
def seeded(name: str) -> Iterator[random.Random]:
    """A random source whose seed is printed (pytest shows it on failure);
    ROWCAST_FAULT_SEED replays a run."""
    seed = int(os.environ.get("ROWCAST_FAULT_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"{name}: seed {seed} (ROWCAST_FAULT_SEED={seed} replays it)")
    yield random.Random(seed)


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
