"""Settings: one frozen dataclass built from the environment (flags override).

Only ``ops`` reads the environment; every component receives what it needs
as arguments.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from producers.errors import ConfigError
from producers.keys import Keys

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
    coalesce_ms: float | None = None
    queue_max: int | None = None
    frame_changes: int | None = None

    @property
    def keys(self) -> Keys:
        return Keys(self.prefix)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        s = cls(
            redis_url=env.get("ROWCAST_REDIS_URL") or None,
            database_url=env.get("ROWCAST_DATABASE_URL") or None,
            prefix=env.get("ROWCAST_PREFIX", "rowcast"),
            shards=env_int(env, "ROWCAST_SHARDS", 1, low=1, high=16384),
            secret=env.get("ROWCAST_SECRET") or None,
            data_dir=env.get("ROWCAST_DATA_DIR") or _default_data_dir(),
            rows_maxlen=env_int(env, "ROWCAST_ROWS_MAXLEN", 1_000_000, low=1),
            max_body=env_int(env, "ROWCAST_MAX_BODY_BYTES", 1 << 20, low=2, high=512 << 20),
            batch_max=env_int(env, "ROWCAST_BATCH_MAX", 1000, low=1, high=100_000),
            batch_bytes=env_int(env, "ROWCAST_BATCH_BYTES", 16 << 20, low=1024),
            linger_ms=env_int(env, "ROWCAST_LINGER_MS", 2, low=0, high=10_000),
            lease_ms=env_int(env, "ROWCAST_LEASE_MS", 5000, low=200, high=600_000),
            receipt_ttl_ms=env_int(env, "ROWCAST_RECEIPT_TTL_MS", 300_000, low=1000),
            metrics_port=env_int(env, "ROWCAST_METRICS_PORT", None, low=0, high=65535),
            coalesce_ms=env_int(env, "ROWCAST_COALESCE_MS", None, low=0, high=60_000),
            queue_max=env_int(env, "ROWCAST_QUEUE_MAX", None, low=2000),
            frame_changes=env_int(env, "ROWCAST_FRAME_CHANGES", None, low=1, high=10_000),
        )
        s = replace(s, **{k: v for k, v in overrides.items() if v is not None})
        s.check()
        return s

    def check(self) -> None:
        if not _PREFIX.fullmatch(self.prefix):
            raise ConfigError(
                f"ROWCAST_PREFIX {self.prefix!r} must be 1-64 characters of [A-Za-z0-9_.-]"
            )
        if self.shards < 1:
            raise ConfigError("ROWCAST_SHARDS must be at least 1")

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


def env_int(
    env: Mapping[str, str],
    name: str,
    default: int | None,
    low: int | None = None,
    high: int | None = None,
) -> Any:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"{name}={value} is out of range ({low}..{high})")
    return value
