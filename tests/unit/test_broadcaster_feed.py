"""The feed's reading loop against a scripted pub/sub connection: messages
read together reach the hub in order, before anything that came after them
(a subscription confirmation, a pong, the connection's loss)."""

from __future__ import annotations

from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from rowcast.broadcaster.feed import Feed
from rowcast.contract.backoff import Backoff
from rowcast.contract.keys import Keys

KEYS = Keys("t")
CHANNEL = KEYS.changes(0).encode()
OTHER = KEYS.changes(1).encode()


def smessage(data: bytes) -> dict[str, Any]:
    return {"type": "smessage", "channel": CHANNEL, "data": data}


class ScriptedPubSub:
    """Answers get_message from a script; ``None`` entries are empty reads."""

    def __init__(self, script: list[dict[str, Any] | None], log: list[Any]) -> None:
        self.script = script
        self.log = log

    async def ssubscribe(self, channel: bytes) -> None:
        pass

    async def get_message(self, timeout: float | None = None) -> dict[str, Any] | None:
        if not self.script:
            raise RedisConnectionError("connection lost")
        msg = self.script.pop(0)
        self.log.append(("read", None if msg is None else msg["type"], timeout))
        return msg

    async def ping(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


class Client:
    def __init__(self, pubsub: ScriptedPubSub) -> None:
        self._pubsub = pubsub

    def pubsub(self) -> ScriptedPubSub:
        return self._pubsub

    async def aclose(self) -> None:
        pass


async def test_messages_read_together_reach_the_hub_before_what_came_after_them():
    log: list[Any] = []
    script: list[dict[str, Any] | None] = [
        {"type": "ssubscribe", "channel": CHANNEL, "data": 1},
        smessage(b"m1"),
        smessage(b"m2"),
        {"type": "ssubscribe", "channel": OTHER, "data": 2},
        smessage(b"m3"),
        {"type": "pong", "channel": None, "data": b""},
        smessage(b"m4"),
        None,
        smessage(b"m5"),
        # then the connection is lost, right after m5 was read
    ]
    feed = Feed(
        lambda: "redis://127.0.0.1:1/0",
        KEYS,
        frozenset({0, 1}),
        on_message=lambda batch: log.append(("hub", batch)),
        on_up=lambda shards: log.append(("up", sorted(shards))),
        on_down=lambda shards: None,
        client_name="t",
    )
    with pytest.raises(RedisConnectionError):
        await feed._listen(Client(ScriptedPubSub(script, log)), frozenset({0, 1}), Backoff())  # type: ignore[arg-type]
    events = [e for e in log if e[0] != "read"]
    # Each batch ends at the first thing that is not a message and reaches the
    # hub before that thing is handled (here: the subscriptions being
    # complete); m5 reaches it although the read after it failed.
    assert events == [
        ("hub", [b"m1", b"m2"]),
        ("up", [0, 1]),
        ("hub", [b"m3"]),
        ("hub", [b"m4"]),
        ("hub", [b"m5"]),
    ]
