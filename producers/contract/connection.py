"""Redis clients for every stage, made from one URL.

``redis://`` / ``rediss://`` / ``unix://`` name one server (or Valkey) and give
redis-py's plain clients. ``redis+cluster://[user:pass@]h1:p1[,h2:p2...][/?opts]``
(``rediss+cluster://`` with TLS) names a Redis Cluster by one or more of its
nodes and gives redis-py's cluster clients, which follow MOVED and ASK and
find a promoted replica after a failover by themselves. redis-py's own
``from_url`` understands one host only, so the host list is cut off here and
the rest of the URL (credentials, query options) is parsed by redis-py.

A URL rowcast cannot use is a ``ConfigError`` (the CLI exits 2 with one line).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aredis
from redis import exceptions as rexc
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url

from rowcast.contract.errors import ConfigError, RowcastError, Unavailable, one_line

PLAIN_SCHEMES = ("redis", "rediss", "unix")
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

TRANSIENT: tuple[type[BaseException], ...] = (
    rexc.ConnectionError,
    rexc.TimeoutError,
    # A cluster between a master's death and its replica's promotion, or in
    # the middle of a slot migration: routing trouble that passes.
    rexc.ClusterDownError,
    rexc.TryAgainError,
    rexc.ClusterError,
    rexc.SlotNotCoveredError,
    rexc.MovedError,
    rexc.AskError,
)
"""Errors that mean "Redis is not reachable for this key right now", never
"the key is missing": a caller backs off and tries again (or reports it)."""

TRANSIENT_OR_OS: tuple[type[BaseException], ...] = (*TRANSIENT, OSError)

AnyRedis = redis.Redis | RedisCluster
AnyAsyncRedis = aredis.Redis | AsyncRedisCluster


@dataclass(frozen=True)
class Target:
    """What a Redis URL names."""

    url: str
    cluster: bool
    nodes: tuple[tuple[str, int], ...] = ()
    """A cluster's startup nodes (any reachable one is enough)."""
    options: dict[str, Any] = field(default_factory=dict)
    """A cluster's connection options (credentials, TLS, timeouts from the query)."""

    def describe(self) -> str:
        if not self.cluster:
            return "a single Redis server"
        return "a Redis Cluster (via " + ", ".join(f"{h}:{p}" for h, p in self.nodes) + ")"


def parse(url: str) -> Target:
    """Check a Redis URL and say what it names (raises ConfigError)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in PLAIN_SCHEMES:
        try:
            parse_url(url)
        except ValueError as e:
            raise ConfigError(f"bad Redis URL {_redact(url)}: {e}") from None
        return Target(url, cluster=False)
    if scheme not in CLUSTER_SCHEMES:
        raise ConfigError(
            f"bad Redis URL {_redact(url)}: it is not a Redis URL (the scheme must be"
            " redis://, rediss://, unix://, redis+cluster:// or rediss+cluster://)"
        )
    try:
        return _cluster_target(url, CLUSTER_SCHEMES[scheme])
    except ValueError as e:
        raise ConfigError(f"bad Redis URL {_redact(url)}: {e}") from None


def _cluster_target(url: str, scheme: str) -> Target:
    parts = urlsplit(url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    nodes: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        if item.startswith("["):  # [ipv6]:port
            host, _, rest = item[1:].partition("]")
            port_text = rest.removeprefix(":")
        else:
            host, _, port_text = item.partition(":")
        if not host:
            raise ValueError("every node needs a host (host:port[,host:port...])")
        try:
            port = int(port_text or "6379")
        except ValueError:
            raise ValueError(f"port {port_text!r} of {host} is not a number") from None
        if not 0 < port < 65536:
            raise ValueError(f"port {port} of {host} is out of range")
        nodes.append((host, port))
    # The rest of the URL is parsed by redis-py itself, on a one-host URL,
    # so quoting and query options mean what they mean to redis-py.
    first = f"[{nodes[0][0]}]" if ":" in nodes[0][0] else nodes[0][0]
    netloc = (userinfo + "@" if userinfo else "") + f"{first}:{nodes[0][1]}"
    options = parse_url(urlunsplit((scheme, netloc, parts.path, parts.query, "")))
    for k in ("host", "port", "connection_class"):
        options.pop(k, None)
    if options.pop("db", 0) not in (0, None):
        raise ValueError("a Redis Cluster has database 0 only")
    if scheme == "rediss":
        options["ssl"] = True
    return Target(url, cluster=True, nodes=tuple(nodes), options=options)


def _redact(url: str) -> str:
    """The URL without its password (it goes into error lines and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparsable)"
    if "@" not in parts.netloc:
        return url
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit((parts.scheme, f"{user}:***@{hosts}", parts.path, parts.query, ""))


