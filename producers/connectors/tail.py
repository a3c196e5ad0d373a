"""Follow the transcript files under a folder: read the complete lines added
since last time, map them to rows, push them, and remember where we stopped.

- New files are found by rescanning the folder on every poll; appended lines
  are read from the saved byte offset. A line without its final newline is
  still being written: it waits for the next poll.
- The offset (and the mapper's small state, e.g. tool calls awaiting their
  results) is saved to the state file only after the rows read up to it were
  pushed. A crash in between re-reads those lines at the next start, which is
  harmless: row ids are stable, an append is then a duplicate and an upsert
  writes the same body again.
- A file whose inode changed, or that got shorter, is read again from the start.
- A line that is not JSON is reported (path:line) and skipped; so is a record
  the mapper cannot handle. Nothing in a transcript stops the follower.
- Redis being away is waited out: the same rows are pushed again, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import KW_ONLY, asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from rowcast.contract.entry import Entry
from rowcast.contract.errors import ConfigError, InvalidEntry, Unavailable
from rowcast.producers.connectors.row import RowOp, sanitize
from rowcast.producers.producer import Producer, make_entry

log = logging.getLogger(__name__)

STATE_VERSION = 1


class Mapper(Protocol):
    def feed(self, record: dict[str, Any], offset: int) -> list[RowOp]:
        """The row operations of one record (``offset``: its byte offset in the file)."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state to persist with the offset."""
        ...


@dataclass(frozen=True)
class Source:
    name: str
    session_of: Callable[[Path, Path], str | None]
    """(file, root) -> the session id of that file, or None when it is not a transcript."""
    new_mapper: Callable[[dict[str, Any] | None], Mapper]
    """Build a mapper, from a saved snapshot or afresh."""


@dataclass
class FileState:
    session: str
    dev: int
    ino: int
    offset: int = 0
    line: int = 0
    mapper: dict[str, Any] = field(default_factory=dict)


@dataclass
class Stats:
    lines: int = 0
    malformed: int = 0
    unmapped: int = 0
    pushed: int = 0


def state_path(data_dir: str | Path, source: str, root: Path) -> Path:
    """Where a follower of ``root`` keeps its offsets: one file per source and folder."""
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    return Path(data_dir) / "connectors" / f"{source}-{digest}.json"


