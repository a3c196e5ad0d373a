"""Issue 12's benchmark in one sitting: the write path beside its baselines,
the stage breakdown at idle and under load, and the fan-out beside
encode/broadcaster.

    python -m tests.bench.report [--entries 100000] [--floor 300]
        [--load-rate 2000] [--rates 10,1000,2000,5000] [--seconds 10]

Runs, one after the other on this machine (so every figure shares its
conditions), and prints each one's own report:

1. ``tests.bench.write``: the naive per-entry write, the set-based SQL alone
   and the real writer end to end, with CPU per entry of the writer, its
   PostgreSQL backend and Redis;
2. ``tests.bench.floor --screen``: XADD → a WebSocket client stage by
   stage, through the writer and a real broadcaster, idle (one entry every
   30 ms) and beside ``--load-rate`` entries/s;
3. ``tests.bench.sidebyside --peer --pin``: 1,000 WebSocket clients over 100
   sessions at each rate, rowcast and encode/broadcaster 0.3.1, with CPU per
   delivery.

Same environment as those (ROWCAST_REDIS_URL on one server, an admin
ROWCAST_DATABASE_URL); loopback only, each part bounded by its own limits.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time


def _run(title: str, module: str, *args: str) -> int:
    cmd = [sys.executable, "-m", module, *args]
    print(f"\n## {title}\n\n$ python -m {module} {' '.join(args)}\n", flush=True)
    started = time.monotonic()
    code = subprocess.call(cmd)
    print(f"\n({time.monotonic() - started:.0f} s, exit {code})", flush=True)
    return code


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--entries", type=int, default=100_000, help="entries of the write run")
    ap.add_argument("--naive", type=int, default=3000, help="entries of the naive baseline")
    ap.add_argument("--floor", type=int, default=300, help="probe entries of each floor run")
    ap.add_argument("--load-rate", type=int, default=2000, help="entries/s beside the probes")
    ap.add_argument("--rates", default="10,1000,2000,5000", help="fan-out rates, entries/s")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each fan-out run")
    a = ap.parse_args()
    if not 1_000 <= a.entries <= 1_000_000 or not 1 <= a.floor <= 10_000:
        ap.error("--entries must be in 1000..1000000 and --floor in 1..10000")
    floor = ["--entries", str(a.floor), "--gap-ms", "30", "--screen"]
    codes = [
        _run(
            "Write path",
            "tests.bench.write",
            "--entries", str(a.entries), "--naive", str(a.naive),
        ),
        _run("Stage breakdown, idle", "tests.bench.floor", *floor),
        _run(
            f"Stage breakdown beside {a.load_rate} entries/s",
            "tests.bench.floor", *floor, "--rate", str(a.load_rate),
        ),
        _run(
            "Fan-out, side by side",
            "tests.bench.sidebyside",
            "--clients", "1000", "--sessions", "100", "--rates", a.rates,
            "--seconds", str(a.seconds), "--peer", "--pin",
        ),
    ]  # fmt: skip
    sys.exit(max(codes))


if __name__ == "__main__":
    main()
