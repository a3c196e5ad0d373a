"""``rowcast token --session S [--ttl SECONDS]``: print a client token."""

from __future__ import annotations

import argparse

from broadcaster.auth import mint
from ops.settings import Settings
from producers.errors import ConfigError


def run(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.secret:
        raise ConfigError("ROWCAST_SECRET is not set: there is no key to sign tokens with")
    print(mint(settings.secret, args.session, args.ttl))
    return 0
