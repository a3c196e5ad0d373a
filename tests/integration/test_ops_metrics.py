"""The scrape-time stream gauges of writer/metrics.py against real Redis."""

from __future__ import annotations

import redis
from prometheus_client import CollectorRegistry, generate_latest
from redis.backoff import NoBackoff
from redis.retry import Retry

from rowcast.contract.keys import CONSUMER, GROUP, Keys
from rowcast.writer.metrics import StreamCollector


def test_stream_gauges(prefix: str, rsync: redis.Redis) -> None:
    keys = Keys(prefix)
    for i in range(6):
        rsync.xadd(keys.entries(0), {"n": str(i)})
    rsync.xgroup_create(keys.entries(0), GROUP, id="0")
    rsync.xreadgroup(GROUP, CONSUMER, {keys.entries(0): ">"}, count=2)
    rsync.xadd(keys.entries(1), {"n": "x"})  # no group yet: all of it is lag
    reg = CollectorRegistry()
    reg.register(StreamCollector(rsync, keys, [0, 1, 2]))

    def value(name: str, shard: int) -> float | None:
        return reg.get_sample_value(name, {"shard": str(shard)})

    assert value("rowcast_stream_length", 0) == 6
    assert value("rowcast_stream_lag", 0) == 4
    assert value("rowcast_stream_pending", 0) == 2
    assert value("rowcast_stream_lag", 1) == 1
    assert value("rowcast_stream_length", 2) == 0 and value("rowcast_stream_lag", 2) == 0
    assert b"rowcast_stream_lag" in generate_latest(reg)


def test_a_scrape_survives_redis_being_away(prefix: str) -> None:
    away = redis.Redis(port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    reg = CollectorRegistry()
    reg.register(StreamCollector(away, Keys(prefix), [0]))
    assert reg.get_sample_value("rowcast_stream_lag", {"shard": "0"}) is None
    away.close()
