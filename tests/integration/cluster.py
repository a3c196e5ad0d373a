"""A throw-away local Redis Cluster for the tests, built from the system
``redis-server`` on free ports (3 masters, each with a replica for the failover
tests), and the session-wide one the cluster tests share (``shared``).

    with LocalCluster(masters=3, replicas=1) as cluster:     # or a pytest fixture that
        rc = redis.RedisCluster.from_url(cluster.startup_url)  # yields it (tests/conftest.py)
        cluster.kill_master(cluster.node_for_key("job:{42}"))
        cluster.wait_failover()
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

BUS_OFFSET = 10000  # Redis Cluster always uses port+10000 for the node-to-node bus.


def free_cluster_ports(count: int, avoid: frozenset[int] = frozenset({6379})) -> list[int]:
    """Ports p where both p and p+10000 are bindable now (small race window is accepted)."""
    ports: list[int] = []
    for _ in range(count * 200):
        # Ask the kernel for an ephemeral port, then check its bus twin; ephemeral ports
        # are usually > 32768, so p+10000 still fits below 65536 often enough.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if (
            p in avoid
            or p in ports
            or p + BUS_OFFSET > 65535
            or any(abs(p - q) == BUS_OFFSET for q in ports)
        ):  # bus ports must not collide
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", p + BUS_OFFSET))
            except OSError:
                continue
        ports.append(p)
        if len(ports) == count:
            return ports
    raise RuntimeError(f"could not find {count} free port pairs")


def _wait(pred: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except (redis.RedisError, OSError):
            pass  # nodes are expected to be unreachable / CLUSTERDOWN while converging
        time.sleep(step)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class LocalCluster:
    def __init__(
        self,
        masters: int = 3,
        replicas: int = 0,
        node_timeout_ms: int = 1000,
        server_bin: str = "redis-server",
        cli_bin: str = "redis-cli",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self.masters_count, self.replicas = masters, replicas
        self.node_timeout_ms = node_timeout_ms
        self.server_bin, self.cli_bin, self.extra_args = server_bin, cli_bin, extra_args
        self.ports: list[int] = []
        self.dir: str | None = None
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._admins: dict[int, redis.Redis] = {}

    # ----------------------------------------------------------------- lifecycle
    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> None:
        self.dir = tempfile.mkdtemp(prefix="redis-cluster-")
        self.ports = free_cluster_ports(self.masters_count * (1 + self.replicas))
        try:
            for p in self.ports:
                self._spawn(p)
            for p in self.ports:
                self._wait_ping(p, timeout)
            # redis-cli assigns the first N addresses as masters, the rest as replicas.
            subprocess.run(
                [
                    self.cli_bin,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{p}" for p in self.ports),
                    "--cluster-replicas",
                    str(self.replicas),
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=timeout,
            )
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.kill()  # no persistence, so a graceful SHUTDOWN buys nothing
            proc.wait(timeout=10)
        self.procs.clear()
        for client in self._admins.values():
            client.close()
        self._admins.clear()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def _spawn(self, port: int) -> None:
        node_dir = os.path.join(str(self.dir), str(port))
        os.makedirs(node_dir, exist_ok=True)
        args = [
            self.server_bin,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            node_dir,
            "--cluster-enabled",
            "yes",
            # nodes.conf is kept in node_dir so restart_node() rejoins with the same id.
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(self.node_timeout_ms),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            # default 5 s delay before diskless full sync would dominate start-up time
            "--repl-diskless-sync-delay",
            "0",
            "--logfile",
            os.path.join(node_dir, "redis.log"),
            *self.extra_args,
        ]
        # Config errors are printed to stderr before --logfile is opened: keep them.
        with open(os.path.join(node_dir, "stderr.log"), "ab") as err:
            self.procs[port] = subprocess.Popen(args, stdout=err, stderr=err)

    def _wait_ping(self, port: int, timeout: float) -> None:
        def up() -> bool:
            if self.procs[port].poll() is not None:  # bad config: fail fast, show why
                d = os.path.join(str(self.dir), str(port))
                logs = [
                    Path(d, f).read_text(errors="replace")[-600:]
                    for f in ("stderr.log", "redis.log")
                    if Path(d, f).exists()
                ]
                raise RuntimeError(f"redis-server {port} exited:\n" + "\n".join(logs))
            return bool(self.admin(port).ping())

        _wait(up, timeout, f"node {port} to answer PING")

    # ----------------------------------------------------------------- topology
    @property
    def alive_ports(self) -> list[int]:
        return [p for p in self.ports if p in self.procs and self.procs[p].poll() is None]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", p) for p in self.ports]

    @property
    def url(self) -> str:
        """Multi-host URL (the project's format); redis-py itself only parses one host."""
        return "redis+cluster://" + ",".join(f"{h}:{p}" for h, p in self.startup_nodes)

    @property
    def startup_url(self) -> str:
        """Single-node URL that ``RedisCluster.from_url`` understands."""
        return f"redis://127.0.0.1:{self.alive_ports[0]}"

    def admin(self, port: int) -> redis.Redis:
        # Plain (non-cluster) client: administrative commands must hit exactly this node.
        # Cached per port; its pool reconnects by itself after restart_node().
        if port not in self._admins:
            # No client-side retries: the harness polls, and must see failures at once.
            self._admins[port] = redis.Redis(
                port=port,
                decode_responses=True,
                socket_timeout=2,
                socket_connect_timeout=1,
                retry=Retry(NoBackoff(), 0),
            )
        return self._admins[port]

    def _info(self, port: int) -> dict[str, str]:
        # redis-py already parses CLUSTER INFO into a dict; normalise values to str.
        raw = self.admin(port).execute_command("CLUSTER INFO")
        return {str(k): str(v) for k, v in raw.items()}

    def slot_map(self, via: int | None = None) -> list[tuple[int, int, int]]:
        """[(start, end, master_port)] as seen by one alive node."""
        port = via if via is not None else self.alive_ports[0]
        rows = self.admin(port).execute_command("CLUSTER SLOTS")
        return [(int(r[0]), int(r[1]), int(r[2][1])) for r in rows]

    def master_ports(self) -> list[int]:
        return sorted({m for _, _, m in self.slot_map()})

    def node_for_key(self, key: str | bytes) -> int:
        slot = key_slot(key.encode() if isinstance(key, str) else key)  # honours {hash tags}
        for start, end, port in self.slot_map():
            if start <= slot <= end:
                return port
        raise LookupError(f"slot {slot} is not served")

    def replicas_of(self, master_port: int) -> list[int]:
        rows = self.admin(master_port).info("replication")
        return [int(v["port"]) for k, v in rows.items() if k.startswith("slave")]

    # ----------------------------------------------------------------- health
    def _healthy_from(self, port: int) -> bool:
        info = self._info(port)
        # A replica still in its initial full sync cannot be promoted: wait for link up.
        link = self.admin(port).info("replication").get("master_link_status", "up")
        return (
            info.get("cluster_state") == "ok"
            and link == "up"
            and info.get("cluster_slots_assigned") == "16384"
            and info.get("cluster_slots_ok") == "16384"
            and int(info.get("cluster_known_nodes", 0)) >= len(self.ports)
        )

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Every alive node says ok, knows every node, and is in sync with its master."""
        for p in self.alive_ports:
            _wait(partial(self._healthy_from, p), timeout, f"cluster_state ok on {p}")
        # Gossip spreads the topology slowly; wait until all nodes agree on the slot map,
        # otherwise clients may be fed a stale map right after start.
        _wait(
            lambda: len({tuple(self.slot_map(p)) for p in self.alive_ports}) == 1,
            timeout,
            "all nodes agreeing on CLUSTER SLOTS",
        )

    # ----------------------------------------------------------------- chaos
    def kill_master(self, port: int) -> None:
        if port not in self.master_ports():
            raise ValueError(f"{port} is not a master")
        self.kill_node(port)

    def kill_node(self, port: int) -> None:
        self.procs[port].send_signal(signal.SIGKILL)  # no clean shutdown: a crashed host
        self.procs[port].wait(timeout=10)

    def wait_failover(self, timeout: float = 30.0) -> float:
        """Block until every surviving node says cluster_state ok and no slot is owned by
        a dead node (i.e. a replica was promoted); returns seconds waited. Needs R >= 1."""
        t0, dead = time.monotonic(), set(self.ports) - set(self.alive_ports)

        def done() -> bool:
            for p in self.alive_ports:
                info = self._info(p)
                if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != "16384":
                    return False
                if any(m in dead for _, _, m in self.slot_map(p)):
                    return False
            return True

        _wait(done, timeout, "failover", step=0.02)
        return time.monotonic() - t0

    def restart_node(self, port: int, timeout: float = 30.0) -> None:
        """Start a killed node again; with its nodes.conf it rejoins (as a replica if it
        was failed over). The data is gone (no persistence), so it resyncs."""
        if port in self.alive_ports:
            raise ValueError(f"{port} is still running")
        self._spawn(port)
        self._wait_ping(port, timeout)
        self.wait_healthy(timeout)

    def move_slot(self, slot: int, dst: int) -> int:
        """Move a slot, its keys included, to master ``dst`` (what ``redis-cli
        --cluster reshard`` does): clients holding the old map get MOVED or ASK
        meanwhile. Returns the old owner's port."""
        src = next(p for lo, hi, p in self.slot_map() if lo <= slot <= hi)
        if src == dst:
            return src
        sid = self.admin(src).execute_command("CLUSTER MYID")
        did = self.admin(dst).execute_command("CLUSTER MYID")
        self.admin(dst).execute_command("CLUSTER SETSLOT", slot, "IMPORTING", sid)
        self.admin(src).execute_command("CLUSTER SETSLOT", slot, "MIGRATING", did)
        while True:
            keys = self.admin(src).execute_command("CLUSTER GETKEYSINSLOT", slot, 100)
            if not keys:
                break
            self.admin(src).execute_command("MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", *keys)
        for p in [dst, src, *(m for m in self.master_ports() if m not in (src, dst))]:
            self.admin(p).execute_command("CLUSTER SETSLOT", slot, "NODE", did)
        self.wait_healthy()
        return src


_SHARED: list[LocalCluster] = []


def shared() -> LocalCluster:
    """The one cluster of this test run (started at first use, stopped at exit).
    Tests keep to their own key prefix; a test that kills a node restarts it."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("Redis Cluster tests need redis-server and redis-cli (Debian's redis-server)")
    if not _SHARED:
        cluster = LocalCluster(masters=3, replicas=1, node_timeout_ms=1000)
        cluster.start()
        _SHARED.append(cluster)
        atexit.register(cluster.stop)
    cluster = _SHARED[0]
    for port in cluster.ports:  # an earlier test's kill that was not undone
        if port not in cluster.alive_ports:
            cluster.restart_node(port)
    return cluster
