"""The small I/O shell the admin commands share: Redis and PostgreSQL
opened with driver errors translated once, their SQL files, and text made
safe for a table on a terminal."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg import errors as pgerr
from redis import exceptions as rexc

from rowcast.contract.connection import AnyRedis, explain, sync_client
from rowcast.contract.errors import ConfigError, RowcastError, Unavailable, one_line
from rowcast.ops.settings import Settings

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


def text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def cell(value: Any) -> str:
    return "-" if value is None else str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain left-aligned text table."""
    widths = [len(h) for h in header]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r, strict=True)]
    lines = [header, *rows]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )
