"""The small I/O shell the admin commands share: Redis and PostgreSQL
opened with driver errors translated once, their SQL files, and text made
safe for a table on a terminal."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg import errors as pgerr
from redis import exceptions as rexc
from redis.cluster import RedisCluster

from rowcast.contract.connection import AnyRedis, explain, sync_client
from rowcast.contract.errors import ConfigError, RowcastError, Unavailable, one_line
from rowcast.ops.settings import Settings, redact

_SQL = Path(__file__).parent / "sql"


@cache
def sql(name: str) -> bytes:
    return (_SQL / f"{name}.sql").read_bytes()


@contextmanager
def connect_redis(settings: Settings) -> Iterator[redis.Redis]:
    """A synchronous Redis client, of one server or of a cluster (typed as the
    plain one: the commands used here exist on both). Connection and cluster
    routing errors become Unavailable; a redirect reaching us (a plain URL
    naming a cluster node) a ConfigError."""
    url, _ = settings.need_servers()
    client: AnyRedis | None = None
    try:
        # A cluster client reads the cluster's map here already.
        client = sync_client(url, socket_timeout=30, socket_connect_timeout=10)
        yield client  # type: ignore[misc]
    except (rexc.RedisError, rexc.RedisClusterException, OSError) as e:
        mapped = explain(e)
        if mapped is None:
            raise
        raise mapped from e
    finally:
        if client is not None:
            client.close()


@contextmanager
def connect_db(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit PostgreSQL connection; driver errors become rowcast's."""
    _, url = settings.need_servers()
    try:
        conn = psycopg.connect(
            url, autocommit=True, prepare_threshold=None, application_name="rowcast-ops"
        )
    except psycopg.Error as e:
        raise Unavailable(f"PostgreSQL: {one_line(e)}") from e
    try:
        yield conn
    except (pgerr.UndefinedTable, pgerr.UndefinedFunction, pgerr.InvalidSchemaName) as e:
        raise ConfigError(f"PostgreSQL: {one_line(e)} (run `rowcast migrate`)") from e
    except psycopg.OperationalError as e:
        raise Unavailable(f"PostgreSQL: {one_line(e)}") from e
    except psycopg.Error as e:
        raise RowcastError(f"PostgreSQL: {one_line(e)}") from e
    finally:
        conn.close()


def check_servers(settings: Settings, timeout: float = 5.0) -> None:
    """At start, both servers must answer: an unreachable one is a
    configuration problem said once (exit 2), not a retry loop. (Once
    running, writer and broadcaster retry a server that goes away.)"""
    redis_url, database_url = settings.need_servers()
    try:
        client = sync_client(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
    except (rexc.RedisError, rexc.RedisClusterException, OSError) as e:
        raise Unavailable(f"cannot reach Redis at {redact(redis_url)}: {one_line(e)}") from None
    try:
        client.ping()
        if not isinstance(client, RedisCluster) and _cluster_enabled(client):
            # Through one node, a writer would lead only the shards whose keys
            # live there and retry the others for ever.
            raise ConfigError(
                f"Redis at {redact(redis_url)} is a node of a Redis Cluster: name the"
                " cluster as redis+cluster://host:port[,host:port...]"
            )
    except rexc.ResponseError as e:
        raise ConfigError(f"Redis at {redact(redis_url)}: {one_line(e)}") from None
    except (rexc.RedisError, rexc.RedisClusterException, OSError) as e:
        raise Unavailable(f"cannot reach Redis at {redact(redis_url)}: {one_line(e)}") from None
    finally:
        client.close()
    try:
        psycopg.connect(database_url, connect_timeout=max(2, int(timeout))).close()
    except psycopg.Error as e:
        raise Unavailable(
            f"cannot reach PostgreSQL at {redact(database_url)}: {one_line(e)}"
        ) from None


def _cluster_enabled(client: Any) -> bool:
    try:
        info = client.info("cluster")
    except rexc.ResponseError:  # an ACL without INFO: nothing to tell
        return False
    return str(info.get("cluster_enabled", 0)) == "1"


RAW_XRANGE = "return redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', ARGV[3])"
"""XRANGE KEY START END COUNT N with the entries as Redis holds them:
redis-py's own XRANGE reply is a dict per entry, which folds a field name
given twice."""


def text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# C0 and C1 controls, DEL, and the invisible marks that reorder or hide text
# (bidirectional overrides and isolates, zero-width characters, BOM).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def _escape_one(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(value: str) -> str:
    """Text a terminal shows as it is: every control or invisible character as
    a visible escape (``\\x1b``, ``\\u202e``), so no stored id or body can
    retitle, recolour or rewrite an operator's screen."""
    return _UNSAFE.sub(_escape_one, value)


def shorten(value: str, n: int) -> str:
    """``safe(value)`` in at most about ``n`` characters, cut between
    characters of the original (never inside an escape), ``…`` when cut."""
    if len(value) <= n and not _UNSAFE.search(value):
        return value
    out: list[str] = []
    width = 0
    for i, ch in enumerate(value):
        shown = safe(ch)
        if width + len(shown) > n - 1 and i < len(value) - 1:
            return "".join(out) + "…"
        if width + len(shown) > n and i == len(value) - 1:
            return "".join(out) + "…"
        out.append(shown)
        width += len(shown)
    return "".join(out)


def cell(value: Any) -> str:
    return "-" if value is None else str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain left-aligned text table, every cell made safe for a terminal."""
    rows = [[safe(c) for c in r] for r in rows]
    widths = [len(h) for h in header]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r, strict=True)]
    lines = [header, *rows]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )
