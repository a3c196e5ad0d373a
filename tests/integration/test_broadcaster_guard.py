"""Browser safety (issue 10, point 1): Origin and Host checks on HTTP and the
WebSocket handshake, the UI's Content-Security-Policy, and the connection caps,
against a real broadcaster on uvicorn."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import websockets

from rowcast.broadcaster.auth import mint
from tests.integration.test_broadcaster_harness import SECRET, broadcaster


async def ws_status(url: str, **kwargs: object) -> int:
    try:
        async with websockets.connect(url, **kwargs):  # type: ignore[arg-type]
            return 101
    except websockets.InvalidStatus as e:
        return e.response.status_code


async def test_another_sites_page_cannot_read_sessions_without_a_secret(redis_url, db_url, prefix):
    async with (
        broadcaster(redis_url, db_url, prefix, origins=("https://ui.example.com",)) as b,
        httpx.AsyncClient(base_url=b.base, timeout=30) as http,
    ):
        own = f"http://127.0.0.1:{b.port}"
        # Not a browser (no Origin): served.
        assert (await http.get("/api/sessions")).status_code == 200
        # DNS rebinding: a page on evil.example resolving to 127.0.0.1.
        r = await http.get("/api/sessions", headers={"host": f"evil.example:{b.port}"})
        assert r.status_code == 403 and "loopback" in r.json()["error"]
        for host in (f"localhost:{b.port}", f"[::1]:{b.port}", "127.0.0.2", "app.localhost"):
            assert (await http.get("/api/sessions", headers={"host": host})).status_code == 200
        # A foreign Origin on a fetch, and on the WebSocket handshake (CSWSH).
        for origin in ("http://evil.example", "null", f"http://127.0.0.1:{b.port + 1}"):
            r = await http.get("/api/sessions", headers={"origin": origin})
            assert r.status_code == 403, origin
            assert r.json()["error"].startswith("Origin not allowed")
            assert await ws_status(b.ws_url, origin=origin) == 403, origin
            r = await http.get("/", headers={"origin": origin})
            assert r.status_code == 403
        # Its own origin, and a listed one, are served.
        for origin in (own, "https://ui.example.com", "https://UI.example.com:443"):
            assert (await http.get("/api/sessions", headers={"origin": origin})).status_code == 200
            assert await ws_status(b.ws_url, origin=origin) == 101
        assert await ws_status(b.ws_url) == 101


async def test_with_a_secret_any_host_is_served_but_origins_still_checked(
    redis_url, db_url, prefix
):
    token = mint(SECRET, ["*"], ttl=300)
    auth = {"authorization": f"Bearer {token}"}
    async with (
        broadcaster(redis_url, db_url, prefix, secret=SECRET) as b,
        httpx.AsyncClient(base_url=b.base, timeout=30) as http,
    ):
        r = await http.get("/api/sessions", headers={**auth, "host": "rowcast.example.com"})
        assert r.status_code == 200
        r = await http.get(
            "/api/sessions",
            headers={
                **auth,
                "host": "rowcast.example.com",
                "origin": "https://rowcast.example.com",
            },
        )
        assert r.status_code == 200
        r = await http.get("/api/sessions", headers={**auth, "origin": "https://evil.example"})
        assert r.status_code == 403
        url = f"{b.ws_url}?token={token}"
        assert await ws_status(url, origin="https://evil.example") == 403


async def test_the_ui_has_a_strict_content_security_policy(redis_url, db_url, prefix):
    async with (
        broadcaster(redis_url, db_url, prefix) as b,
        httpx.AsyncClient(base_url=b.base, timeout=30) as http,
    ):
        for path in ("/", "/static/app.js", "/static/app.css"):
            r = await http.get(path)
            assert r.status_code == 200
            csp = r.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "script-src 'self'" in csp
            assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["referrer-policy"] == "no-referrer"
        r = await http.get("/api/sessions")
        assert r.headers["x-content-type-options"] == "nosniff"
        page = (await http.get("/")).text
        assert "<script>" not in page and "style=" not in page


@pytest.mark.parametrize(
    ("cap", "status"),
    [({"max_per_client": 3}, 429), ({"max_connections": 3}, 503)],
    ids=["per client address", "per process"],
)
async def test_connections_are_capped(redis_url, db_url, prefix, cap, status):
    async with (
        broadcaster(redis_url, db_url, prefix, **cap) as b,
        httpx.AsyncClient(base_url=b.base, timeout=30) as http,
    ):
        sockets = [await websockets.connect(b.ws_url) for _ in range(3)]
        try:
            assert await ws_status(b.ws_url) == status
            r = await http.get("/api/sessions")
            assert r.status_code == status and "too many" in r.json()["error"]
        finally:
            for s in sockets:
                await s.close()
        # Closed sockets give their places back.
        for _ in range(100):
            if (await http.get("/api/sessions")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        assert (await http.get("/api/sessions")).status_code == 200
        assert await ws_status(b.ws_url) == 101
