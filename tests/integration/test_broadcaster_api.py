"""The HTTP API: paging and its metadata, errors, health, metrics, the
session list, WebSocket messages it cannot act on, and the ack fast path."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest
import websockets

from tests.integration.test_broadcaster_harness import (
    WsClient,
    broadcaster,
    producer,
    until_live,
    until_subscriptions,
    wait_for_head,
    writer,
)


async def test_rows_paging_sessions_health_and_metrics(redis_url, db_url, prefix):
    async with (
        writer(redis_url, db_url, prefix),
        broadcaster(redis_url, db_url, prefix) as b,
        producer(redis_url, prefix) as p,
        httpx.AsyncClient(base_url=b.base, timeout=30) as http,
    ):
        for i in range(3):
            await p.append("older", f"r{i}", "user", {"i": i})
        await wait_for_head(db_url, "older", 3)
        # Appends, then (once stored) one upsert per row: 240 changes exactly.
        for i in range(120):
            await p.append("pages", f"r{i}", "user", {"i": i})
        await wait_for_head(db_url, "pages", 120)
        for i in range(120):
            await p.upsert("pages", f"r{i}", "assistant", {"i": i, "u": 0})
        await wait_for_head(db_url, "pages", 240)

        r = await http.get("/api/sessions/pages/rows")
        page = r.json()
        assert r.status_code == 200
        assert [row["sequence"] for row in page["rows"]] == list(range(70, 120))
        assert page["has_more_before"] is True and page["has_more_after"] is False
        assert page["row_count"] == 120 and page["last_change"] == 240
        assert page["rows"][0]["revision"] == 1 and page["rows"][0]["body"] == {"i": 70, "u": 0}

        r = await http.get("/api/sessions/pages/rows", params={"before": 70, "limit": 60})
        page = r.json()
        assert [row["sequence"] for row in page["rows"]] == list(range(10, 70))
        assert page["has_more_before"] is True and page["has_more_after"] is True

        r = await http.get("/api/sessions/pages/rows", params={"before": 10, "limit": 60})
        page = r.json()
        assert [row["sequence"] for row in page["rows"]] == list(range(10))
        assert page["has_more_before"] is False and page["has_more_after"] is True

        r = await http.get("/api/sessions/pages/rows", params={"after": 100, "limit": 10})
        page = r.json()
        assert [row["sequence"] for row in page["rows"]] == list(range(101, 111))
        assert page["has_more_before"] is True and page["has_more_after"] is True

        r = await http.get("/api/sessions/pages/rows", params={"after": 115})
        page = r.json()
        assert [row["sequence"] for row in page["rows"]] == list(range(116, 120))
        assert page["has_more_after"] is False

        for params in (
            {"limit": 0},
            {"limit": 501},
            {"limit": "x"},
            {"before": -1},
            {"after": "1.5"},
            {"before": 1, "after": 2},
        ):
            r = await http.get("/api/sessions/pages/rows", params=params)
            assert r.status_code == 400, params
            assert "error" in r.json()
        r = await http.get("/api/sessions/nope/rows")
        assert r.status_code == 404 and "error" in r.json()
        r = await http.get("/api/sessions/pages/events", params={"after": "-3"})
        assert r.status_code == 400
        r = await http.get("/api/sessions/pages/events", headers={"last-event-id": "abc"})
        assert r.status_code == 400

        r = await http.get("/api/sessions")
        listed = r.json()["sessions"]
        assert [s["session"] for s in listed] == ["pages", "older"]  # newest activity first
        assert listed[0]["row_count"] == 120 and listed[0]["last_change"] == 240
        assert "updated_at" in listed[0]
        assert (await http.get("/api/sessions", params={"limit": 0})).status_code == 400

        r = await http.get("/healthz")
        assert r.status_code == 200
        health = r.json()
        assert health["status"] == "ok" and health["redis"] == "ok" and health["postgres"] == "ok"

        r = await http.get("/metrics")
        assert r.status_code == 200
        assert "rowcast_broadcaster_connections" in r.text

        r = await http.get("/")
        assert r.status_code == 200 and "static/app.js" in r.text
        for name in ("app.js", "app.css"):
            assert (await http.get(f"/static/{name}")).status_code == 200
        assert (await http.get("/static/nope.js")).status_code == 404


async def test_healthz_says_503_when_postgresql_does_not_answer(redis_url, prefix):
    bad_db = "postgresql://postgres@127.0.0.1:1/none"
    async with broadcaster(redis_url, bad_db, prefix) as b, httpx.AsyncClient() as http:
        r = await http.get(f"{b.base}/healthz", timeout=30)
        assert r.status_code == 503
        assert r.json()["postgres"].startswith("error")


async def test_malformed_websocket_messages_get_a_clear_error_and_no_crash(
    redis_url, db_url, prefix
):
    async with broadcaster(redis_url, db_url, prefix) as b:
        async with websockets.connect(b.ws_url) as ws:
            bad = [
                "not json",
                "[1, 2]",
                '{"type": "dance"}',
                '{"type": "subscribe"}',
                '{"type": "subscribe", "session": ""}',
                '{"type": "subscribe", "session": "s", "after": -1}',
                '{"type": "subscribe", "session": "s", "after": "7"}',
                '{"type": "unsubscribe", "session": "never"}',
                "x" * 100_000,
            ]
            for text in bad:
                await ws.send(text)
                msg = orjson.loads(await ws.recv())
                assert msg["type"] == "error" and msg["error"], text
            await ws.send(b"\xff\xfe binary")
            assert orjson.loads(await ws.recv())["type"] == "error"
            # Still serving: a good subscribe works, a second one is refused.
            await ws.send('{"type": "subscribe", "session": "s", "after": 0}')
            await ws.send('{"type": "subscribe", "session": "s", "after": 0}')
            msg = orjson.loads(await ws.recv())
            assert msg["type"] == "error" and msg["session"] == "s"
        # A frame over the protocol's limit closes that socket (1009), only it.
        async with websockets.connect(b.ws_url, max_size=None) as ws:
            await ws.send("x" * (2 << 20))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 30)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{b.base}/healthz", timeout=30)).status_code == 200


async def test_an_ack_change_is_flushed_without_waiting_for_the_window(redis_url, db_url, prefix):
    # A window far longer than the test may wait: only the ack flush can deliver.
    async with (
        writer(redis_url, db_url, prefix),
        broadcaster(redis_url, db_url, prefix, window_ms=60_000) as b,
        producer(redis_url, prefix) as p,
    ):
        ws = WsClient(b.ws_url)
        await ws.connect()
        await ws.subscribe("acked", after=0)
        await until_live(b)  # the (empty) catch-up is done: what follows comes live
        # A quiet connection sends at once; after this frame it is busy, so
        # what follows waits for the window.
        await p.append("acked", "first", "user", {"text": "opens the window"}, wait=True)
        async with asyncio.timeout(30):
            assert [c["row"] for c in (await ws.recv())["changes"]] == ["first"]
        await p.append("acked", "a", "user", {"text": "no receipt asked"}, wait=False)
        await p.append("acked", "b", "assistant", {"text": "receipt asked"}, wait=True)
        async with asyncio.timeout(30):
            msg = await ws.recv()
        assert msg["type"] == "rows"
        assert [c["row"] for c in msg["changes"]] == ["a", "b"]
        assert msg["changes"][-1]["ack"] is True
        await ws.close()


async def test_a_busy_connection_gets_every_change_of_a_revised_row(redis_url, db_url, prefix):
    """Live changes without gaps (the contract): a row revised several times
    within one window reaches the client once per change, not only at its
    latest revision (that is ``ROWCAST_COLLAPSE=1``, an operator's choice)."""
    async with (
        writer(redis_url, db_url, prefix),
        broadcaster(redis_url, db_url, prefix, window_ms=60_000) as b,
        producer(redis_url, prefix) as p,
    ):
        ws = WsClient(b.ws_url)
        await ws.connect()
        await ws.subscribe("revised", after=0)
        await until_live(b)
        await p.append("revised", "row", "assistant", {"text": ""}, wait=True)
        async with asyncio.timeout(30):
            assert [c["change"] for c in (await ws.recv())["changes"]] == [1]
        # The connection is busy now: what follows waits for the window,
        # each revision committed (and published) on its own.
        for n in range(2, 6):
            await p.upsert("revised", "row", "assistant", {"text": "x" * n}, wait=False)
            await wait_for_head(db_url, "revised", n)
        await p.append("revised", "end", "user", {"text": "flushes"}, wait=True)
        async with asyncio.timeout(30):
            msg = await ws.recv()
        assert [(c["row"], c["change"], c["revision"]) for c in msg["changes"]] == [
            ("row", 2, 1),
            ("row", 3, 2),
            ("row", 4, 3),
            ("row", 5, 4),
            ("end", 6, 0),
        ]
        await ws.close()


async def test_several_sessions_on_one_socket_and_unsubscribe(redis_url, db_url, prefix):
    async with (
        writer(redis_url, db_url, prefix),
        broadcaster(redis_url, db_url, prefix) as b,
        producer(redis_url, prefix) as p,
    ):
        ws = WsClient(b.ws_url)
        await ws.connect()
        for s in ("one", "two", "three"):
            await ws.subscribe(s, after=0)
        for s in ("one", "two", "three"):
            await p.append(s, "r1", "user", {"text": s}, wait=True)
        for s in ("one", "two", "three"):
            await ws.until(s, 1)
        await ws.conn.send(orjson.dumps({"type": "unsubscribe", "session": "two"}).decode())
        await until_subscriptions(b, 2)
        for s in ("one", "two", "three"):
            await p.append(s, "r2", "user", {"text": s}, wait=True)
        await ws.until("one", 2)
        await ws.until("three", 2)
        await ws.close()
        assert [c["change"] for c in ws.changes["two"]] == [1]
        assert [c["body"] for c in ws.changes["three"]] == [{"text": "three"}] * 2


async def test_page_bounds_are_the_ones_the_error_names(redis_url, db_url, prefix):
    # Every integer the error message allows is accepted; one past it is a 400.
    async with (
        writer(redis_url, db_url, prefix),
        broadcaster(redis_url, db_url, prefix) as b,
        producer(redis_url, prefix) as p,
        httpx.AsyncClient() as http,
    ):
        await p.append("bounds", "r0", "user", {"text": "one"}, wait=True)
        url = f"{b.base}/api/sessions/bounds/rows"
        for value in ("1", "4611686018427387903", str(2**63 - 1)):
            r = await http.get(url, params={"before": value}, timeout=30)
            assert r.status_code == 200, (value, r.text)
            assert [x["row"] for x in r.json()["rows"]] == ["r0"]
        r = await http.get(url, params={"before": str(2**63)}, timeout=30)
        assert r.status_code == 400 and "0..9223372036854775807" in r.json()["error"]


async def test_changes_to_a_quiet_websocket_go_out_directly_and_in_order(redis_url, db_url, prefix):
    """On the server the broadcaster runs (uvicorn, websockets-sansio), a
    change to a quiet WebSocket is written by the hub at once, without waking
    the connection's sender. Should uvicorn's internals move, the sender
    path would take over silently: this test says so."""
    async with (
        writer(redis_url, db_url, prefix),
        broadcaster(redis_url, db_url, prefix) as b,
        producer(redis_url, prefix) as p,
        httpx.AsyncClient(base_url=b.base, timeout=30) as http,
    ):
        client = WsClient(b.ws_url)
        await client.connect()
        await client.subscribe("quiet", 0)
        await until_subscriptions(b, 1)
        await until_live(b)
        for i in range(10):
            await p.append("quiet", f"r{i}", "user", {"i": i}, wait=True)
            await client.until("quiet", i + 1, timeout=30)
            await asyncio.sleep(0.02)  # longer than a window: quiet again
        await client.close()
        assert [c["change"] for c in client.changes["quiet"]] == list(range(1, 11))
        direct = next(
            float(line.split()[-1])
            for line in (await http.get("/metrics")).text.splitlines()
            if line.startswith("rowcast_broadcaster_frames_direct_total")
        )
        assert direct >= 10


async def _direct_frames(http: httpx.AsyncClient) -> float:
    return next(
        float(line.split()[-1])
        for line in (await http.get("/metrics")).text.splitlines()
        if line.startswith("rowcast_broadcaster_frames_direct_total")
    )


async def test_changes_to_a_quiet_event_stream_go_out_directly_and_in_order(
    redis_url, db_url, prefix
):
    """The same fast path for Server-Sent Events: on the real server, a change
    to a quiet stream is written as one HTTP chunk by the hub, and the client
    reads every change once, in order."""
    async with (
        writer(redis_url, db_url, prefix),
        broadcaster(redis_url, db_url, prefix) as b,
        producer(redis_url, prefix) as p,
        httpx.AsyncClient(base_url=b.base, timeout=30) as http,
        http.stream("GET", "/api/sessions/quiet-sse/events") as resp,
    ):
        assert resp.status_code == 200
        await until_subscriptions(b, 1)
        await until_live(b)
        before = await _direct_frames(http)
        lines = resp.aiter_lines()
        seen: list[int] = []
        for i in range(10):
            await p.append("quiet-sse", f"r{i}", "user", {"i": i}, wait=True)
            async with asyncio.timeout(30):
                while len(seen) < i + 1:
                    line = await anext(lines)
                    if line.startswith("data:"):
                        seen.append(orjson.loads(line[5:])["change"])
            await asyncio.sleep(0.02)  # longer than a window: quiet again
        assert seen == list(range(1, 11))
        assert await _direct_frames(http) - before >= 10
