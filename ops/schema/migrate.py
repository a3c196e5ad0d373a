"""Schema migrations: numbered SQL files applied with yoyo-migrations.

yoyo records what ran and applies each file in its own transaction. Around it
we hold a PostgreSQL advisory lock, so concurrent ``rowcast migrate`` runs
(several writers starting at once) queue instead of racing to create yoyo's
own bookkeeping tables.
"""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
from yoyo import get_backend, read_migrations
from yoyo.exceptions import LockTimeout

from rowcast.contract.errors import Unavailable, one_line
from rowcast.ops.settings import Settings

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x726F7763  # "rowc"


def yoyo_url(database_url: str) -> str:
    """yoyo names its psycopg 3 backend by scheme; the rest of the URL is libpq's."""
    for scheme in ("postgresql://", "postgres://"):
        if database_url.startswith(scheme):
            return "postgresql+psycopg://" + database_url[len(scheme) :]
    raise Unavailable(
        f"ROWCAST_DATABASE_URL must be a postgresql:// URL, got {database_url[:30]!r}"
    )


def migrate(database_url: str) -> list[str]:
    """Apply every pending migration; return the ids applied (empty when up to date)."""
    try:
        with psycopg.connect(database_url, autocommit=True) as lock_conn:
            lock_conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
            try:
                backend = get_backend(yoyo_url(database_url))
                try:
                    migrations = read_migrations(str(MIGRATIONS))
                    # Our advisory lock already serializes migrations and dies
                    # with its session; yoyo's lock row would outlive a killed
                    # process and block every later start.
                    backend.break_lock()
                    with backend.lock():
                        todo = backend.to_apply(migrations)
                        backend.apply_migrations(todo)
                finally:
                    backend.connection.close()
                return [m.id for m in todo]
            finally:
                lock_conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    except psycopg.OperationalError as e:
        raise Unavailable(f"PostgreSQL: {one_line(e)}") from e
    except LockTimeout as e:
        raise Unavailable(f"migrations are locked by another process: {e}") from e


def run(args: object, settings: Settings) -> int:
    _, db = settings.need_servers()
    applied = migrate(db)
    print(f"applied {', '.join(applied)}" if applied else "schema is up to date")
    return 0
