"""``rowcast connect claude-code|codex [--dir DIR] [--since DURATION]``: follow an
agent's transcripts and push their rows, remembering where it stopped (in
ROWCAST_DATA_DIR/connectors/).

``--since 30d`` (units ``s m h d w``, combinable: ``1d12h``) leaves alone the files
last written longer ago than that when the connector starts, so a first run on a
machine with months of history imports only the recent sessions; a file already
being followed, or written to again later, is read as usual.

Default folders: Claude Code's ``$CLAUDE_CONFIG_DIR/projects`` (else
``~/.claude/projects``); Codex's ``$CODEX_HOME/sessions`` (else ``~/.codex/sessions``).
With no ROWCAST_REDIS_URL it pushes to the embedded Redis of a running ``rowcast up``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import time
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


_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(?:\d+[smhdw])+")


def duration(text: str) -> float:
    """Seconds in ``30d``, ``12h``, ``1d12h``, ``90m``, ``45s``, ``2w``."""
    t = text.strip().lower()
    if not _DURATION.fullmatch(t):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration (a number and a unit s, m, h, d or w: 30d, 12h, 1d12h)"
        )
    return float(sum(int(n) * _UNIT[u] for n, u in re.findall(r"(\d+)([smhdw])", t)))


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", choices=["claude-code", "codex"])
    p.add_argument("--dir", help="where the transcripts are")
    since = "skip files last written before this long ago (30d, 12h, 1d12h)"
    p.add_argument("--since", type=duration, metavar="DURATION", help=since)


def run(args: argparse.Namespace, settings: Settings) -> int:
    source = SOURCES[args.source]
    root = Path(args.dir).expanduser() if args.dir else default_dir(args.source)
    root = root.resolve()
    url = redis_url(settings)
    state = state_path(settings.data_dir, source.name, root)
    since = None if args.since is None else time.time() - args.since

    async def main() -> None:
        stop = asyncio.Event()
        install_stop(stop)
        producer = Producer.from_url(
            url, prefix=settings.prefix, shards=settings.shards, max_body=settings.max_body
        )
        tailer = Tailer(source, root, state, producer, since=since)
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
