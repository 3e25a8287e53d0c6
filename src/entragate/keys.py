"""Signing keys of one Entra issuer: discovery → jwks_uri → key set, cached in memory and KV.

Rules (see README "Signing keys"):
- a key set older than `max_age` is refreshed; so is one that lacks a requested `kid`;
- at most one fetch attempt per `cooldown` per issuer, and concurrent callers share the one
  fetch in flight (`share`, flights.py: requests of a Worker may only wait on each other's
  work through the platform), so an attacker's stream of unknown kids costs one fetch per
  cooldown; the request that starts a fetch also hands it to `defer`, which keeps it running
  for the others if that request goes away;
- a failed refresh keeps the last-known-good set; with no set at all: KeysUnavailable (503);
- the fetched set is written to KV in the background (`defer`), never on the response path;
- the one KV read per isolate gets the fetch timeout: a stalled KV falls back to the network
  rather than holding every request; a stored set dated in the future counts as stale.

I/O is injected: `http.get_json(url, timeout)` raises KeyFetchError on any failure, and
`store` has async `get(key) -> str | None` / `put(key, value)`. `clock()` returns seconds.
"""

import asyncio
import json
from dataclasses import dataclass

from .authority import UnsafeUrl, document_url
from .errors import KeysUnavailable
from .flights import share_locally

STORE_FORMAT = 1
# Memory (bounded.py): a key set holds at most MAX_KEYS keys of bounded size, ~2.3 KB each at
# most (kid 128 + n 1366 + e 12 + issuer 256 characters, and the dict around them): ~150 KB
# per issuer, two issuers. platform_io's imported-key cache (128 keys) holds the same strings.
MAX_KEYS = 64
MAX_KID_LENGTH = 128  # a token's kid is no longer (tokens.py), so a longer one is never used
MAX_MODULUS_CHARS = 1366  # base64url of an 8192-bit RSA modulus (Entra's are 2048-bit: 342)
MAX_EXPONENT_CHARS = 12
MAX_ISSUER_CHARS = 256


class KeyFetchError(Exception):
    """Discovery or JWKS could not be fetched or did not make sense."""


@dataclass(frozen=True, slots=True)
class KeySet:
    issuer: str
    keys: dict  # kid -> JWK (RSA public parameters, plus Entra's per-key `issuer` if given)
    fetched_at: float

    def to_json(self, jwks_uri: str) -> str:
        return json.dumps({
            "format": STORE_FORMAT,
            "issuer": self.issuer,
            "jwks_uri": jwks_uri,
            "fetched_at": self.fetched_at,
            "keys": list(self.keys.values()),
        })

    @classmethod
    def from_json(cls, text: str) -> "KeySet":
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != STORE_FORMAT:
            raise KeyFetchError("stored key set has an unknown format")
        fetched_at = data.get("fetched_at")
        if not isinstance(fetched_at, (int, float)) or isinstance(fetched_at, bool):
            raise KeyFetchError("stored key set has no fetch time")
        return cls(_issuer(data), _parse_jwks(data), float(fetched_at))


def _issuer(document: dict) -> str:
    issuer = document.get("issuer")
    if not isinstance(issuer, str) or not issuer.startswith("https://"):
        raise KeyFetchError("discovery document has no https issuer")
    return issuer


def _parse_jwks(document) -> dict:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeyFetchError("JWKS has no keys list")
    keys = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or jwk.get("kty") != "RSA" or jwk.get("use", "sig") != "sig":
            continue
        kid, n, e = jwk.get("kid"), jwk.get("n"), jwk.get("e")
        if not all(isinstance(value, str) and value for value in (kid, n, e)):
            continue
        if len(kid) > MAX_KID_LENGTH or len(n) > MAX_MODULUS_CHARS or len(e) > MAX_EXPONENT_CHARS:
            continue
        key = {"kty": "RSA", "kid": kid, "n": n, "e": e}
        if isinstance(jwk.get("issuer"), str):
            if len(jwk["issuer"]) > MAX_ISSUER_CHARS:
                continue  # dropping only the issuer would drop the check it asks for
            key["issuer"] = jwk["issuer"]
        keys[kid] = key
        if len(keys) == MAX_KEYS:
            break
    if not keys:
        raise KeyFetchError("JWKS holds no usable RSA signing key")
    return keys