def _cluster_options(t: Target, overrides: dict[str, Any]) -> dict[str, Any]:
    # redis-py's async cluster client times sockets out after 5 s by default;
    # the plain clients wait. Blocking reads (receipts, the writer's XREAD)
    # would be cut and retried, so behave like the plain clients unless told.
    opts: dict[str, Any] = {"socket_timeout": None, **t.options, **overrides}
    opts.pop("single_connection_client", None)
    return opts


def sync_client(url: str, **overrides: Any) -> AnyRedis:
    """A synchronous client: ``redis.Redis`` or ``redis.cluster.RedisCluster``."""
    t = parse(url)
    if not t.cluster:
        return redis.Redis.from_url(url, **overrides)
    return RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in t.nodes], **_cluster_options(t, overrides)
    )


def async_client(url: str, **overrides: Any) -> AnyAsyncRedis:
    """An asyncio client: ``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster``
    (which connects at its first command)."""
    t = parse(url)
    if not t.cluster:
        return aredis.Redis.from_url(url, **overrides)
    return AsyncRedisCluster(
        startup_nodes=[AsyncClusterNode(h, p) for h, p in t.nodes],
        **_cluster_options(t, overrides),
    )


def node_client(node: AsyncClusterNode, **overrides: Any) -> aredis.Redis:
    """A plain asyncio client of one node of a cluster, connecting exactly as
    the cluster client does (credentials, TLS, timeouts): for what must run on
    one node's own connection (sharded pub/sub, WAIT after a write)."""
    kwargs = {**node.connection_kwargs, **overrides}
    pool = aredis.ConnectionPool(connection_class=node.connection_class, **kwargs)
    return aredis.Redis.from_pool(pool)  # closing the client closes its pool


def is_cluster(client: Any) -> bool:
    return isinstance(client, (RedisCluster, AsyncRedisCluster))


async def owners(client: AsyncRedisCluster, keys: Sequence[str]) -> dict[str, tuple[str, int]]:
    """key (or shard channel) -> (host, port) of the master serving its slot now."""
    await client.initialize()
    out: dict[str, tuple[str, int]] = {}
    for k in keys:
        node = client.get_node_from_key(k)
        assert node is not None  # initialized: every slot has an owner
        out[k] = (node.host, int(node.port))
    return out


def explain(e: BaseException) -> RowcastError | None:
    """rowcast's error for a redis-py error met at a boundary (None: not Redis
    trouble). A redirect reaching the caller means a plain URL names one node
    of a cluster: a configuration error, never "no such key"."""
    if isinstance(e, (rexc.MovedError, rexc.AskError)):
        return ConfigError(
            f"Redis answered {'MOVED' if isinstance(e, rexc.MovedError) else 'ASK'}"
            f" ({e.slot_id} {e.host}:{e.port}): the URL names one node of a Redis Cluster;"
            " name the cluster with redis+cluster://host:port[,host:port...]"
        )
    if isinstance(e, (*TRANSIENT_OR_OS, rexc.RedisClusterException)):
        return Unavailable(f"Redis: {one_line(e)}")
    return None
