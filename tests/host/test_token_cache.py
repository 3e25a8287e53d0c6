"""Verified-token cache rules, with a fake clock and a counting inner validator."""

import asyncio
import base64
import json
from dataclasses import replace

import pytest

from entragate.errors import InvalidToken
from entragate.identity import USER, Identity
from entragate.token_cache import CachingValidator

NOW = 1_800_000_000.0
SKEW = 60


def token(n: int, kid: str = "k1") -> str:
    header = base64.urlsafe_b64encode(json.dumps({"alg": "RS256", "kid": kid}).encode()).rstrip(b"=").decode()
    return f"{header}.payload{n}.signature{n}"


IDENTITY = Identity(
    oid="o", tid="t", sub="s", name=None, username=None, groups=(), groups_overage=False, roles=(),
    scopes=("access_as_user",), client_id="c", kind=USER, version="2.0", issuer="i", audience="a",
    expires_at=NOW + 3600, not_before=NOW - 10,
)


class Clock:
    def __init__(self):
        self.now = NOW

    def __call__(self):
        return self.now


class KeySet:
    def __init__(self, *kids):
        self.keys = {kid: {} for kid in kids}


class Issuer:
    def __init__(self, *kids):
        self.key_set = KeySet(*kids)


class Inner:
    def __init__(self, identity=IDENTITY):
        self.identity = identity
        self.calls = 0
        self.fail = False

    async def validate_with_kid(self, token, defer):
        self.calls += 1
        if self.fail:
            raise InvalidToken("bad")
        header = json.loads(base64.urlsafe_b64decode(token.partition(".")[0] + "=="))
        return self.identity, header["kid"]


def make(inner=None, issuer=None, **kwargs):
    inner = inner or Inner()
    issuer = issuer or Issuer("k1")
    clock = Clock()
    cache = CachingValidator(inner, {"2.0": issuer}, clock=clock, skew=SKEW, **kwargs)
    return cache, inner, issuer, clock


def validate(cache, value):
    return asyncio.run(cache.validate(value, lambda c: c.close()))


def test_repeated_token_is_validated_once():
    cache, inner, _, _ = make()
    for _ in range(5):
        assert validate(cache, token(1)) is IDENTITY
    assert inner.calls == 1
    validate(cache, token(2))
    assert inner.calls == 2


def test_expiry_is_rechecked_on_every_hit_with_skew():
    cache, inner, _, clock = make(max_age=10_000)
    validate(cache, token(1))
    clock.now = IDENTITY.expires_at + SKEW - 1
    validate(cache, token(1))
    assert inner.calls == 1
    clock.now = IDENTITY.expires_at + SKEW
    inner.fail = True
    with pytest.raises(InvalidToken):
        validate(cache, token(1))
    assert inner.calls == 2


def test_not_before_is_rechecked_if_the_clock_goes_back():
    cache, inner, _, clock = make()
    validate(cache, token(1))
    clock.now = IDENTITY.not_before - SKEW - 1
    validate(cache, token(1))
    assert inner.calls == 2


def test_not_before_boundary_is_exactly_not_before_minus_skew():
    """The cache serves a hit exactly where a fresh validation would accept (PyJWT: nbf/iat
    up to now + skew), and not a second before."""
    cache, inner, _, clock = make()
    validate(cache, token(1))
    clock.now = IDENTITY.not_before - SKEW
    validate(cache, token(1))
    assert inner.calls == 1
    clock.now = IDENTITY.not_before - SKEW - 0.001
    validate(cache, token(1))
    assert inner.calls == 2


def test_entries_live_no_longer_than_the_configured_maximum():
    cache, inner, _, clock = make(max_age=300)
    validate(cache, token(1))
    clock.now += 299
    validate(cache, token(1))
    assert inner.calls == 1
    clock.now += 1
    validate(cache, token(1))
    assert inner.calls == 2


def test_entry_is_dropped_when_its_key_leaves_the_key_set():
    cache, inner, issuer, _ = make()
    validate(cache, token(1, kid="k1"))
    issuer.key_set = KeySet("k2")  # a refresh rotated k1 out
    inner.fail = True
    with pytest.raises(InvalidToken):
        validate(cache, token(1, kid="k1"))
    assert inner.calls == 2 and len(cache) == 0


def test_failures_are_never_cached():
    cache, inner, _, _ = make()
    inner.fail = True
    for _ in range(3):
        with pytest.raises(InvalidToken):
            validate(cache, token(1))
    assert inner.calls == 3 and len(cache) == 0


def test_cache_is_bounded_oldest_out_first():
    cache, inner, _, _ = make(max_entries=3)
    for n in range(5):
        validate(cache, token(n))
    assert len(cache) == 3
    validate(cache, token(4))
    assert inner.calls == 5
    validate(cache, token(0))
    assert inner.calls == 6


def test_cache_keys_are_digests_not_token_text():
    cache, _, _, _ = make()
    validate(cache, token(1))
    assert all(isinstance(key, bytes) and len(key) == 32 for key in cache._entries)


def test_float_exp_is_honoured():
    cache, inner, _, clock = make(Inner(replace(IDENTITY, expires_at=NOW + 0.5)), max_age=10_000)
    validate(cache, token(1))
    clock.now = NOW + SKEW + 0.4
    validate(cache, token(1))
    assert inner.calls == 1


@pytest.mark.parametrize("text", ["\ud800" + token(1), token(1) + "é", "тoken.a.b"])
def test_non_ascii_token_is_not_hashed_but_handed_to_the_validator(text):
    # Found by test_fuzz: a lone surrogate made token.encode() raise UnicodeEncodeError (a 500).
    # Such a token is never a compact JWS; the validator's shape check refuses it (test_tokens.py).
    cache, inner, _, _ = make()
    inner.fail = True
    with pytest.raises(InvalidToken):
        validate(cache, text)
    assert inner.calls == 1 and len(cache) == 0