async def _settled(flight) -> None:
    """Wait for `flight` and ignore its outcome (its waiters see it)."""
    try:
        await flight
    except Exception:
        pass


class IssuerKeys:
    """The key set published by one discovery document (one token version of one tenant)."""

    def __init__(self, discovery_url, authority, *, http, store, clock, log, max_age, cooldown, timeout,
                 share=share_locally):
        self.discovery_url = discovery_url
        self._authority = authority
        self._http = http
        self._store = store
        self._clock = clock
        self._log = log
        self._max_age = max_age
        self._cooldown = cooldown
        self._timeout = timeout
        self._share = share
        self._store_key = f"entragate:jwks:v{STORE_FORMAT}:{discovery_url}"
        self._set: KeySet | None = None
        self._store_read = None  # the one KV read (a flight)
        self._last_attempt: float | None = None
        self._inflight = None  # the fetch in flight, if any

    @property
    def key_set(self) -> KeySet | None:
        return self._set

    async def current(self, defer) -> KeySet:
        """The key set to validate with, refreshed if stale; KeysUnavailable if there is none."""
        await self._ensure(None, defer)
        return self._set

    async def key(self, kid: str, defer) -> dict | None:
        """The JWK for `kid`, refreshing once (within the cooldown) if it is not known."""
        await self._ensure(kid, defer)
        return self._set.keys.get(kid)

    async def _ensure(self, kid, defer) -> None:
        if self._set is None:
            # One KV read per isolate, shared by the requests that arrive while it runs.
            if self._store_read is None:
                self._store_read = self._share(self._read_store())
            stored = await self._store_read
            if self._set is None:
                self._set = stored
        if self._needs_refresh(kid) and self._may_attempt():
            await self._refresh(defer)
        if self._set is None:
            raise KeysUnavailable("signing keys for the token issuer are not available")

    def _needs_refresh(self, kid) -> bool:
        if self._set is None:
            return True
        age = self._clock() - self._set.fetched_at
        if not 0 <= age < self._max_age:  # a set "fetched" in the future would never expire
            return True
        return kid is not None and kid not in self._set.keys

    def _may_attempt(self) -> bool:
        if self._inflight is not None:
            return True  # joining the fetch in flight costs nothing
        return self._last_attempt is None or self._clock() - self._last_attempt >= self._cooldown

    async def _refresh(self, defer) -> None:
        if self._inflight is None:
            self._last_attempt = self._clock()
            self._inflight = self._share(self._fetch_and_keep(defer))
            defer(_settled(self._inflight))
        inflight = self._inflight
        try:
            await inflight
        except KeyFetchError as error:
            kept = "keeping last-known-good keys" if self._set else "no keys at all"
            self._log(f"key refresh failed for {self.discovery_url}: {error}; {kept}")
        finally:
            if self._inflight is inflight:
                self._inflight = None

    async def _fetch_and_keep(self, defer) -> None:
        discovery = await self._http.get_json(self.discovery_url, self._timeout)
        if not isinstance(discovery, dict):
            raise KeyFetchError("discovery document is not a JSON object")
        issuer = _issuer(discovery)
        # Keys come only from the configured authority, whatever a document names, and the fetch
        # reads the URL exactly as it was checked (authority.py).
        try:
            jwks_uri = document_url(discovery.get("jwks_uri"), self._authority)
        except UnsafeUrl as error:
            raise KeyFetchError(f"jwks_uri refused: {error}") from None
        keys = _parse_jwks(await self._http.get_json(jwks_uri, self._timeout))
        self._set = KeySet(issuer, keys, self._clock())
        defer(self._write_store(self._set.to_json(jwks_uri)))

    async def _read_store(self) -> KeySet | None:
        try:
            text = await asyncio.wait_for(self._store.get(self._store_key), self._timeout)
            return KeySet.from_json(text) if isinstance(text, str) else None
        except Exception as error:  # KV outage or a corrupt entry: fall back to fetching
            self._log(f"ignoring cached key set for {self.discovery_url}: {error}")
            return None

    async def _write_store(self, text: str) -> None:
        try:
            await self._store.put(self._store_key, text)
        except Exception as error:
            self._log(f"could not cache key set for {self.discovery_url}: {error}")
