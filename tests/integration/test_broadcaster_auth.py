"""Auth with ROWCAST_SECRET set: the 401/403 matrix for every route kind
(JSON, SSE, WebSocket, the UI and its assets, metrics), expired tokens and
tokens signed with another secret."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest
import websockets

from rowcast.broadcaster.auth import mint
from tests.integration.test_broadcaster_harness import (
    SECRET,
    broadcaster,
    producer,
    wait_for_head,
    writer,
)

OTHER = "a-different-secret-also-32-bytes-long!!"


async def status_of(http: httpx.AsyncClient, path: str, token: str | None, how: str) -> int:
    headers, params = {}, {}
    if token is not None and how == "header":
        headers["authorization"] = f"Bearer {token}"
    elif token is not None:
        params["token"] = token
    async with http.stream("GET", path, headers=headers, params=params) as r:
        return r.status_code  # an event stream is left after its headers


async def ws_status(url: str, token: str | None) -> int:
    full = url if token is None else f"{url}?token={token}"
    try:
        async with websockets.connect(full):
            return 101
    except websockets.InvalidStatus as e:
        return e.response.status_code


async def test_the_401_403_matrix(redis_url, db_url, prefix):
    now = time.time()
    good_a = mint(SECRET, ["a"], ttl=300)
    star = mint(SECRET, ["*"], ttl=300)
    expired = mint(SECRET, ["*"], ttl=10, now=now - 60)
    foreign = mint(OTHER, ["*"], ttl=300)
    async with (
        writer(redis_url, db_url, prefix),
        broadcaster(redis_url, db_url, prefix, secret=SECRET) as b,
        producer(redis_url, prefix) as p,
        httpx.AsyncClient(base_url=b.base, timeout=30) as http,
    ):
        await p.append("a", "r1", "user", {"text": "in a"})
        await p.append("b", "r1", "user", {"text": "in b"})
        await wait_for_head(db_url, "a", 1)
        await wait_for_head(db_url, "b", 1)

        assert (await http.get("/healthz")).status_code == 200  # the one open route

        # route -> (status with a token for "a", status with a "*" token)
        routes = {
            "/metrics": (403, 200),
            "/api/sessions": (200, 200),
            "/api/sessions/a/rows": (200, 200),
            "/api/sessions/b/rows": (403, 200),
            "/api/sessions/a/events": (200, 200),
            "/api/sessions/b/events": (403, 200),
            "/": (200, 200),
            "/static/app.js": (200, 200),
            "/static/app.css": (200, 200),
        }
        for path, (with_a, with_star) in routes.items():
            for how in ("header", "query"):
                assert await status_of(http, path, None, how) == 401, path
                assert await status_of(http, path, expired, how) == 401, path
                assert await status_of(http, path, foreign, how) == 401, path
                assert await status_of(http, path, "garbage", how) == 401, path
                assert await status_of(http, path, good_a, how) == with_a, (path, how)
                assert await status_of(http, path, star, how) == with_star, (path, how)
        r = await http.get("/api/sessions/b/rows")
        assert r.status_code == 401 and r.json()["error"]
        assert r.headers["www-authenticate"] == "Bearer"

        # The session list shows only what the token grants.
        r = await http.get("/api/sessions", params={"token": good_a})
        assert [s["session"] for s in r.json()["sessions"]] == ["a"]
        r = await http.get("/api/sessions", params={"token": star})
        assert sorted(s["session"] for s in r.json()["sessions"]) == ["a", "b"]

        # The UI page hands its token to its assets.
        r = await http.get("/", params={"token": good_a})
        assert f"static/app.js?token={good_a}" in r.text

        # WebSocket: 401 at the handshake; 403 per session when subscribing.
        for token in (None, expired, foreign, "garbage"):
            assert await ws_status(b.ws_url, token) == 401
        async with websockets.connect(f"{b.ws_url}?token={good_a}") as ws:
            await ws.send(orjson.dumps({"type": "subscribe", "session": "b", "after": 0}))
            msg = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
            assert msg["type"] == "error" and msg["code"] == 403 and msg["session"] == "b"
            await ws.send(orjson.dumps({"type": "subscribe", "session": "a", "after": 0}))
            msg = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
            assert msg["type"] == "rows" and msg["changes"][0]["body"] == {"text": "in a"}
        async with websockets.connect(
            b.ws_url, additional_headers={"authorization": f"Bearer {star}"}
        ) as ws:
            await ws.send(orjson.dumps({"type": "subscribe", "session": "b", "after": 0}))
            msg = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
            assert msg["type"] == "rows" and msg["session"] == "b"


async def test_a_feed_ends_when_its_token_expires(redis_url, db_url, prefix):
    async with broadcaster(redis_url, db_url, prefix, secret=SECRET) as b:
        token = mint(SECRET, ["a"], ttl=2)
        async with websockets.connect(f"{b.ws_url}?token={token}") as ws:
            await ws.send(orjson.dumps({"type": "subscribe", "session": "a", "after": 0}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                async with asyncio.timeout(30):
                    while True:
                        msg = orjson.loads(await ws.recv())
                        assert msg["type"] == "error" and "expired" in msg["error"]
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
