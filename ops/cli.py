"""The ``rowcast`` command line. Exit status: 0 success, 1 a check failed,
2 bad usage or configuration; every error is one line on stderr.

Each command lives in its own module, with its options beside it (as rq
keeps a command's options beside its function): ``arguments(parser)`` adds
them and ``run(args, settings) -> int`` does the work. Only the chosen
command's module is imported, so ``rowcast status`` does not load the web
server.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

from rowcast.contract.errors import (
    CheckFailed,
    ConfigError,
    RowcastError,
    Unavailable,
    one_line,
)
from rowcast.ops import logs
from rowcast.ops.settings import Settings

log = logging.getLogger("rowcast")

COMMANDS: dict[str, tuple[str, str]] = {
    "up": (
        "rowcast.ops.commands.up",
        "run writer and broadcaster (and embedded servers when no URLs are set)",
    ),
    "writer": ("rowcast.ops.commands.writer", "the writer alone; one process is active per shard"),
    "broadcaster": (
        "rowcast.ops.commands.broadcaster",
        "the HTTP/WebSocket/SSE server and the web UI",
    ),
    "migrate": (
        "rowcast.ops.schema.migrate",
        "apply the schema migrations (safe to run concurrently and repeatedly)",
    ),
    "produce": ("rowcast.ops.commands.produce", "push entries read as JSON lines on stdin"),
    "status": (
        "rowcast.ops.admin.status",
        "per shard: length, lag, pending, last applied id, dead letters, lease",
    ),
    "verify": (
        "rowcast.ops.admin.verify",
        "check every session's sequences and heads; exit 1 on any violation",
    ),
    "repair": ("rowcast.ops.admin.repair", "renumber broken sessions densely in insertion order"),
    "replay": ("rowcast.ops.admin.replay", "re-feed input entries from a stream offset"),
    "dlq": ("rowcast.ops.admin.dlq", "inspect and re-drive dead letters"),
    "token": ("rowcast.ops.commands.token", "print a client token for a session ('*' for all)"),
    "jobs": (
        "rowcast.ops.admin.jobs",
        "maintenance jobs: run them now, enqueue them on RQ, or schedule them",
    ),
    "connect": ("rowcast.ops.commands.connect", "tail an agent's transcripts and push their rows"),
}
"""command -> (module, one line of help)"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(2)


def _server_options(nested: bool) -> _Parser:
    """The options every command takes. Actions under dlq/jobs repeat them
    without defaults (``nested``), so `rowcast dlq --prefix X list` keeps X."""
    p = _Parser(add_help=False, argument_default=argparse.SUPPRESS if nested else None)
    g = p.add_argument_group("servers (override the ROWCAST_* environment)")
    g.add_argument("--redis-url", help="Redis server (ROWCAST_REDIS_URL)")
    g.add_argument("--database-url", help="PostgreSQL server (ROWCAST_DATABASE_URL)")
    g.add_argument("--prefix", help="prefix of every Redis key (ROWCAST_PREFIX)")
    g.add_argument("--shards", type=int, help="number of input shards (ROWCAST_SHARDS)")
    g.add_argument(
        "--log-level",
        default=argparse.SUPPRESS if nested else "INFO",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        help="DEBUG, INFO, WARNING, ERROR or CRITICAL",
    )
    return p


def _parser(chosen: str | None) -> tuple[argparse.ArgumentParser, ModuleType | None]:
    common, nested = _server_options(False), _server_options(True)
    p = _Parser(prog="rowcast", description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    module = None
    for name, (path, help) in COMMANDS.items():
        c = sub.add_parser(name, help=help, description=help, parents=[common])
        if name != chosen:
            continue
        module = importlib.import_module(path)
        add = getattr(module, "arguments", None)
        if add is not None and add.__code__.co_argcount == 2:
            add(c, nested)
        elif add is not None:
            add(c)
    return p, module


def _with_running_up(settings: Settings) -> Settings:
    """Without server URLs, use the embedded servers of a running `rowcast up`
    (found through the state file in ROWCAST_DATA_DIR), if there is one."""
    from rowcast.ops.embedded.servers import discover

    found = discover(settings.data_dir)
    if found is None:
        return settings
    return dataclasses.replace(
        settings,
        redis_url=settings.redis_url or found[0],
        database_url=settings.database_url or found[1],
    )


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, ModuleType]:
    """The parsed arguments and the chosen command's module (exit 2 on bad usage)."""
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser, module = _parser(chosen if chosen in COMMANDS else None)
    args = parser.parse_args(argv)
    assert module is not None  # parse_args exits on an unknown command
    return args, module


def main(argv: Sequence[str] | None = None) -> int:
    args, module = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        logs.configure(args.log_level.upper())
        settings = Settings.from_env(
            redis_url=args.redis_url,
            database_url=args.database_url,
            prefix=args.prefix,
            shards=args.shards,
        )
        if args.command != "up" and not (settings.redis_url and settings.database_url):
            settings = _with_running_up(settings)
        code: int = module.run(args, settings)
        return code
    except CheckFailed as e:
        print(f"rowcast: {e}", file=sys.stderr)
        return 1
    except (ConfigError, Unavailable) as e:
        print(f"rowcast: {e}", file=sys.stderr)
        return 2
    except RowcastError as e:
        print(f"rowcast: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # the promise: one line, never a bare traceback
        driver = _driver_error(e)
        if driver is not None:
            code, line = driver
            print(f"rowcast: {line}", file=sys.stderr)
            return code
        log.debug("unexpected error", exc_info=True)
        print(f"rowcast: unexpected error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


def _driver_error(e: Exception) -> tuple[int, str] | None:
    """A Redis or PostgreSQL error no command translated: the server refused
    how it is addressed (a db number it lacks, a password) or cannot be
    reached: exit 2 with the server's own line; another refusal exit 1."""
    rexc = sys.modules.get("redis.exceptions")
    if rexc is not None and isinstance(e, rexc.RedisError):
        text = one_line(e)
        config = isinstance(e, rexc.ConnectionError | rexc.TimeoutError | rexc.AuthenticationError)
        if config or any(w in text for w in ("DB index", "NOAUTH", "WRONGPASS", "NOPERM")):
            return 2, f"Redis: {text} (check ROWCAST_REDIS_URL)"
        return 1, f"Redis: {text}"
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(e, psycopg.Error):
        if isinstance(e, psycopg.OperationalError):
            return 2, f"PostgreSQL: {one_line(e)} (check ROWCAST_DATABASE_URL)"
        return 1, f"PostgreSQL: {one_line(e)}"
    return None


def entry() -> NoReturn:
    raise SystemExit(main())


if __name__ == "__main__":
    entry()
