"""The hub: the shard feed of the process (feed.py: sharded pub/sub, one
connection per Redis node), routing each change to the subscribers of its
session, and the PostgreSQL reads that make every subscription whole
(catch-up, gaps, and a check of every watched session of a shard whose
subscription comes back).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field

import orjson

from rowcast.broadcaster.feed import Feed, Shards
from rowcast.broadcaster.item import Item, from_message_change
from rowcast.broadcaster.metrics import Metrics
from rowcast.broadcaster.outbox import Outbox
from rowcast.broadcaster.reader import Reader
from rowcast.broadcaster.subscription import Step, Subscription
from rowcast.contract.backoff import Backoff
from rowcast.contract.errors import Unavailable
from rowcast.contract.keys import Keys, shard_of

log = logging.getLogger(__name__)


def unreadable_sessions(data: bytes) -> list[str] | None:
    """The session ids of a ``P:{N}:changes`` message orjson could not read,
    parsed leniently (fractions as text and integers as floats, so no number
    is out of range or over Python's 4,300 digits for int()); None when not
    even they can be read."""
    try:
        message = json.loads(data, parse_float=str, parse_int=float, parse_constant=str)
        changes = message["changes"]
        found = {c["session"] for c in changes if isinstance(c, dict)}
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    if not all(isinstance(s, str) for s in found):
        return None
    return sorted(found)


class Watch:
    """One subscription served to one connection: the pure cursor state
    (subscription.py) plus the reads it asks for."""

    __slots__ = ("closed", "hub", "outbox", "sub", "task")

    def __init__(self, hub: Hub, sub: Subscription, outbox: Outbox) -> None:
        self.hub = hub
        self.sub = sub
        self.outbox = outbox
        self.task: asyncio.Task[None] | None = None
        self.closed = False

    @property
    def session(self) -> str:
        return self.sub.session

    def live(self, items: list[Item]) -> None:
        """This session's changes from the pub/sub messages read together, in
        change order: handed to the connection together (one frame when it
        sends at once)."""
        if len(items) == 1:  # the common case, without the lists
            step = self.sub.live(items[0])
            if step.fetch:
                self.hub.metrics.gaps.inc()
            self._apply(step)
            return
        deliver: list[Item] = []
        fetch = False
        for item in items:
            step = self.sub.live(item)
            if step.fetch:
                self.hub.metrics.gaps.inc()
                fetch = True
            deliver += step.deliver
        self._apply(Step(deliver, fetch))

    def poke(self) -> None:
        if not self.closed and self.sub.poke():
            self._start_fetch()

    def _apply(self, step: Step) -> None:
        if step.deliver:
            self.outbox.put(self.sub.session, step.deliver)
        if step.fetch and not self.closed:
            self._start_fetch()

    def _start_fetch(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._fetch(), name=f"fetch {self.sub.session}")

    async def _fetch(self) -> None:
        hub, sub = self.hub, self.sub
        backoff = Backoff(base=0.05, cap=2.0)
        while not self.closed:
            # PostgreSQL can wait; a slow client is not made to resync by catch-up.
            await self.outbox.wait_room()
            if self.closed:
                return
            try:
                items = await hub.store.changes_after(sub.session, sub.last, hub.page)
            except Unavailable as e:
                log.warning("reading session %r: %s (retrying)", sub.session, e)
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            hub.metrics.fetches.inc()
            step = sub.fetched(items, complete=len(items) < hub.page)
            if step.deliver:
                self.outbox.put(sub.session, step.deliver)
            if not step.fetch:
                return

    def cancel(self) -> None:
        self.closed = True
        task, self.task = self.task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()


@dataclass(eq=False)
class Hub:
    redis_url: str
    keys: Keys
    store: Reader
    metrics: Metrics
    _: KW_ONLY
    page: int = 1000
    buffer_max: int = 10_000
    client_name: str = "rowcast-broadcaster"
    ping_every: float = 5.0
    shards: int = 1
    connected: bool = field(default=False, init=False)
    _sessions: dict[str, set[Watch]] = field(default_factory=dict, init=False)
    _count: int = field(default=0, init=False)
    _recheck_task: asyncio.Task[None] | None = field(default=None, init=False)
    _subscribed: set[int] = field(default_factory=set, init=False)
    _to_recheck: set[int] = field(default_factory=set, init=False)

    @property
    def subscriptions(self) -> int:
        return self._count

    def watch(self, session: str, after: int, outbox: Outbox) -> Watch:
        """Register first, then read: every change committed after the read's
        snapshot is then certain to reach the subscription's buffer."""
        w = Watch(self, Subscription(session, after, self.buffer_max), outbox)
        self._sessions.setdefault(session, set()).add(w)
        self._count += 1
        self.metrics.subscriptions.set(self._count)
        w._apply(w.sub.start())
        return w

    def unwatch(self, w: Watch) -> None:
        w.cancel()
        watches = self._sessions.get(w.session)
        if watches is not None and w in watches:
            watches.discard(w)
            if not watches:
                del self._sessions[w.session]
            self._count -= 1
            self.metrics.subscriptions.set(self._count)

    def route(self, data: bytes) -> None:
        """One ``P:rows`` message (``route_all`` of it alone)."""
        self.route_all((data,))

    def route_all(self, messages: Sequence[bytes]) -> None:
        """``P:rows`` messages read together, in order: each watched session's
        changes of all of them go to its connections together (one frame per
        session and connection when it sends at once). The feed hands over
        what it had already received, so a broadcaster that falls behind sends
        fewer, fuller frames and catches up, while an idle one still sends
        each message as it comes. A change that cannot be read is a gap in its
        session, never a silent loss: its subscribers read PostgreSQL, after
        what could be read is delivered."""
        sessions = self._sessions
        grouped: dict[str, list[Item]] = {}
        gaps: list[list[str] | None] = []
        for data in messages:
            self.metrics.messages += 1
            try:
                changes = orjson.loads(data)["changes"]
                if not isinstance(changes, list):
                    raise TypeError("changes is not a list")
            except (orjson.JSONDecodeError, KeyError, TypeError) as e:
                self.metrics.bad_messages.inc()
                log.warning("unreadable P:rows message (%s): rechecking its sessions", e)
                gaps.append(unreadable_sessions(data))
                continue
            for c in changes:
                session = c.get("session") if isinstance(c, dict) else None
                if isinstance(session, str) and session not in sessions:
                    continue
                try:
                    if not isinstance(session, str):
                        raise TypeError("a change without a session")
                    item = from_message_change(c)
                except (KeyError, TypeError, ValueError, AttributeError) as e:
                    self.metrics.bad_messages.inc()
                    log.warning("unreadable change in a P:rows message (%s): rechecking", e)
                    gaps.append([session] if isinstance(session, str) else None)
                    continue
                got = grouped.get(session)
                if got is None:
                    grouped[session] = [item]
                else:
                    got.append(item)
        for session, items in grouped.items():
            self.metrics.changes_in += len(items)
            # A put may close a connection and unwatch its sessions: iterate a copy.
            for w in tuple(sessions.get(session, ())):
                w.live(items)
        for gap in gaps:
            self._gap(gap)

    def _gap(self, sessions: list[str] | None) -> None:
        """Read these sessions (None: all watched) from PostgreSQL past their cursors."""
        targets = list(self._sessions) if sessions is None else sessions
        for session in targets:
            for w in tuple(self._sessions.get(session, ())):
                self.metrics.gaps.inc()
                w.poke()

    async def run(self) -> None:
        """Listen until cancelled (the feed reconnects with backoff)."""
        feed = Feed(
            lambda: self.redis_url,
            self.keys,
            frozenset(range(self.shards)),
            on_message=self.route_all,
            on_up=self._up,
            on_down=self._down,
            client_name=self.client_name,
            ping_every=self.ping_every,
        )
        try:
            await feed.run()
        finally:
            self._subscribed.clear()
            self._set_connected(False)
            if self._recheck_task is not None:
                self._recheck_task.cancel()

    def _set_connected(self, up: bool) -> None:
        self.connected = up
        self.metrics.pubsub_up.set(1 if up else 0)

    def _up(self, shards: Shards) -> None:
        self._subscribed |= shards
        self._set_connected(len(self._subscribed) == self.shards)
        self._start_recheck(shards)

    def _down(self, shards: Shards) -> None:
        if self._subscribed & shards:
            self.metrics.reconnects.inc()
        self._subscribed -= shards
        self._set_connected(False)

    def _start_recheck(self, shards: Shards) -> None:
        # Shards coming back while a check runs are checked again after it:
        # its snapshot may predate what they missed.
        self._to_recheck |= shards
        if self._recheck_task is None or self._recheck_task.done():
            self._recheck_task = asyncio.create_task(self._recheck(), name="recheck sessions")

    async def _recheck(self) -> None:
        """Messages published while a shard was not subscribed are lost to
        pub/sub, not to PostgreSQL: compare every watched session of the
        shards that came back with its head."""
        while self._to_recheck:
            shards, self._to_recheck = self._to_recheck, set()
            sessions = [s for s in self._sessions if shard_of(s, self.shards) in shards]
            backoff = Backoff(base=0.1, cap=5.0)
            while True:
                try:
                    heads = await self.store.heads(sessions)
                    break
                except Unavailable as e:
                    log.warning("checking watched sessions: %s (retrying)", e)
                    await asyncio.sleep(backoff.next_delay())
            behind = 0
            for session in sessions:
                head = heads.get(session, 0)
                for w in tuple(self._sessions.get(session, ())):
                    if w.sub.fetching or w.sub.last < head:
                        behind += 1
                        w.poke()
            if behind:
                log.info("%d subscriptions read from PostgreSQL after (re)subscribing", behind)
