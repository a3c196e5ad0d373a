"""``rowcast connect claude-code|codex [--dir DIR]``: follow an agent's transcripts
and push their rows, remembering where it stopped (in ROWCAST_DATA_DIR/connectors/).

Default folders: Claude Code's ``$CLAUDE_CONFIG_DIR/projects`` (else
``~/.claude/projects``); Codex's ``$CODEX_HOME/sessions`` (else ``~/.codex/sessions``).
With no ROWCAST_REDIS_URL it pushes to the embedded Redis of a running ``rowcast up``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from rowcast.contract.errors import ConfigError
from rowcast.ops.commands.runner import install_stop
from rowcast.ops.embedded import servers as embedded
from rowcast.ops.settings import Settings
from rowcast.producers.connectors import claude_code, codex
from rowcast.producers.connectors.tail import Source, Tailer, state_path
from rowcast.producers.producer import Producer

log = logging.getLogger(__name__)

SOURCES: dict[str, Source] = {claude_code.NAME: claude_code.SOURCE, codex.NAME: codex.SOURCE}


def default_dir(source: str, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or Path.home())
    if source == claude_code.NAME:
        base = env.get("CLAUDE_CONFIG_DIR")
        return (Path(base) if base else home / ".claude") / "projects"
    base = env.get("CODEX_HOME")
    return (Path(base) if base else home / ".codex") / "sessions"


def redis_url(settings: Settings) -> str:
    """ROWCAST_REDIS_URL, else the embedded server of a running ``rowcast up``."""
    if settings.redis_url:
        return settings.redis_url
    found = embedded.discover(settings.data_dir)
    if found is None:
        raise ConfigError(
            "ROWCAST_REDIS_URL is not set and no `rowcast up` is running with"
            f" ROWCAST_DATA_DIR={settings.data_dir} (start one, or set the URL)"
        )
    return found[0]


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", choices=["claude-code", "codex"])
    p.add_argument("--dir", help="where the transcripts are")


def run(args: argparse.Namespace, settings: Settings) -> int:
    source = SOURCES[args.source]
    root = Path(args.dir).expanduser() if args.dir else default_dir(args.source)
    root = root.resolve()
    url = redis_url(settings)
    state = state_path(settings.data_dir, source.name, root)

    async def main() -> None:
        stop = asyncio.Event()
        install_stop(stop)
        producer = Producer.from_url(
            url, prefix=settings.prefix, shards=settings.shards, max_body=settings.max_body
        )
        tailer = Tailer(source, root, state, producer)
        log.info("following %s transcripts in %s (offsets in %s)", source.name, root, state)
        try:
            await tailer.run(stop)
        finally:
            await producer.close()
            s = tailer.stats
            log.info("stopped: %d lines read, %d entries pushed, %d malformed, %d unmapped",
                     s.lines, s.pushed, s.malformed, s.unmapped)  # fmt: skip

    asyncio.run(main())
    return 0
