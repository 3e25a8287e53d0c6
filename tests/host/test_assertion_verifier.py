"""The origin-side verifier (tools/entragate_assertion.py): it trusts exactly the key set the
gateway publishes now. A local JWKS server on 127.0.0.1 counts fetches; the key cache runs
on a fake clock (the assertions' own exp/iat are checked against the real one)."""

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from entragate_assertion import (
    JWKS_COOLDOWN_SECONDS, JWKS_MAX_AGE_SECONDS, JWKS_MAX_STALE_SECONDS, MAX_JWKS_BYTES, AssertionVerifier,
)
from entragate_tools.host_crypto import HostSigner, new_assertion_key

from entragate.assertion import assertion_claims, parse_signing_key, sign_assertion
from entragate.identity import USER, Identity

IDENTITY = Identity(
    oid="o", tid="t", sub="s", name="N", username="u@x", groups=("g",), groups_overage=False,
    roles=("R",), scopes=("access_as_user",), client_id="c", kind=USER, version="2.0", issuer="i",
    audience="a", expires_at=0,
)
AUDIENCE = "https://o"


class Key:
    """An assertion signing key: its public JWK and assertions signed with it."""

    def __init__(self):
        self.private, self.public = parse_signing_key(new_assertion_key())

    def assertion(self, kid: str | None = None) -> str:
        claims = assertion_claims(IDENTITY, [], issuer="entragate", audience=AUDIENCE, now=time.time(),
                                  request_id="r", method="GET", url=AUDIENCE + "/p", rule="api")
        return asyncio.run(sign_assertion(HostSigner(self.private), kid or self.public["kid"], claims))


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Gateway:
    """What the gateway's jwks.json answers: `keys`, or a fault (`mode`)."""

    def __init__(self):
        self.keys: list[dict] = []
        self.mode = "ok"
        self.fetches = 0
        self.url = ""

    def publish(self, *keys: Key) -> None:
        self.keys = [key.public for key in keys]


@pytest.fixture
def gateway():
    state = Gateway()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            state.fetches += 1
            status, headers, body = 200, {"content-type": "application/json"}, json.dumps({"keys": state.keys}).encode()
            if state.mode == "down":
                status, body = 503, b"unavailable"
            elif state.mode == "garbage":
                body = b"<html>not json</html>"
            elif state.mode == "redirect":
                status, headers, body = 302, {"location": state.url.replace("127.0.0.1", "localhost")}, b""
            elif state.mode == "huge":
                body = json.dumps({"keys": state.keys, "pad": "x" * MAX_JWKS_BYTES}).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/.well-known/entragate/jwks.json"
    yield state
    server.shutdown()
    server.server_close()


def verifier(gateway, clock, **kwargs):
    return AssertionVerifier(gateway.url, audience=AUDIENCE, clock=clock, **kwargs)


def accepts(v: AssertionVerifier, assertion: str) -> bool:
    try:
        return v.verify(assertion, method="GET", path="/p")["oid"] == "o"
    except jwt.InvalidTokenError:
        return False


def test_a_published_key_verifies_and_an_unpublished_one_does_not(gateway):
    a, b = Key(), Key()
    gateway.publish(a)
    v = verifier(gateway, Clock())
    assert accepts(v, a.assertion())
    assert not accepts(v, b.assertion())


def test_a_withdrawn_key_stops_verifying_once_the_set_is_older_than_max_age(gateway):
    """docs/ORIGIN.md's bound: a key the gateway stopped publishing verifies for at most
    JWKS_MAX_AGE_SECONDS more (the old PyJWKClient(cache_keys=True) kept it forever)."""
    leaked, current = Key(), Key()
    clock = Clock()
    gateway.publish(leaked, current)
    v = verifier(gateway, clock)
    assert accepts(v, leaked.assertion()) and gateway.fetches == 1
    gateway.publish(current)  # the operator withdraws the leaked key
    clock.now += JWKS_MAX_AGE_SECONDS - 1
    assert accepts(v, leaked.assertion()) and gateway.fetches == 1  # within the bound, from memory
    clock.now += 1
    assert not accepts(v, leaked.assertion())
    assert gateway.fetches == 2
    assert accepts(v, current.assertion())


def test_each_fetch_replaces_the_key_set_never_merges(gateway):
    """A refetch for an unknown kid brings the new set; a key missing from it is gone at once."""
    old, new = Key(), Key()
    clock = Clock()
    gateway.publish(old)
    v = verifier(gateway, clock)
    assert accepts(v, old.assertion())
    gateway.publish(new)
    clock.now += JWKS_COOLDOWN_SECONDS
    assert accepts(v, new.assertion())  # unknown kid: one refetch
    assert not accepts(v, old.assertion())  # withdrawn in that same fetch, long before max_age
    assert gateway.fetches == 2