@dataclass(eq=False)
class Tailer:
    source: Source
    root: Path
    state_file: Path
    producer: Producer
    _: KW_ONLY
    poll: float = 0.5
    chunk: int = 1 << 20
    max_line: int = 64 << 20
    since: float | None = None
    """A time (epoch seconds): files last written before it are not read, unless
    they were being followed already."""
    files: dict[str, FileState] = field(default_factory=dict, init=False)
    mappers: dict[str, Mapper] = field(default_factory=dict, init=False)
    stats: Stats = field(default_factory=lambda: Stats(), init=False)
    _sessions: dict[str, str | None] = field(default_factory=dict, init=False)
    _waiting_logged: bool = field(default=False, init=False)
    _dirty: bool = field(default=False, init=False)
    _saved_at: float = field(default=0.0, init=False)

    # --- state file -----------------------------------------------------------

    def load(self) -> None:
        try:
            data = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            log.warning("%s is unreadable (%s); reading every transcript again", self.state_file, e)
            return
        if data.get("version") != STATE_VERSION:
            log.warning("%s has an unknown version; reading every transcript again",
                        self.state_file)  # fmt: skip
            return
        for key, fs in (data.get("files") or {}).items():
            try:
                self.files[key] = FileState(**fs)
            except TypeError:
                log.warning("%s: bad entry for %s ignored", self.state_file, key)

    def save(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "version": STATE_VERSION,
            "source": self.source.name,
            "root": str(self.root),
            "files": {k: asdict(v) for k, v in sorted(self.files.items())},
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(data))
        os.replace(tmp, self.state_file)
        self._dirty = False
        self._saved_at = time.monotonic()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One follower per state file: a second one would only push everything twice."""
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.state_file.with_suffix(".lock"), "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise ConfigError(
                    f"another `rowcast connect {self.source.name}` is following {self.root}"
                ) from None
            yield

    # --- the loop -----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Follow until ``stop`` is set."""
        with self.locked():
            self.load()
            while not stop.is_set():
                pushed = await self.poll_once(stop)
                if pushed == 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.poll)

    async def poll_once(self, stop: asyncio.Event | None = None) -> int:
        """Read what is new in every file once; return the number of entries pushed."""
        pushed = 0
        seen = set()
        try:
            for key, path in self._scan():
                seen.add(key)
                if stop is not None and stop.is_set():
                    return pushed
                try:
                    pushed += await self._follow(key, path, stop)
                except OSError as e:  # unreadable or vanished file: try again next poll
                    log.warning("%s: %s", path, e)
                if self._dirty and time.monotonic() - self._saved_at > 1.0:
                    self.save()
            gone = [k for k in self.files if k not in seen]
            if gone and self.root.is_dir():
                for k in gone:
                    self.files.pop(k, None)
                    self.mappers.pop(k, None)
                self._dirty = True
        finally:
            if self._dirty:
                self.save()
        return pushed

    def _scan(self) -> list[tuple[str, Path]]:
        if not self.root.is_dir():
            if not self._waiting_logged:
                log.info("waiting for %s to appear", self.root)
                self._waiting_logged = True
            return []
        self._waiting_logged = False
        found: list[tuple[float, str, Path]] = []
        for dirpath, _dirs, names in os.walk(self.root):
            for name in names:
                if not name.endswith(".jsonl"):
                    continue
                path = Path(dirpath) / name
                key = str(path.relative_to(self.root))
                if key not in self._sessions:
                    self._sessions[key] = self.source.session_of(path, self.root)
                if self._sessions[key] is None:
                    continue
                try:
                    mtime = path.stat().st_mtime
                except OSError:
                    continue
                if self.since is not None and mtime < self.since and key not in self.files:
                    continue
                found.append((mtime, key, path))
        found.sort()  # oldest first: history arrives in about the order it happened
        return [(k, p) for _, k, p in found]

    async def _follow(self, key: str, path: Path, stop: asyncio.Event | None) -> int:
        st = path.stat()
        fs = self.files.get(key)
        if fs is not None and (
            (fs.dev, fs.ino) != (st.st_dev, st.st_ino) or st.st_size < fs.offset
        ):
            log.info("%s was replaced or truncated: reading it from the start", path)
            fs = None
        if fs is None:
            session = self._sessions.get(key) or self.source.session_of(path, self.root)
            if session is None:
                return 0
            fs = FileState(session, st.st_dev, st.st_ino)
            self.files[key] = fs
            self.mappers.pop(key, None)
        if st.st_size <= fs.offset:
            return 0
        data = self._read_lines(path, fs.offset)
        if data is None:
            return 0
        if isinstance(data, int):  # a line too long to take in: step over it
            fs.offset += data
            fs.line += 1
            self._dirty = True
            return 0
        mapper = self.mappers.get(key)
        if mapper is None:
            mapper = self.mappers[key] = self.source.new_mapper(fs.mapper or None)
        entries, lineno = self._map(path, fs, mapper, data)
        if entries and not await self._push(entries, stop):
            # Stopped before Redis came back: forget what was mapped; the saved offset
            # and mapper state still agree, and the lines are read again next time.
            self.mappers.pop(key, None)
            return 0
        # Saved (at the latest when this poll ends) only now that the rows are pushed.
        fs.offset += len(data)
        fs.line = lineno
        fs.mapper = mapper.snapshot()
        self._dirty = True
        self.stats.pushed += len(entries)
        return len(entries)

    def _read_lines(self, path: Path, offset: int) -> bytes | int | None:
        """Complete lines from ``offset`` (about ``chunk`` bytes of them); None when
        there is only a line still being written; the length of a line over
        ``max_line`` that is to be skipped."""
        with open(path, "rb") as f:
            f.seek(offset)
            buf = f.read(self.chunk)
            while b"\n" not in buf:
                if len(buf) >= self.max_line:
                    return self._skip_huge_line(f, buf, path, offset)
                more = f.read(self.chunk)
                if not more:
                    return None
                buf += more
        return buf[: buf.rindex(b"\n") + 1]

    def _skip_huge_line(self, f: Any, buf: bytes, path: Path, offset: int) -> int | None:
        size = len(buf)
        while True:
            more = f.read(self.chunk)
            if not more:
                return None
            size += len(more)
            if b"\n" in more:
                size -= len(more) - more.index(b"\n") - 1
                log.warning("%s: skipped a line of %d bytes at offset %d (over %d)",
                            path, size, offset, self.max_line)  # fmt: skip
                self.stats.malformed += 1
                return size

    def _map(
        self, path: Path, fs: FileState, mapper: Mapper, data: bytes
    ) -> tuple[list[Entry], int]:
        entries: list[Entry] = []
        lineno = fs.line
        pos = 0
        for raw in data.splitlines(keepends=True):
            at = fs.offset + pos
            pos += len(raw)
            lineno += 1
            line = raw.strip()
            if not line:
                continue
            self.stats.lines += 1
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                # orjson refuses a lone surrogate escape (\\ud800), which is valid
                # JSON text; the stdlib reads it, and sanitize() replaces it below.
                try:
                    record = json.loads(line)
                except ValueError:
                    self.stats.malformed += 1
                    log.warning("%s:%d: skipped a line that is not JSON (%s)", path, lineno, e)
                    continue
            if not isinstance(record, dict):
                self.stats.malformed += 1
                log.warning("%s:%d: skipped a line that is not a JSON object", path, lineno)
                continue
            try:
                ops = mapper.feed(record, at)
            except Exception as e:  # a shape we did not foresee: report it, never stop
                self.stats.unmapped += 1
                log.warning("%s:%d: skipped a %r record that could not be mapped (%s: %s)",
                            path, lineno, record.get("type"), type(e).__name__, e)  # fmt: skip
                continue
            for op in ops:
                try:
                    body = sanitize(op.body)
                    entries.append(
                        make_entry(op.op, fs.session, op.row, op.kind, body, self.producer.max_body)
                    )
                except InvalidEntry as e:
                    self.stats.unmapped += 1
                    log.warning("%s:%d: skipped row %r: %s", path, lineno, op.row, e)
        return entries, lineno

    async def _push(self, entries: list[Entry], stop: asyncio.Event | None) -> bool:
        delay = 0.2
        while True:
            try:
                await self.producer.push_many(entries)
                return True
            except Unavailable as e:
                log.warning("%s; retrying in %.1fs", e, delay)
            if stop is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    return False
            else:
                await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
