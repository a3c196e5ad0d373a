"""Configuration errors are configuration errors (issue 10, point 6): exit 2
and one clear line, never "unexpected error"; writer and broadcaster say once
that a server is unreachable at start instead of retrying forever."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROWCAST = os.path.join(os.path.dirname(sys.executable), "rowcast")
DEAD_PG = "postgresql://postgres@127.0.0.1:1/nothing"
DEAD_REDIS = "redis://127.0.0.1:1/0"


def rowcast(args: list[str], **env: str) -> tuple[int, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("ROWCAST_")}
    full.update(env)
    r = subprocess.run(
        [ROWCAST, *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=90,
        stdin=subprocess.DEVNULL,
    )
    return r.returncode, r.stderr


@pytest.mark.parametrize(
    "args, redis, db, says",
    [
        (["status"], "garbage", None, "is not a Redis URL"),
        (["status"], "redis://127.0.0.1:notaport/0", None, "port is not a number"),
        (["migrate"], None, "garbage", "is not a PostgreSQL URL"),
        (["status"], "redis://{host}/99", None, "DB index is out of range"),
        (["broadcaster", "--port", "99999"], None, None, "99999 is not a port"),
        (["up", "--port", "-1"], None, None, "-1 is not a port"),
        (["writer"], DEAD_REDIS, None, "cannot reach Redis"),
        (["broadcaster", "--port", "0"], DEAD_REDIS, None, "cannot reach Redis"),
        (["writer"], None, DEAD_PG, "cannot reach PostgreSQL"),
        (["broadcaster", "--port", "0"], None, DEAD_PG, "cannot reach PostgreSQL"),
        (["writer"], "redis://{host}/99", None, "DB index is out of range"),
    ],
)
def test_configuration_errors_exit_2_with_one_line(args, redis, db, says, redis_url, db_url):
    host = redis_url.split("//", 1)[1].split("/", 1)[0]
    env = {
        "ROWCAST_REDIS_URL": (redis or redis_url).format(host=host),
        "ROWCAST_DATABASE_URL": db or db_url,
    }
    code, err = rowcast(args, **env)
    assert code == 2, err
    assert err.count("\n") == 1 and says in err and "unexpected" not in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args, env, says",
    [
        (["status"], {"ROWCAST_SECRET": "short"}, "ROWCAST_SECRET must be at least 32 bytes"),
        (["writer"], {"ROWCAST_SECRET": "short"}, "ROWCAST_SECRET must be at least 32 bytes"),
        (["migrate"], {"ROWCAST_SECRET": "short"}, "ROWCAST_SECRET must be at least 32 bytes"),
        (["status"], {"ROWCAST_COLLAPSE": "maybe"}, "ROWCAST_COLLAPSE='maybe' is not 1 or 0"),
        (["status"], {"ROWCAST_ROWS_MAXLEN": "0"}, "out of range (at least 1)"),
        (["status", "--log-level", "bogus"], {}, "invalid choice: 'BOGUS'"),
        (["produce", "--timeout", "nan"], {}, "nan is not a number of seconds above 0"),
        (["produce", "--timeout", "0"], {}, "0 is not a number of seconds above 0"),
    ],
)
def test_settings_and_options_checked_by_every_command(args, env, says, redis_url, db_url):
    code, err = rowcast(args, ROWCAST_REDIS_URL=redis_url, ROWCAST_DATABASE_URL=db_url, **env)
    assert code == 2, err
    assert err.count("\n") == 1 and says in err and "Traceback" not in err, err