def test_a_flood_of_unknown_kids_costs_one_fetch_per_cooldown(gateway):
    key = Key()
    clock = Clock()
    gateway.publish(key)
    v = verifier(gateway, clock)
    assert accepts(v, key.assertion()) and gateway.fetches == 1
    for n in range(200):
        assert not accepts(v, key.assertion(kid=f"made-up-{n}"))
    assert gateway.fetches == 1  # the first fetch started the cooldown
    clock.now += JWKS_COOLDOWN_SECONDS
    for n in range(200):
        assert not accepts(v, key.assertion(kid=f"made-up-again-{n}"))
    assert gateway.fetches == 2
    assert accepts(v, key.assertion())


def test_a_new_key_is_fetched_on_first_sight_after_the_cooldown(gateway):
    old, new = Key(), Key()
    clock = Clock()
    gateway.publish(old)
    v = verifier(gateway, clock)
    assert accepts(v, old.assertion())
    gateway.publish(old, new)
    assert not accepts(v, new.assertion())  # within the cooldown of the first fetch
    clock.now += JWKS_COOLDOWN_SECONDS
    assert accepts(v, new.assertion()) and accepts(v, old.assertion())


def test_concurrent_unknown_kids_share_one_fetch(gateway):
    key = Key()
    gateway.publish(key)
    v = verifier(gateway, Clock())
    made_up = [key.assertion(kid=f"k{n}") for n in range(50)]
    threads = [threading.Thread(target=accepts, args=(v, token)) for token in made_up]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert gateway.fetches == 1


@pytest.mark.parametrize("fault", ["down", "garbage", "redirect", "huge"])
def test_a_failed_fetch_keeps_the_last_set_until_max_stale(gateway, fault):
    key = Key()
    clock = Clock()
    gateway.publish(key)
    v = verifier(gateway, clock)
    assert accepts(v, key.assertion())
    gateway.mode = fault
    clock.now += JWKS_MAX_AGE_SECONDS
    assert accepts(v, key.assertion())  # refresh failed: the last set still verifies
    assert gateway.fetches == 2
    assert accepts(v, key.assertion()) and gateway.fetches == 2  # retried once per cooldown only
    clock.now += JWKS_COOLDOWN_SECONDS
    assert accepts(v, key.assertion()) and gateway.fetches == 3
    clock.now = 1000.0 + JWKS_MAX_STALE_SECONDS
    assert not accepts(v, key.assertion())  # too old to trust: nothing verifies
    gateway.mode = "ok"
    clock.now += JWKS_COOLDOWN_SECONDS
    assert accepts(v, key.assertion())


def test_a_failed_fetch_never_resurrects_a_withdrawn_key(gateway):
    leaked, current = Key(), Key()
    clock = Clock()
    gateway.publish(leaked, current)
    v = verifier(gateway, clock)
    assert accepts(v, leaked.assertion())
    gateway.publish(current)
    clock.now += JWKS_MAX_AGE_SECONDS
    assert not accepts(v, leaked.assertion())
    gateway.mode = "down"
    for _ in range(5):
        clock.now += JWKS_MAX_AGE_SECONDS
        assert not accepts(v, leaked.assertion())
        assert accepts(v, current.assertion()) == (clock.now - 1000.0 - JWKS_MAX_AGE_SECONDS < JWKS_MAX_STALE_SECONDS)


def test_an_empty_published_set_is_a_set_and_refuses_everything(gateway):
    key = Key()
    clock = Clock()
    gateway.publish(key)
    v = verifier(gateway, clock)
    assert accepts(v, key.assertion())
    gateway.publish()  # assertions switched off: jwks.json serves {"keys": []}
    clock.now += JWKS_MAX_AGE_SECONDS
    assert not accepts(v, key.assertion())


def test_unusable_entries_in_the_set_are_skipped(gateway):
    key, other = Key(), Key()
    private_published = dict(other.private, kid=other.public["kid"])
    gateway.keys = [
        {"kty": "RSA", "kid": "rsa", "n": "AQAB", "e": "AQAB"},
        {**key.public, "kid": "other-alg", "alg": "ES384"},
        {**key.public, "kid": "enc", "use": "enc"},
        {"kty": "EC", "crv": "P-256", "kid": "broken", "x": "AA", "y": "AA"},
        private_published,  # a private key published by mistake is never used
        "not a key",
        key.public,
    ]
    v = verifier(gateway, Clock())
    assert accepts(v, key.assertion())
    assert not accepts(v, other.assertion())
    for kid in ("other-alg", "enc", "broken", "rsa"):
        assert not accepts(v, key.assertion(kid=kid))


def test_unreachable_jwks_url_is_an_invalid_token():
    with pytest.raises(jwt.InvalidTokenError):
        AssertionVerifier("http://127.0.0.1:9/jwks.json", audience=AUDIENCE).verify(Key().assertion())


@pytest.mark.parametrize("text", ["", "not a jwt", "a.b.c"])
def test_garbage_is_an_invalid_token_without_a_fetch(gateway, text):
    v = verifier(gateway, Clock())
    with pytest.raises(jwt.InvalidTokenError):
        v.verify(text)
    assert gateway.fetches == 0


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        AssertionVerifier("file:///etc/passwd", audience=AUDIENCE)
    with pytest.raises(ValueError):
        AssertionVerifier("https://g/jwks.json", audience=AUDIENCE, max_age=600, max_stale=300)
