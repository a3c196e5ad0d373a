"""Settings: one frozen dataclass built from the environment (flags override).

Only ``ops`` reads the environment; every component receives what it needs
as arguments.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rowcast.broadcaster.auth import check_secret
from rowcast.contract.errors import ConfigError, one_line
from rowcast.contract.keys import Keys

_PREFIX = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def _default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "rowcast")


@dataclass(frozen=True)
class Settings:
    redis_url: str | None = None
    database_url: str | None = None
    prefix: str = "rowcast"
    shards: int = 1
    secret: str | None = None
    data_dir: str = ""
    rows_maxlen: int = 1_000_000
    # Beyond the contract's table (documented in the README):
    max_body: int = 1 << 20
    batch_max: int = 1000
    batch_bytes: int = 16 << 20
    linger_ms: int = 2
    lease_ms: int = 5000
    receipt_ttl_ms: int = 300_000
    metrics_port: int | None = None
    coalesce_ms: float = 5.0
    queue_max: int = 10_000
    frame_changes: int = 256
    origins: tuple[str, ...] = ()
    max_connections: int = 20_000
    max_per_client: int = 2_000
    stall_s: float = 30.0
    ws_idle_s: float = 60.0
    collapse: bool = False

    @property
    def keys(self) -> Keys:
        return Keys(self.prefix)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        s = cls(
            redis_url=env.get("ROWCAST_REDIS_URL") or None,
            database_url=env.get("ROWCAST_DATABASE_URL") or None,
            prefix=env.get("ROWCAST_PREFIX") or cls.prefix,
            secret=env.get("ROWCAST_SECRET") or None,
            data_dir=env.get("ROWCAST_DATA_DIR") or _default_data_dir(),
            origins=tuple(
                o.strip() for o in env.get("ROWCAST_ORIGINS", "").split(",") if o.strip()
            ),
            collapse=env_flag(env, "ROWCAST_COLLAPSE"),
            **{
                field: _number(env, name, getattr(cls, field), low, high)
                for field, (name, low, high) in _NUMBERS.items()
            },
        )
        s = replace(s, **{k: v for k, v in overrides.items() if v is not None})
        s.check()
        return s

    def check(self) -> None:
        if self.redis_url:
            check_redis_url(self.redis_url)
        if self.database_url:
            check_database_url(self.database_url)
        if not _PREFIX.fullmatch(self.prefix):
            raise ConfigError(
                f"ROWCAST_PREFIX {self.prefix!r} must be 1-64 characters of [A-Za-z0-9_.-]"
            )
        if self.shards < 1:
            raise ConfigError("ROWCAST_SHARDS must be at least 1")
        if self.secret is not None:
            check_secret(self.secret)  # every command: a short key is never half-accepted

    def need_servers(self) -> tuple[str, str]:
        """Both server URLs, or a clear configuration error."""
        missing = [
            name
            for name, value in (
                ("ROWCAST_REDIS_URL", self.redis_url),
                ("ROWCAST_DATABASE_URL", self.database_url),
            )
            if not value
        ]
        if missing:
            raise ConfigError(
                f"{' and '.join(missing)} not set"
                " (or run `rowcast up`, which starts embedded servers)"
            )
        assert self.redis_url and self.database_url  # for the type checker
        return self.redis_url, self.database_url


def redact(url: str) -> str:
    """A URL fit for an error message: its password replaced by ``***``."""
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url)


def check_redis_url(url: str) -> None:
    """A URL redis-py can open, or one clear line saying why not."""
    from rowcast.contract.connection import PLAIN_SCHEMES, parse

    u = urlsplit(url)
    if u.scheme not in PLAIN_SCHEMES:
        parse(url)  # the one reader of cluster URLs (and of what is no Redis URL)
        return
    try:
        u.port  # noqa: B018 - parsing it is the check
    except ValueError:
        raise ConfigError(
            f"ROWCAST_REDIS_URL {redact(url)[:100]!r}: the port is not a number"
        ) from None
    db = u.path.strip("/") if u.scheme != "unix" else ""
    if db and not db.isdigit():
        raise ConfigError(
            f"ROWCAST_REDIS_URL {redact(url)[:100]!r}: the database {db[:20]!r} is not a number"
        )
    parse(url)


def check_database_url(url: str) -> None:
    """A libpq URL or conninfo string, or one clear line saying why not."""
    import psycopg

    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as e:
        raise ConfigError(
            "ROWCAST_DATABASE_URL is not a PostgreSQL URL (postgresql://user@host:port/db): "
            + one_line(e)
        ) from None


def port(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free one) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0..65535)")
    return value


_NUMBERS: dict[str, tuple[str, int | None, int | None]] = {
    "shards": ("ROWCAST_SHARDS", 1, 16384),
    "rows_maxlen": ("ROWCAST_ROWS_MAXLEN", 1, None),
    "max_body": ("ROWCAST_MAX_BODY_BYTES", 2, 512 << 20),
    "batch_max": ("ROWCAST_BATCH_MAX", 1, 100_000),
    "batch_bytes": ("ROWCAST_BATCH_BYTES", 1024, None),
    "linger_ms": ("ROWCAST_LINGER_MS", 0, 10_000),
    "lease_ms": ("ROWCAST_LEASE_MS", 200, 600_000),
    "receipt_ttl_ms": ("ROWCAST_RECEIPT_TTL_MS", 1000, None),
    "metrics_port": ("ROWCAST_METRICS_PORT", 0, 65535),
    "coalesce_ms": ("ROWCAST_COALESCE_MS", 0, 60_000),
    "queue_max": ("ROWCAST_QUEUE_MAX", 2000, None),
    "frame_changes": ("ROWCAST_FRAME_CHANGES", 1, 10_000),
    "max_connections": ("ROWCAST_MAX_CONNECTIONS", 1, 1_000_000),
    "max_per_client": ("ROWCAST_MAX_CONNECTIONS_PER_CLIENT", 1, 1_000_000),
    "stall_s": ("ROWCAST_STALL_S", 1, 3600),
    "ws_idle_s": ("ROWCAST_WS_IDLE_S", 1, 86_400),
}
"""Settings field -> (environment variable, lowest, highest); the default is the field's."""


def _number(
    env: Mapping[str, str], name: str, default: Any, low: int | None, high: int | None
) -> Any:
    """A number from the environment, of the default's type (int, or float)."""
    return env_number(env, name, default, low, high, float if isinstance(default, float) else int)


def env_number(
    env: Mapping[str, str],
    name: str,
    default: Any,
    low: int | None = None,
    high: int | None = None,
    kind: type[int] | type[float] = int,
) -> Any:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"{name}={raw!r} is not {what}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name}={raw!r} is not a finite number")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"{low}..{high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{name}={value} is out of range ({bounds})")
    return value


def env_flag(env: Mapping[str, str], name: str) -> bool:
    """A yes/no setting: 1/true/yes or 0/false/no (unset or empty: no)."""
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ConfigError(f"{name}={raw!r} is not 1 or 0")
