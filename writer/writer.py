"""The writer of one shard: lead (lease + fence), recover, then read, commit
and publish batches in a three-stage pipeline with one transaction in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from dataclasses import dataclass

from redis import exceptions as rexc
from redis.asyncio import Redis

from rowcast.contract.backoff import Backoff, sleep_unless
from rowcast.contract.connection import TRANSIENT_OR_OS
from rowcast.contract.errors import AlreadyApplied, Fenced, LeaseLost, Unavailable, one_line
from rowcast.contract.keys import GROUP, Keys
from rowcast.contract.streamid import StreamId, fmt
from rowcast.contract.streamid import parse as parse_id
from rowcast.writer.batch import (
    Dead,
    Plan,
    Read,
    Result,
    Valid,
    outcome,
    plans,
    recovery,
    recovery_rows,
    sort_out,
)
from rowcast.writer.cancellation import first_error, raise_if_cancelled
from rowcast.writer.fleet import Fleet
from rowcast.writer.lease import Lease
from rowcast.writer.metrics import METRICS
from rowcast.writer.publish import Outcome, Publisher
from rowcast.writer.store import Store

log = logging.getLogger(__name__)

# TRANSIENT: also a cluster between a master's death and its replica's promotion.
_TRANSIENT: tuple[type[BaseException], ...] = (Unavailable, AlreadyApplied, *TRANSIENT_OR_OS)


@dataclass(frozen=True)
class WriterConfig:
    keys: Keys
    shard: int
    database_url: str
    holder: str
    batch_max: int
    linger_ms: int
    lease_ms: int
    rows_maxlen: int
    receipt_ttl_ms: int
    max_body: int
    batch_bytes: int


Items = list[tuple[bytes, dict[bytes, bytes]]]


@dataclass(slots=True)
class Prepared:
    """A batch ready for its transaction."""

    items: Items
    valid: list[Valid]
    dead: list[Dead]
    todo: list[Plan]


@dataclass(slots=True)
class Committed:
    """A batch whose transaction committed: what PostgreSQL answered."""

    items: Items
    dead: list[Dead]
    pieces: list[tuple[Plan, list[Result]]]


class ShardWriter:
    """The loop of one shard. With a ``fleet`` it tries to lead the shard only
    while the fleet's plan gives it to this process, and hands it over (after
    the batch in hand) when the plan moves it elsewhere; without one it always
    tries (``rowcast writer --shard N``)."""

    def __init__(self, redis: Redis, cfg: WriterConfig, fleet: Fleet | None = None) -> None:
        self.redis = redis
        self.cfg = cfg
        self.fleet = fleet
        self.entries = cfg.keys.entries(cfg.shard)
        self.lease = Lease(redis, cfg.keys, cfg.shard, cfg.holder, cfg.lease_ms)
        self.publisher = Publisher(
            redis, cfg.keys, cfg.shard, cfg.rows_maxlen, cfg.receipt_ttl_ms, holder=cfg.holder
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Wait for the lease, lead until it is lost, handed over or ``stop``
        is set; repeat. Any error ends only this turn: the shard starts over
        (with backoff) while the other shards of the process go on.
        Cancellation always propagates."""
        backoff = Backoff()
        try:
            while not stop.is_set():
                raise_if_cancelled()
                try:
                    await self._turn(stop, backoff)
                except (Fenced, LeaseLost) as e:
                    raise_if_cancelled()
                    log.warning("shard %d: stepping down: %s", self.cfg.shard, one_line(e))
                    await self._idle(stop)
                except _TRANSIENT as e:
                    raise_if_cancelled()
                    log.warning("shard %d: %s; recovering", self.cfg.shard, one_line(e))
                    await backoff.wait(stop)
                except Exception:
                    # A cancel that arrived with the error (a task group reports
                    # the error) still wins.
                    raise_if_cancelled()
                    # A bug or a server answering the unexpected: say so loudly,
                    # then start over from the tracking record (nothing is lost).
                    log.exception(
                        "shard %d: unexpected error; restarting the shard's loop",
                        self.cfg.shard,
                        extra={"shard": self.cfg.shard},
                    )
                    await backoff.wait(stop)
        finally:
            with contextlib.suppress(*_TRANSIENT):
                await self.lease.release()

    async def _turn(self, stop: asyncio.Event, backoff: Backoff) -> None:
        """One attempt: lead if the shard is ours to try and the lease is free."""
        if self.fleet is not None and not self.fleet.wants(self.cfg.shard):
            await self._idle(stop)
            return
        await self._ensure_group()
        raise_if_cancelled()
        fence = await self.lease.acquire()
        raise_if_cancelled()
        if fence is None:
            await self._idle(stop)
            return
        await self._lead(fence, stop, backoff)
        if not stop.is_set():
            # Handed over: the batch in hand is committed and announced.
            await self.lease.release()
            log.info("shard %d: handed over to the fleet", self.cfg.shard)

    def _handing_over(self) -> bool:
        return self.fleet is not None and not self.fleet.wants(self.cfg.shard)

    async def _idle(self, stop: asyncio.Event) -> None:
        """Before trying again: a fifth of a lease, or less when the fleet
        changes (a shard became ours, or its holder let go)."""
        poll = self.cfg.lease_ms / 5000
        if self.fleet is None:
            await sleep_unless(stop, poll)
        else:
            await self.fleet.wait(stop, poll)

    async def _ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.entries, GROUP, id="0", mkstream=True)
        except rexc.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def _lead(self, fence: int, stop: asyncio.Event, backoff: Backoff) -> None:
        cfg = self.cfg
        epoch = await self._epoch()
        raise_if_cancelled()
        store = await Store.connect(cfg.database_url, self.entries, cfg.lease_ms, cfg.max_body)
        try:
            try:
                last = await store.claim(fence, epoch)
            except Fenced as e:
                # Redis forgot its fencing counter (a restart without
                # persistence): move it past PostgreSQL's while we hold the lease.
                if e.held is None:
                    raise
                raised = await self.lease.raise_fence(e.held)
                if raised is None:
                    raise
                fence = raised
                last = await store.claim(fence, epoch)
            raise_if_cancelled()
            log.info(
                "shard %d: leading with fence %d, applied up to %s",
                cfg.shard,
                fence,
                fmt(last),
            )
            async with asyncio.TaskGroup() as tg:
                renewing = tg.create_task(self._renew())
                await self._recover(store, fence, last)
                backoff.reset()
                await self._pipeline(store, fence, stop)
                renewing.cancel()
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        finally:
            await store.close()

    async def _epoch(self) -> str:
        """The stream's incarnation id, created with it (it vanishes with it)."""
        key = self.cfg.keys.epoch(self.cfg.shard)
        await self.redis.set(key, secrets.token_hex(8), nx=True)
        value = await self.redis.get(key)
        if value is None:  # lost again between the two calls: try next time
            raise Unavailable(f"shard {self.cfg.shard}: the stream's epoch vanished")
        return value.decode() if isinstance(value, bytes) else str(value)

    async def _renew(self) -> None:
        period = self.cfg.lease_ms / 3000
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(period)
            try:
                renewed = await self.lease.renew()
                raise_if_cancelled()
                if not renewed:
                    raise LeaseLost(f"shard {self.cfg.shard}: lease taken over")
                last_ok = time.monotonic()
            except _TRANSIENT:
                if time.monotonic() - last_ok > self.cfg.lease_ms / 1000 * 0.8:
                    raise LeaseLost(f"shard {self.cfg.shard}: could not renew the lease") from None

    async def _recover(self, store: Store, fence: int, last: StreamId) -> None:
        """Finish what an earlier leader left pending: entries at or below the
        tracking record are stored (tell the world again); the rest are applied."""
        start = "0"
        while True:
            items = await self.lease.read(self.cfg.batch_max, start)
            raise_if_cancelled()
            if not items:
                return
            start = items[-1][0].decode()
            done = [it for it in items if parse_id(it[0]) <= last]
            todo = [it for it in items if parse_id(it[0]) > last]
            if done:
                log.info("shard %d: re-publishing %d committed entries", self.cfg.shard, len(done))
                await self.publisher.publish(await self._republish(store, done))
            if todo:
                await self.publisher.publish(await self._commit(store, fence, todo))
            raise_if_cancelled()

    async def _pipeline(self, store: Store, fence: int, stop: asyncio.Event) -> None:
        """Read and prepare, commit, publish: each stage works on its own
        batch, so the Python before and after a commit runs while PostgreSQL
        executes the batch in between, and the commit stage waits for
        nothing but PostgreSQL."""
        reads: asyncio.Queue[Prepared | None] = asyncio.Queue(1)
        outs: asyncio.Queue[Committed | None] = asyncio.Queue(1)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._reader(reads, stop))
            publishing = tg.create_task(self._publisher(outs))
            while (batch := await reads.get()) is not None:
                await outs.put(await self._apply(store, fence, batch))
            await outs.put(None)
            await publishing

    async def _reader(self, q: asyncio.Queue[Prepared | None], stop: asyncio.Event) -> None:
        cfg = self.cfg
        linger = cfg.linger_ms / 1000
        last_id = await self._last_delivered()
        last_items = -math.inf  # when the last read that found entries ended
        drained = False
        while not stop.is_set() and not self._handing_over():
            if drained:
                # The last read took all there was: wait for the next XADD,
                # and read it in the same round trip.
                items = await self.lease.read_when_added(cfg.batch_max, last_id, 250)
            else:
                items = await self.lease.read(cfg.batch_max)
            raise_if_cancelled()
            if not items:
                drained = True
                continue
            # Linger only while entries come faster than the linger window (the
            # last ones came less than two windows ago): then waiting one window
            # gathers more. An entry that reaches a quiet shard has nobody to
            # share a batch with, and waiting would only delay it.
            now = time.monotonic()
            busy = now - last_items < 2 * linger
            if busy and len(items) < cfg.batch_max and not _asks_receipt(items):
                await asyncio.sleep(linger)
                items += await self.lease.read(cfg.batch_max - len(items))
                raise_if_cancelled()
            last_items = time.monotonic()
            drained = len(items) < cfg.batch_max
            last_id = items[-1][0]
            for chunk in split_by_size(items, cfg.batch_bytes):
                await q.put(self._prepare(chunk))
        await q.put(None)

    async def _last_delivered(self) -> bytes | str:
        for group in await self.redis.xinfo_groups(self.entries):
            name = group.get("name")
            if name in (GROUP, GROUP.encode()):
                value = group.get("last-delivered-id")
                return value if value is not None else "$"
        return "$"

    async def _publisher(self, q: asyncio.Queue[Committed | None]) -> None:
        while (done := await q.get()) is not None:
            out = self._outcome(done)
            await self.publisher.publish(out)
            raise_if_cancelled()
            METRICS.observe_published(self.cfg.shard, out)

    def _prepare(self, items: Items) -> Prepared:
        """Everything about a batch that needs no server: entries parsed and
        checked, rows merged, apply_batch's arrays made."""
        valid, dead = sort_out([Read(i, f) for i, f in items], self.cfg.max_body)
        todo = plans(valid)
        for p in todo:
            p.arrays()
        return Prepared(items, valid, dead, todo)

    async def _apply(self, store: Store, fence: int, batch: Prepared) -> Committed:
        """The commit stage: one transaction, nothing else."""
        items = batch.items
        started = time.perf_counter()
        pieces, rejected = await store.apply(
            fence, parse_id(items[0][0]), parse_id(items[-1][0]), batch.valid, batch.todo
        )
        METRICS.observe_commit(self.cfg.shard, len(items), time.perf_counter() - started)
        return Committed(items, batch.dead + rejected, pieces)

    def _outcome(self, done: Committed) -> Outcome:
        out = Outcome(ids=[i for i, _ in done.items], dead=_in_order(done.dead))
        for p, results in done.pieces:
            changes, receipts = outcome(p, results)
            out.changes += changes
            out.receipts += receipts
        for d in out.dead:
            log.warning(
                "shard %d: dead letter %s: %s",
                self.cfg.shard,
                d.id.decode(),
                d.error,
                extra={
                    "shard": self.cfg.shard,
                    "entry": d.id.decode(),
                    "session": d.fields.get(b"session", b"").decode("utf-8", "replace"),
                },
            )
        return out

    async def _commit(self, store: Store, fence: int, items: Items) -> Outcome:
        """All three stages for one batch, in turn (recovery)."""
        return self._outcome(await self._apply(store, fence, self._prepare(items)))

    async def _republish(self, store: Store, items: Items) -> Outcome:
        valid, dead = sort_out([Read(i, f) for i, f in items], self.cfg.max_body)
        rejects = await store.rejects_for([v.id for v in valid])
        rows = await store.rows_for(recovery_rows(valid, rejects))
        changes, receipts, lost = recovery(valid, rejects, rows)
        return Outcome(
            ids=[i for i, _ in items],
            changes=changes,
            receipts=receipts,
            dead=_in_order(dead + lost),
        )


def split_by_size(items: Items, limit: int) -> list[Items]:
    """Cut a read into transactions of at most ``limit`` bytes of values (at
    least one entry each): a thousand 1 MiB bodies must not become one 1 GiB
    statement."""
    chunks: list[Items] = []
    current: Items = []
    size = 0
    for item in items:
        n = sum(len(v) for v in item[1].values())
        if current and size + n > limit:
            chunks.append(current)
            current, size = [], 0
        current.append(item)
        size += n
    if current:
        chunks.append(current)
    return chunks


def _asks_receipt(items: Items) -> bool:
    return any(b"reply" in f for _, f in items)


def _in_order(dead: list[Dead]) -> list[Dead]:
    return sorted(dead, key=lambda d: parse_id(d.id))
