"""Verify entragate's signed identity assertion in an origin. Copy this file; it needs only
`pyjwt[crypto]`.

    from entragate_assertion import AssertionVerifier

    verifier = AssertionVerifier(
        "https://gateway.example.com/.well-known/entragate/jwks.json",
        audience="https://origin.example.com",      # the gateway's ORIGIN_URL
        issuer="entragate",                          # the gateway's ASSERTION_ISSUER
    )
    claims = verifier.verify(request.headers["x-entragate-assertion"],
                             method=request.method, path=raw_request_path)

`verify` raises `jwt.InvalidTokenError` (or a subclass) for anything but a valid assertion
made for this origin, this method and this path (the raw, still percent-encoded path the
origin received, without the query), within its 60-second life. That includes an unknown
`kid`, an empty key set and an unreachable JWKS URL: catching InvalidTokenError is enough.

Keys: the verifier trusts exactly the key set the gateway publishes now, so withdrawing a
key from `jwks.json` revokes it here too:
- each fetch *replaces* the key set (never merges), so a key the gateway no longer publishes
  stops verifying at the next fetch;
- a set older than `max_age` (JWKS_MAX_AGE_SECONDS) is fetched again: a withdrawn key is
  accepted for at most that long after the gateway stopped publishing it;
- a `kid` not in the set triggers a fetch too, but at most one fetch per `cooldown`
  (JWKS_COOLDOWN_SECONDS) whatever triggered it, so a stream of made-up kids costs one fetch
  per cooldown;
- a failed fetch (unreachable, non-200, redirect, not a JWKS) keeps the last fetched set,
  which can only hold keys the gateway published at that fetch, never one withdrawn before
  it; once that set is older than `max_stale` (JWKS_MAX_STALE_SECONDS) nothing verifies
  until a fetch succeeds.
"""

import json
import logging
import threading
import time
import urllib.request
from urllib.parse import urlsplit

import jwt

HEADER = "x-entragate-assertion"
ALGORITHMS = ["ES256"]
DEFAULT_LEEWAY_SECONDS = 5
# How long a withdrawn key may still verify here while jwks.json can be fetched. The gateway
# serves jwks.json with max-age=300, so publishing a new key 5 minutes before using it (the
# rotation steps in docs/ORIGIN.md) reaches every origin in time.
JWKS_MAX_AGE_SECONDS = 300
# At most one fetch per this many seconds, whatever the kids: unknown kids are attacker-chosen.
JWKS_COOLDOWN_SECONDS = 30
# While every refresh fails, the last set keeps verifying for this long after it was fetched
# (a short outage of the gateway's jwks.json does not stop the origin); then nothing does.
JWKS_MAX_STALE_SECONDS = 900
FETCH_TIMEOUT_SECONDS = 5
MAX_JWKS_BYTES = 64 * 1024  # the gateway publishes 1-3 keys of ~200 bytes each
MAX_KEYS = 16
MAX_KID_LENGTH = 128

_log = logging.getLogger(__name__)


