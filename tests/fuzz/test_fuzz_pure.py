"""Fuzzing the pure edges (no servers): JWT claims of every shape, WebSocket
client messages, `rowcast produce` input lines. Each answer is the clear,
expected refusal (Denied 401/403, BadRequest, InvalidEntry with one line),
never another exception."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from hypothesis import example, given
from hypothesis import strategies as st

from rowcast.broadcaster.auth import Denied, Grant, authorize, verify
from rowcast.broadcaster.ws import parse_message
from rowcast.contract.entry import Entry
from rowcast.contract.errors import BadRequest, InvalidEntry
from rowcast.ops.commands.produce import parse_line
from tests.fuzz.strategies import fuzz_settings, ids, json_values, odd_numbers

SECRET = "fuzz-secret-that-is-at-least-32-bytes-long"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def token(header: str, payload: str, key: bytes = SECRET.encode()) -> str:
    signing = f"{b64(header.encode())}.{b64(payload.encode())}"
    sig = hmac.new(key, signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{b64(sig)}"


claim_values = st.one_of(
    json_values.map(lambda v: json.dumps(v)),
    odd_numbers,
    st.floats(min_value=0, max_value=1e12).map(repr),
    st.just(str(int(time.time()) + 3600)),
)
sessions_claims = st.one_of(
    st.lists(ids, max_size=4).map(json.dumps),
    json_values.map(json.dumps),
    st.just('["*"]'),
)
headers = st.one_of(
    st.sampled_from(["HS256", "HS512", "none", "RS256", "hs256", ""]).map(
        lambda alg: json.dumps({"alg": alg, "typ": "JWT"})
    ),
    json_values.map(json.dumps),
    st.text(max_size=20),
)


@fuzz_settings(300)
@example(  # found by this test: an integer beyond a float crashed the exp check
    '{"alg": "HS256", "typ": "JWT"}', {"exp": "1" + "0" * 400, "sessions": '["*"]'}, True, None
)
@example('{"alg": "HS256", "typ": "JWT"}', {"exp": "NaN", "sessions": '["*"]'}, True, None)
@given(
    headers,
    st.dictionaries(
        st.sampled_from(["exp", "nbf", "iat", "sessions", "aud", "iss", "x"]),
        st.one_of(claim_values, sessions_claims),
        max_size=5,
    ),
    st.booleans(),
    st.one_of(st.none(), ids),
)
def test_jwt_claims_of_every_shape(header, claims, right_key, session):
    payload = "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in claims.items()) + "}"
    key = SECRET.encode() if right_key else b"another-key-another-key-another-key!"
    t = token(header, payload, key)
    try:
        grant = verify(SECRET, t)
    except Denied as e:
        assert e.status == 401 and e.reason and "\n" not in e.reason
    else:
        assert isinstance(grant, Grant) and grant.sessions
        assert grant.expires_at is not None and grant.expires_at < 253402300800
    try:
        authorize(SECRET, t, session)
    except Denied as e:
        assert e.status in (401, 403)


@fuzz_settings(200)
@given(st.binary(max_size=200) | st.text(max_size=9000).map(str.encode))
def test_tokens_that_are_not_tokens(raw):
    try:
        verify(SECRET, raw.decode("utf-8", "replace"))
    except Denied as e:
        assert e.status == 401


ws_messages = st.one_of(
    st.text(max_size=200),
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.one_of(st.sampled_from(["subscribe", "unsubscribe", "x"]), json_values),
            "session": st.one_of(ids, json_values),
            "after": st.one_of(st.integers(), json_values, st.just(2**63), st.just(-1)),
        },
    ).map(json.dumps),
    st.builds(
        lambda t, s, n: f'{{"type":"{t}","session":"{s}","after":{n}}}',
        st.sampled_from(["subscribe", "unsubscribe"]),
        st.sampled_from(["a", "b"]),
        odd_numbers,
    ),
)


@fuzz_settings(300)
@given(ws_messages)
def test_websocket_messages(text):
    try:
        msg = parse_message(text)
    except BadRequest as e:
        assert e.status == 400 and e.why and "\n" not in e.why
    else:
        assert msg["type"] in ("subscribe", "unsubscribe") and isinstance(msg["session"], str)
        if msg["type"] == "subscribe":
            assert isinstance(msg["after"], int) and 0 <= msg["after"] < 2**63


produce_lines = st.one_of(
    st.binary(max_size=120),
    st.fixed_dictionaries(
        {},
        optional={
            "op": st.one_of(st.sampled_from(["append", "upsert", "extend", "x"]), json_values),
            "session": st.one_of(ids, json_values),
            "row": st.one_of(ids, json_values),
            "kind": st.one_of(st.sampled_from(["user", "", "k" * 70]), json_values),
            "body": json_values,
        },
    ).map(lambda d: json.dumps(d).encode()),
    st.builds(
        lambda n, depth: (
            b'{"op":"append","session":"s","row":"r","kind":"k","body":'
            + b"[" * depth
            + n.encode()
            + b"]" * depth
            + b"}"
        ),
        odd_numbers,
        st.integers(min_value=0, max_value=1200),
    ),
)


@fuzz_settings(400)
@given(produce_lines)
def test_produce_lines(line):
    try:
        entry = parse_line(line, 1 << 20)
    except InvalidEntry as e:
        assert str(e) and "\n" not in str(e)
    else:
        assert isinstance(entry, Entry)
        json.loads(entry.body)  # what goes out is JSON text
