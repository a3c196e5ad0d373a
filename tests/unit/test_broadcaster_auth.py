"""Authorization decisions (pure): tokens, grants, 401 and 403."""

from __future__ import annotations

import time

import jwt
import pytest

from rowcast.broadcaster.auth import OPEN, Denied, authorize, mint, token_from, verify
from rowcast.broadcaster.server import check_listen, is_loopback
from rowcast.contract.errors import ConfigError

SECRET = "a-secret-of-at-least-thirty-two-bytes!"
OTHER = "another-secret-of-thirty-two-bytes-or-more"


def test_a_token_grants_its_sessions_until_it_expires():
    now = 1_700_000_000
    token = mint(SECRET, ["a", "b"], ttl=60, now=now)
    grant = verify(SECRET, token, now=now + 59)
    assert grant.allows("a") and grant.allows("b") and not grant.allows("c")
    assert not grant.everything
    assert grant.expires_at == now + 60
    with pytest.raises(Denied) as e:
        verify(SECRET, token, now=now + 60)
    assert e.value.status == 401 and "expired" in e.value.reason


def test_star_grants_everything():
    grant = verify(SECRET, mint(SECRET, ["*"], ttl=60))
    assert grant.everything and grant.allows("anything")


def test_tokens_signed_with_another_secret_or_mangled_are_refused():
    token = mint(OTHER, ["a"], ttl=60)
    for bad in (token, "not-a-token", token[:-3] + "abc"):
        with pytest.raises(Denied) as e:
            verify(SECRET, bad)
        assert e.value.status == 401


def test_tokens_without_exp_or_sessions_or_with_another_algorithm_are_refused():
    key = SECRET.encode()
    no_exp = jwt.encode({"sessions": ["a"]}, key, algorithm="HS256")
    no_sessions = jwt.encode({"exp": time.time() + 60}, key, algorithm="HS256")
    bad_sessions = jwt.encode({"exp": time.time() + 60, "sessions": "a"}, key, algorithm="HS256")
    hs512 = jwt.encode({"exp": time.time() + 60, "sessions": ["a"]}, key + key, algorithm="HS512")
    for token in (no_exp, no_sessions, bad_sessions, hs512):
        with pytest.raises(Denied) as e:
            verify(SECRET, token)
        assert e.value.status == 401


def test_authorize_matrix():
    token_a = mint(SECRET, ["a"], ttl=60)
    star = mint(SECRET, ["*"], ttl=60)
    assert authorize(None, None, "a") is OPEN
    assert authorize(None, None, everything=True) is OPEN

    def status(token: str | None, session: str | None = None, everything: bool = False) -> int:
        try:
            authorize(SECRET, token, session, everything=everything)
        except Denied as e:
            return e.status
        return 200

    assert status(None) == 401
    assert status(None, "a") == 401
    assert status(token_a) == 200
    assert status(token_a, "a") == 200
    assert status(token_a, "b") == 403
    assert status(token_a, everything=True) == 403
    assert status(star, "b") == 200
    assert status(star, everything=True) == 200


def test_token_from_header_or_query():
    assert token_from({"authorization": "Bearer abc"}, {"token": "q"}) == "abc"
    assert token_from({"authorization": "Basic xyz"}, {"token": "q"}) == "q"
    assert token_from({}, {}) is None


def test_short_secrets_and_empty_grants_are_configuration_errors():
    with pytest.raises(ConfigError):
        mint("short", ["a"], ttl=60)
    with pytest.raises(ConfigError):
        mint(SECRET, [], ttl=60)
    with pytest.raises(ConfigError):
        mint(SECRET, ["a"], ttl=0)


def test_without_a_secret_only_loopback_may_listen():
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"):
        assert is_loopback(host)
        check_listen(host, None)
    for host in ("0.0.0.0", "::", "192.0.2.1", "example.com"):
        assert not is_loopback(host)
        with pytest.raises(ConfigError):
            check_listen(host, None)
        check_listen(host, SECRET)


def test_a_taken_port_is_one_clear_configuration_error():
    import socket

    from rowcast.broadcaster.server import bind

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError) as e:
            bind("127.0.0.1", port)
    assert str(e.value) == f"cannot listen on 127.0.0.1:{port}: Address already in use"