class AssertionVerifier:
    def __init__(self, jwks_url: str, *, audience: str, issuer: str = "entragate", leeway: float = DEFAULT_LEEWAY_SECONDS,
                 max_age: float = JWKS_MAX_AGE_SECONDS, cooldown: float = JWKS_COOLDOWN_SECONDS,
                 max_stale: float = JWKS_MAX_STALE_SECONDS, clock=time.monotonic, fetch=None):
        """`clock()` (seconds) and `fetch(url, timeout) -> parsed JSON` are injectable for tests;
        `fetch` raises on any failure."""
        if urlsplit(jwks_url).scheme not in ("https", "http"):
            raise ValueError("jwks_url must be an http(s) URL")
        if not 0 < max_age <= max_stale or cooldown < 0:
            raise ValueError("need 0 < max_age <= max_stale and cooldown >= 0")
        self._url = jwks_url
        self._audience = audience.rstrip("/")
        self._issuer = issuer
        self._leeway = leeway
        self._max_age = max_age
        self._cooldown = cooldown
        self._max_stale = max_stale
        self._clock = clock
        self._fetch = fetch or _fetch_json
        self._lock = threading.Lock()
        # (kid -> public key, when fetched): exactly the last set fetched, replaced as a whole.
        self._set: tuple[dict, float] | None = None
        self._last_attempt: float | None = None

    def verify(self, assertion: str, *, method: str | None = None, path: str | None = None) -> dict:
        key = self._key(_kid(assertion))
        claims = jwt.decode(
            assertion, key, algorithms=ALGORITHMS, audience=self._audience, issuer=self._issuer,
            leeway=self._leeway, options={"require": ["exp", "iat", "iss", "aud", "htm", "htu"]},
        )
        if method is not None and claims["htm"] != method.upper():
            raise jwt.InvalidTokenError("assertion was made for another method")
        if path is not None and urlsplit(claims["htu"]).path != path.partition("?")[0]:
            raise jwt.InvalidTokenError("assertion was made for another path")
        return claims

    def _key(self, kid: str):
        current = self._set  # one atomic read: the common case takes no lock
        if current is not None and kid in current[0] and self._age(current) < self._max_age:
            return current[0][kid]
        with self._lock:
            current = self._set
            stale = current is None or not self._age(current) < self._max_age
            if (stale or kid not in current[0]) and self._may_fetch():
                current = self._refresh()
            if current is None or not self._age(current) < self._max_stale:
                raise jwt.InvalidTokenError("no current assertion key set (the gateway's JWKS could not be fetched)")
            key = current[0].get(kid)
        if key is None:
            raise jwt.InvalidTokenError("the gateway does not publish this assertion's key")
        return key

    def _age(self, key_set) -> float:
        age = self._clock() - key_set[1]
        return age if age >= 0 else float("inf")  # a set "fetched" in the future never stays fresh

    def _may_fetch(self) -> bool:
        if self._last_attempt is None:
            return True
        since = self._clock() - self._last_attempt
        return not 0 <= since < self._cooldown

    def _refresh(self):
        self._last_attempt = self._clock()
        try:
            self._set = (_parse_jwks(self._fetch(self._url, FETCH_TIMEOUT_SECONDS)), self._clock())
        except Exception as error:  # any failure keeps the last set (bounded by max_stale)
            _log.warning("entragate assertion keys: fetching %s failed (%s: %s); keeping the last set",
                         self._url, type(error).__name__, error)
        return self._set


def _kid(assertion: str) -> str:
    kid = jwt.get_unverified_header(assertion).get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH:
        raise jwt.InvalidTokenError("assertion has no usable kid")
    return kid


def _parse_jwks(document) -> dict:
    """kid -> public key for every ES256 signing key in the document; anything else is skipped.
    A document that is not a JWKS is a failed fetch (ValueError)."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS: no keys list")
    keys = {}
    for jwk in document["keys"][:MAX_KEYS]:
        if not (isinstance(jwk, dict) and isinstance(jwk.get("kid"), str) and jwk.get("kty") == "EC"
                and jwk.get("crv") == "P-256" and jwk.get("use", "sig") == "sig"
                and jwk.get("alg", "ES256") == "ES256" and "d" not in jwk):
            continue
        try:
            keys.setdefault(jwk["kid"], jwt.PyJWK(jwk, algorithm="ES256").key)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
    return keys


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a 3xx is then an HTTPError: keys come from jwks_url itself, nowhere else


def _fetch_json(url: str, timeout: float):
    opener = urllib.request.build_opener(_NoRedirects)
    request = urllib.request.Request(url, headers={"accept": "application/json", "cache-control": "no-cache"})
    with opener.open(request, timeout=timeout) as response:
        body = response.read(MAX_JWKS_BYTES + 1)
    if len(body) > MAX_JWKS_BYTES:
        raise ValueError("JWKS document too large")
    return json.loads(body)
