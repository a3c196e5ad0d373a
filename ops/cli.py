"""The ``rowcast`` command line. Exit status: 0 success, 1 a check failed,
2 bad usage or configuration; every error is one line on stderr."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from ops.settings import Settings
from producers.errors import CheckFailed, ConfigError, RowcastError, Unavailable

log = logging.getLogger("rowcast")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    g = common.add_argument_group("servers (override the ROWCAST_* environment)")
    g.add_argument("--redis-url", help="Redis server (ROWCAST_REDIS_URL)")
    g.add_argument("--database-url", help="PostgreSQL server (ROWCAST_DATABASE_URL)")
    g.add_argument("--prefix", help="prefix of every Redis key (ROWCAST_PREFIX)")
    g.add_argument("--shards", type=int, help="number of input shards (ROWCAST_SHARDS)")
    g.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")

    # Actions under dlq/jobs repeat the server options without defaults, so
    # `rowcast dlq --prefix X list` keeps X instead of the action's default.
    nested = _Parser(add_help=False, argument_default=argparse.SUPPRESS)
    g = nested.add_argument_group("servers (override the ROWCAST_* environment)")
    for flag in ("--redis-url", "--database-url", "--prefix", "--log-level"):
        g.add_argument(flag)
    g.add_argument("--shards", type=int)

    p = _Parser(prog="rowcast", description=__doc__)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=[common])

    c = cmd("up", "run writer and broadcaster (and embedded servers when no URLs are set)")
    c.add_argument("--demo", action="store_true", help="add synthetic connectors")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, default=8000)

    c = cmd("writer", "the writer alone; one process is active per shard")
    c.add_argument("--shard", type=int, action="append", help="only this shard (repeatable)")

    c = cmd("broadcaster", "the HTTP/WebSocket/SSE server and the web UI")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, default=8000)

    cmd("migrate", "apply the schema migrations (safe to run concurrently and repeatedly)")

    c = cmd("produce", "push entries read as JSON lines on stdin")
    c.add_argument("--wait", action="store_true", help="print one receipt per line")
    c.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a receipt")

    c = cmd("status", "per shard: length, lag, pending, last applied id, dead letters, lease")
    c.add_argument("--json", action="store_true")

    c = cmd("verify", "check every session's sequences and heads; exit 1 on any violation")
    c.add_argument("--json", action="store_true")

    c = cmd("repair", "renumber broken sessions densely in insertion order")
    c.add_argument("--session", help="only this session")
    c.add_argument("--dry-run", action="store_true", help="only list what would change")

    c = cmd("replay", "re-feed input entries from a stream offset (idempotent)")
    c.add_argument("--from", dest="from_id", required=True, metavar="ID")
    c.add_argument("--to", dest="to_id", metavar="ID")
    c.add_argument("--shard", type=int)

    c = cmd("dlq", "inspect and re-drive dead letters")
    dlq = c.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    dlq.required = True
    d = dlq.add_parser("list", help="show dead letters with their reasons", parents=[nested])
    d.add_argument("--shard", type=int)
    d.add_argument("--json", action="store_true")
    d.add_argument("--count", type=int, default=100)
    d = dlq.add_parser("retry", help="re-inject dead letters by id", parents=[nested])
    d.add_argument("ids", nargs="+", metavar="ID")
    d.add_argument("--shard", type=int)
    d = dlq.add_parser("purge", help="remove dead letters older than an id", parents=[nested])
    d.add_argument("--before", required=True, metavar="ID")
    d.add_argument("--shard", type=int)

    c = cmd("token", "print a client token for a session ('*' for all)")
    c.add_argument("--session", required=True, action="append")
    c.add_argument("--ttl", type=int, default=3600, metavar="SECONDS")

    c = cmd("jobs", "maintenance jobs: run them now, enqueue them on RQ, or schedule them")
    jobs = c.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    jobs.required = True
    names_help = "trim-entries, trim-rows, health, verify or all (default: all)"
    d = jobs.add_parser("run", help="run jobs now, in this process", parents=[nested])
    d.add_argument("names", nargs="*", metavar="JOB", help=names_help)
    d.add_argument("--json", action="store_true", help="print each job's result as JSON")
    d = jobs.add_parser("enqueue", help="enqueue jobs once on the RQ queue", parents=[nested])
    d.add_argument("names", nargs="*", metavar="JOB", help=names_help)
    d.add_argument("--queue", default="rowcast-maintenance")
    d = jobs.add_parser(
        "schedule", help="enqueue every job periodically until stopped", parents=[nested]
    )
    d.add_argument("--queue", default="rowcast-maintenance")
    d.add_argument(
        "--every",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="period of trim-entries, trim-rows and health (default 60)",
    )
    d.add_argument(
        "--verify-every",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="period of verify (default 3600)",
    )

    c = cmd("connect", "tail an agent's transcripts and push their rows")
    c.add_argument("source", choices=["claude-code", "codex"])
    c.add_argument("--dir", help="where the transcripts are")
    return p


# command -> module implementing ``run(args, settings) -> int``
_COMMANDS = {
    "up": "ops.up",
    "writer": "ops.writer_command",
    "broadcaster": "ops.broadcaster_command",
    "migrate": "ops.migrate",
    "produce": "ops.produce",
    "status": "ops.status",
    "verify": "ops.verify",
    "repair": "ops.repair",
    "replay": "ops.replay",
    "dlq": "ops.dlq",
    "token": "ops.token",
    "jobs": "ops.jobs",
    "connect": "ops.connect",
}


def _with_running_up(settings: Settings) -> Settings:
    """Without server URLs, use the embedded servers of a running `rowcast up`
    (found through the state file in ROWCAST_DATA_DIR), if there is one."""
    from ops.embedded import discover

    found = discover(settings.data_dir)
    if found is None:
        return settings
    return dataclasses.replace(
        settings,
        redis_url=settings.redis_url or found[0],
        database_url=settings.database_url or found[1],
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from ops import logs

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
        try:
            module = importlib.import_module(_COMMANDS[args.command])
        except ModuleNotFoundError as e:
            if e.name != _COMMANDS[args.command]:
                raise
            raise ConfigError(f"`rowcast {args.command}` is not built yet") from None
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
        log.debug("unexpected error", exc_info=True)
        print(f"rowcast: unexpected error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


def entry() -> NoReturn:
    raise SystemExit(main())


if __name__ == "__main__":
    entry()
