"""A feed never goes silent (issue 10, point 3): a published batch the
broadcaster cannot read (a body with a number beyond a double, which orjson
refuses) is a gap in each of its sessions, read back from PostgreSQL, and
other sessions' changes in the same batch still arrive."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from rowcast.contract.keys import Keys
from tests.integration.test_broadcaster_harness import (
    WsClient,
    broadcaster,
    producer,
    until_live,
    wait_for_head,
    writer,
)


class LenientWsClient(WsClient):
    """Reads frames with the standard parser: the huge number arrives as
    PostgreSQL's digits, beyond a double (a browser's JSON.parse gives Infinity)."""

    async def recv(self) -> dict[str, Any]:
        msg: dict[str, Any] = json.loads(await self.conn.recv(), parse_int=_int)
        self.messages.append(msg)
        if msg["type"] == "rows":
            self.changes.setdefault(msg["session"], []).extend(msg["changes"])
        return msg


def _int(text: str) -> int | str:
    """Past Python's 4,300 digits, the digits themselves."""
    return int(text) if len(text) < 4300 else text


async def test_a_body_orjson_refuses_does_not_silence_the_batch(redis_url, db_url, prefix, aredis):
    async with producer(redis_url, prefix) as p:
        async with writer(redis_url, db_url, prefix):
            await p.append("huge", "r0", "user", {"n": 1}, wait=True)
            await p.append("plain", "r0", "user", {"n": 1}, wait=True)
        async with broadcaster(redis_url, db_url, prefix) as b:
            ws = LenientWsClient(b.ws_url)
            await ws.connect()
            await ws.subscribe("huge", 0)
            await ws.subscribe("plain", 0)
            await ws.until("huge", 1)
            await ws.until("plain", 1)
            await until_live(b)
            # Both entries wait in the stream, so the writer takes them in one
            # batch and publishes them in one message.
            entries = Keys(prefix).entries(0)
            fields = {"op": "append", "kind": "user", "row": "r1"}
            await aredis.xadd(entries, {**fields, "session": "huge", "body": b'{"n": 1e999}'})
            big = b'{"n": ' + b"9" * 5000 + b"}"
            await aredis.xadd(entries, {**fields, "session": "huge", "row": "r2", "body": big})
            await aredis.xadd(entries, {**fields, "session": "plain", "body": b'{"n": 2}'})
            async with writer(redis_url, db_url, prefix):
                await wait_for_head(db_url, "plain", 2)
                await wait_for_head(db_url, "huge", 3)
                async with asyncio.timeout(30):
                    await ws.until("plain", 2)
                    await ws.until("huge", 3)
            await ws.close()
            assert b.runtime.metrics.bad_messages._value.get() >= 1
    assert [c["body"] for c in ws.changes["plain"]] == [{"n": 1}, {"n": 2}]
    huge = ws.changes["huge"]
    assert [(c["change"], c["row"]) for c in huge] == [(1, "r0"), (2, "r1"), (3, "r2")]
    assert huge[1]["body"]["n"] == 10**999
    assert huge[2]["body"]["n"] == "9" * 5000


def test_unreadable_messages_name_their_sessions_when_they_can():
    from rowcast.broadcaster.hub import unreadable_sessions

    msg = b'{"shard":0,"changes":[{"session":"a","body":{"n":1e999}},{"session":"b"}]}'
    assert unreadable_sessions(msg) == ["a", "b"]
    # An integer past Python's 4,300 digits: still only its own session.
    big = b'{"shard":0,"changes":[{"session":"c","body":{"n":' + b"9" * 5000 + b"}}]}"
    assert unreadable_sessions(big) == ["c"]
    assert unreadable_sessions(b"not json") is None
    assert unreadable_sessions(b'{"changes":[{"session":1}]}') is None
    assert unreadable_sessions(b"[" * 100_000) is None
