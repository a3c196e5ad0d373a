"""Throwaway PostgreSQL databases for tests and benchmarks: created from an
admin URL, optionally from a template, and dropped with FORCE."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql


def url_for(admin_url: str, name: str) -> str:
    """The admin URL pointed at another database, as a postgresql:// URL
    (what rowcast's settings take)."""
    info = psycopg.conninfo.conninfo_to_dict(admin_url)
    host = info.get("host", "127.0.0.1")
    port = info.get("port", "5432")
    user = info.get("user", "postgres")
    password = info.get("password")
    auth = f"{user}:{password}" if password else str(user)
    return f"postgresql://{auth}@{host}:{port}/{name}"


def create(admin_url: str, stem: str, template: str | None = None) -> str:
    """A new database named ``stem`` plus a random suffix; its name."""
    name = f"{stem}_{secrets.token_hex(5)}"
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        query = sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
            sql.Identifier(name), sql.Identifier(template)
        )
    with psycopg.connect(admin_url, autocommit=True) as c:
        c.execute(query)
    return name


def drop(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def scratch(admin_url: str, stem: str, template: str | None = None) -> Iterator[tuple[str, str]]:
    """(name, url) of a database that is dropped afterwards."""
    name = create(admin_url, stem, template)
    try:
        yield name, url_for(admin_url, name)
    finally:
        drop(admin_url, name)
