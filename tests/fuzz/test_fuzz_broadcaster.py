"""Fuzzing a real broadcaster (uvicorn, Redis, PostgreSQL): every HTTP
route's path and parameters, the headers that matter (Last-Event-ID,
Authorization, Origin, Host), and WebSocket messages. Every answer is a 2xx,
or a 4xx with a JSON ``error``; never a 5xx, a traceback, a hang, or a dead
socket. The broadcaster runs in a thread of its own; hypothesis drives
synchronous clients against it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.sync.client import connect

from rowcast.broadcaster.auth import mint
from tests.fuzz.strategies import fuzz_settings, ids, json_values, odd_numbers
from tests.integration.test_broadcaster_harness import SECRET, broadcaster, producer, writer


@contextlib.contextmanager
def running(redis_url: str, db_url: str, prefix: str, **config: Any) -> Iterator[Any]:
    """A broadcaster (and writer) on an event loop in another thread."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        stop = box["stop"] = asyncio.Event()
        async with (
            writer(redis_url, db_url, prefix),
            producer(redis_url, prefix) as p,
            broadcaster(redis_url, db_url, prefix, **config) as b,
        ):
            for i in range(5):
                await p.append("known", f"r{i}", "user", {"i": i})
            await p.append("known", "r5", "user", {"i": 5}, wait=True)
            box["b"] = b
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=lambda: box.setdefault("err", loop.run_until_complete(main())))
    thread.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("broadcaster did not start")
        yield box["b"]
    finally:
        loop.call_soon_threadsafe(box["stop"].set)
        thread.join(60)
        loop.close()


@pytest.fixture
def live(redis_url, db_url, prefix):
    with (
        running(redis_url, db_url, prefix, secret=SECRET) as b,
        httpx.Client(base_url=b.base, timeout=20) as http,
    ):
        b.http = http
        yield b
        # Whatever came before, it still answers.
        assert http.get("/healthz").status_code == 200


TOKEN = mint(SECRET, ["*"], ttl=3600)
ONE = mint(SECRET, ["known"], ttl=3600)
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40
).map(str.strip)
params = st.dictionaries(
    st.sampled_from(["before", "after", "limit", "token", "deltas", "x"]),
    st.one_of(
        header_text,
        st.integers(min_value=-(2**70), max_value=2**70).map(str),
        odd_numbers,
        st.text(max_size=20),
    ),
    max_size=4,
)
routes = st.sampled_from(
    [
        "/api/sessions/{s}/rows",
        "/api/sessions/{s}/events",
        "/api/sessions",
        "/healthz",
        "/metrics",
        "/",
        "/static/{s}",
        "/ws",
        "/api/{s}",
        "/{s}",
    ]
)


def check_answer(r: httpx.Response) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert r.headers["content-type"].startswith("application/json"), r.headers
        body = json.loads(r.read())
        assert isinstance(body["error"], str) and body["error"]


@fuzz_settings(250)
@given(
    route=routes,
    session=ids,
    query=params,
    auth=st.sampled_from([None, TOKEN, ONE, "garbage", "x" * 9000]),
    via=st.sampled_from(["header", "query"]),
    last_event_id=st.one_of(st.none(), header_text, odd_numbers),
    origin=st.one_of(st.none(), st.sampled_from(["http://evil.example", "null"]), header_text),
    host=st.one_of(
        st.none(), st.sampled_from(["evil.example", "localhost", "[::1]:1"]), header_text
    ),
)
def test_http_routes(live, route, session, query, auth, via, last_event_id, origin, host):
    path = route.replace("{s}", quote(session, safe=""))
    headers = {}
    if auth is not None and via == "header":
        headers["authorization"] = f"Bearer {auth}"
    elif auth is not None:
        query = {**query, "token": auth}
    if last_event_id is not None:
        headers["last-event-id"] = last_event_id
    if origin is not None:
        headers["origin"] = origin
    if host is not None:
        headers["host"] = host
    with live.http.stream("GET", path, params=query, headers=headers) as r:
        if r.status_code == 200 and "event-stream" in r.headers.get("content-type", ""):
            return  # a live feed: its first bytes came; hang up
        check_answer(r)


ws_messages = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=100),
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.one_of(st.sampled_from(["subscribe", "unsubscribe"]), json_values),
            "session": st.one_of(ids, json_values),
            "after": st.one_of(st.integers(min_value=-5, max_value=2**64), json_values),
            "deltas": json_values,
        },
    ).map(json.dumps),
    st.builds(
        lambda t, n: f'{{"type":"{t}","session":"known","after":{n}}}',
        st.sampled_from(["subscribe", "unsubscribe"]),
        odd_numbers,
    ),
)
SENTINEL = json.dumps({"type": "unsubscribe", "session": "zz-sentinel"})


@fuzz_settings(80)
@given(st.lists(ws_messages, min_size=1, max_size=5))
def test_websocket_messages(live, messages):
    with connect(f"{live.ws_url}?token={TOKEN}", open_timeout=20, close_timeout=5) as ws:
        for m in messages:
            ws.send(m)
            # The sentinel's error comes after every answer to m: read up to it.
            ws.send(SENTINEL)
            while True:
                got = json.loads(ws.recv(timeout=20))
                assert got["type"] in ("rows", "error", "resync"), got
                if got["type"] == "error":
                    assert isinstance(got["error"], str) and got["error"]
                    if got.get("session") == "zz-sentinel":
                        break
