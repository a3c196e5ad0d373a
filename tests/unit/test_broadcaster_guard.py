"""The guard's pure decisions: origins, Host names, loopback."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rowcast.broadcaster.guard import (
    host_allowed,
    is_loopback_name,
    origin_allowed,
    origin_key,
    parse_origins,
    split_host,
)
from rowcast.contract.errors import ConfigError


def test_origin_keys_fill_in_default_ports_and_refuse_what_is_not_an_origin():
    assert origin_key("https://UI.example.com") == ("https", "ui.example.com", 443)
    assert origin_key("http://127.0.0.1:8000") == ("http", "127.0.0.1", 8000)
    assert origin_key("http://[::1]:8000") == ("http", "::1", 8000)
    for bad in ("null", "", "file://", "ftp://x", "http://x/path", "http://u@x", "http://x:99999"):
        assert origin_key(bad) is None, bad


def test_rowcast_origins_must_all_be_origins():
    assert parse_origins(["https://a.example", " ", "http://b:81"]) == {
        ("https", "a.example", 443),
        ("http", "b", 81),
    }
    with pytest.raises(ConfigError, match="not an origin"):
        parse_origins(["a.example"])


def test_hosts():
    assert split_host("127.0.0.1:8000") == ("127.0.0.1", 8000)
    assert split_host("[::1]") == ("::1", None)
    assert split_host("Localhost.") == ("localhost", None)
    assert split_host("a b") is None and split_host("x:70000") is None
    for name in ("localhost", "a.localhost", "127.0.0.1", "127.1.2.3", "::1"):
        assert is_loopback_name(name), name
    for name in ("evil.example", "localhost.evil.example", "10.0.0.1", "0.0.0.0"):
        assert not is_loopback_name(name), name
    assert host_allowed(None, secret=False)
    assert not host_allowed("evil.example:8000", secret=False)
    assert host_allowed("evil.example:8000", secret=True)


def test_own_origin_is_the_host_the_request_named():
    assert origin_allowed("http://127.0.0.1:8000", "127.0.0.1:8000", frozenset())
    assert origin_allowed("https://r.example.com", "r.example.com", frozenset())
    assert not origin_allowed("http://127.0.0.1:8001", "127.0.0.1:8000", frozenset())
    assert not origin_allowed("http://localhost:8000", "127.0.0.1:8000", frozenset())
    assert origin_allowed(None, "127.0.0.1:8000", frozenset())
    assert not origin_allowed("null", "127.0.0.1:8000", frozenset())


@given(st.text(max_size=80), st.text(max_size=80))
def test_any_header_text_gets_a_decision_not_an_exception(origin, host):
    assert isinstance(origin_allowed(origin, host, frozenset()), bool)
    assert isinstance(host_allowed(host, secret=False), bool)
