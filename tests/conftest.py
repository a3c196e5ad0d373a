"""Shared fixtures: real servers from URLs, and for every test its own Redis
key prefix and its own PostgreSQL database (cloned from a migrated template),
so tests never see each other's data."""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
import redis as redis_sync
from redis.asyncio import Redis

from rowcast.ops.schema.migrate import migrate
from tests import databases

REDIS_URL = os.environ.get("ROWCAST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ADMIN_URL = os.environ.get(
    "ROWCAST_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


# --- fallback: embedded servers when the ones at the test URLs do not answer ---------
# (a machine with no Redis or PostgreSQL installed still runs the whole suite)

_EMBEDDED: list[Any] = []


def _redis_answers(url: str) -> bool:
    try:
        r = redis_sync.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        try:
            return bool(r.ping())
        finally:
            r.close()
    except (redis_sync.RedisError, OSError):
        return False


def _pg_answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def _embedded_fallback() -> None:
    global REDIS_URL, ADMIN_URL
    need_redis = not _redis_answers(REDIS_URL)
    need_pg = not _pg_answers(ADMIN_URL)
    if not (need_redis or need_pg):
        return
    from rowcast.ops.embedded import servers as embedded

    data = tempfile.mkdtemp(prefix="rowcast-test-servers-")
    emb = embedded.start(data, redis=need_redis, postgres=need_pg)
    _EMBEDDED.append(emb)
    atexit.register(_stop_embedded)
    if emb.redis is not None:
        REDIS_URL = emb.redis.url
    if emb.postgres is not None:
        ADMIN_URL = f"postgresql://postgres@127.0.0.1:{emb.postgres.port}/postgres"
    sys.stderr.write(f"tests: using embedded servers (Redis {REDIS_URL}, PostgreSQL {ADMIN_URL})\n")


def _stop_embedded() -> None:
    while _EMBEDDED:
        emb = _EMBEDDED.pop()
        emb.stop()
        shutil.rmtree(emb.data_dir, ignore_errors=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    _stop_embedded()


_embedded_fallback()


@pytest.fixture(scope="session")
def template_db() -> Iterator[str]:
    name = databases.create(ADMIN_URL, f"rowcast_tpl_{os.getpid()}")
    migrate(databases.url_for(ADMIN_URL, name))
    yield name
    databases.drop(ADMIN_URL, name)


@pytest.fixture
def db_url(template_db: str) -> Iterator[str]:
    """A migrated database of this test's own."""
    with databases.scratch(ADMIN_URL, "rowcast_t", template=template_db) as (_, url):
        yield url


@pytest.fixture
def empty_db_url() -> Iterator[str]:
    """A database with no schema (for migration tests)."""
    with databases.scratch(ADMIN_URL, "rowcast_e") as (_, url):
        yield url


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
def prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted afterwards."""
    p = f"t{secrets.token_hex(5)}"
    yield p
    r = redis_sync.Redis.from_url(REDIS_URL)
    for key in r.scan_iter(match=f"{p}:*", count=1000):
        r.delete(key)
    r.close()


@pytest.fixture
def rsync() -> Iterator[redis_sync.Redis]:
    r = redis_sync.Redis.from_url(REDIS_URL)
    yield r
    r.close()


@pytest.fixture
async def aredis() -> AsyncIterator[Redis]:
    r = Redis.from_url(REDIS_URL)
    yield r
    await r.aclose()
