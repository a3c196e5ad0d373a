"""``rowcast token --session S [--ttl SECONDS]``: print a client token."""

from __future__ import annotations

import argparse

from rowcast.broadcaster.auth import mint
from rowcast.contract.errors import ConfigError
from rowcast.ops.settings import Settings


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--session", required=True, action="append")
    p.add_argument("--ttl", type=int, default=3600, metavar="SECONDS")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.secret:
        raise ConfigError("ROWCAST_SECRET is not set: there is no key to sign tokens with")
    print(mint(settings.secret, args.session, args.ttl))
    return 0
