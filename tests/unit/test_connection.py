"""Redis URLs: what each names, and a clear ConfigError for what rowcast
cannot use (no server needed: cluster clients connect lazily or are not made)."""

from __future__ import annotations

import pytest
import redis

from rowcast.contract.connection import TRANSIENT, explain, parse, sync_client
from rowcast.contract.errors import ConfigError, Unavailable


def test_plain_urls_name_one_server() -> None:
    for url in ("redis://127.0.0.1:6379/0", "rediss://h:6380", "unix:///tmp/redis.sock"):
        t = parse(url)
        assert not t.cluster and t.url == url
    assert isinstance(sync_client("redis://127.0.0.1:1/0"), redis.Redis)


def test_cluster_urls_name_nodes_and_keep_redis_pys_options() -> None:
    t = parse("redis+cluster://u:p%40ss@10.0.0.1:7000,10.0.0.2,[::1]:7002/?socket_timeout=3")
    assert t.cluster
    assert t.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002))
    assert t.options["username"] == "u" and t.options["password"] == "p@ss"
    assert t.options["socket_timeout"] == 3.0
    assert "ssl" not in t.options
    assert parse("rediss+cluster://h:7000").options["ssl"] is True
    assert parse("REDIS+CLUSTER://h:7000/0").cluster


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:6379", "scheme"),
        ("127.0.0.1:6379", "scheme"),
        ("redis+cluster://", "host"),
        ("redis+cluster://h:7000,:7001", "host"),
        ("redis+cluster://h:port", "not a number"),
        ("redis+cluster://h:70000", "out of range"),
        ("redis+cluster://h:7000/2", "database 0"),
        ("redis://h:6379/?socket_timeout=soon", "socket_timeout"),
    ],
)
def test_bad_urls_are_configuration_errors(url: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        parse(url)


def test_a_password_never_reaches_the_error_line() -> None:
    with pytest.raises(ConfigError) as e:
        parse("redis+cluster://u:secret@h:port")
    assert "secret" not in str(e.value) and "u:***@" in str(e.value)


def test_a_redirect_is_a_configuration_error_never_a_missing_key() -> None:
    moved = explain(redis.exceptions.MovedError("3999 127.0.0.1:7001"))
    assert isinstance(moved, ConfigError) and "redis+cluster://" in str(moved)
    for e in (
        redis.exceptions.ConnectionError("gone"),
        redis.exceptions.ClusterDownError("CLUSTERDOWN The cluster is down"),
        redis.exceptions.TryAgainError("TRYAGAIN"),
    ):
        assert isinstance(e, TRANSIENT)
        assert isinstance(explain(e), Unavailable)
    assert explain(redis.exceptions.ResponseError("no such key")) is None
