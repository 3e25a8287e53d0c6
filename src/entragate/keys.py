"""Signing keys of one Entra issuer: discovery → jwks_uri → key set, cached in memory and KV.

Rules (see docs/TOKENS.md, "Signing keys"):
- a key set older than `max_age` is refreshed; so is one that lacks a requested `kid`;
- at most one fetch attempt per `cooldown` per issuer, and concurrent callers share the one
  fetch in flight (`share`, flights.py: requests of a Worker may only wait on each other's
  work through the platform), so an attacker's stream of unknown kids costs one fetch per
  cooldown; the request that starts a fetch also hands it to `defer`, which keeps it running
  for the others if that request goes away;
- a failed refresh keeps the last-known-good set; with no set at all: KeysUnavailable (503);
- with no set at all (a cold isolate, or one that started while the issuer was unreachable)
  an attempt reads KV, where another isolate may have stored a set, then the network; after
  a failure the next attempt waits 1, 2, 4, 5, 5 … s (cold_retry_delay), not the cooldown, and
  is shared like a fetch: the isolate serves again within ~5 s of the issuer's (or KV's) return;
- the fetched set is written to KV in the background (`defer`), never on the response path;
- a KV read gets the fetch timeout: a stalled KV falls back to the network rather than
  holding every request; a stored set dated in the future counts as stale.

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
# An isolate without any key set answers every token with 503, so it retries soon rather than
# once per cooldown: the wait doubles from COLD_RETRY_FIRST_SECONDS up to
# COLD_RETRY_MAX_SECONDS (never past the cooldown). The ceiling is what the isolate may take to
# serve again once the issuer is back; the target is 10 s, and 5 s leaves the rest for the
# attempt itself (KV read, discovery, JWKS). The cost while the issuer stays down: one KV read
# and one discovery fetch per 5 s per issuer, in isolates that have no keys at all. Once there
# are keys the cooldown bounds fetches again: only then can a token's kid ask for one. Each
# attempt reads KV first: another isolate may have stored keys meanwhile.
COLD_RETRY_FIRST_SECONDS = 1
COLD_RETRY_MAX_SECONDS = 5


class KeyFetchError(Exception):
    """Discovery or JWKS could not be fetched or did not make sense."""


@dataclass(frozen=True, slots=True)
class KeySet:
    issuer: str
    keys: dict  # kid -> JWK (RSA public parameters, plus Entra's per-key `issuer` if given)
    fetched_at: float
    # The sign-in endpoints the same discovery document names (SIGNIN_ENDPOINTS), each checked
    # like jwks_uri (authority.py); None when the document names no usable set.
    endpoints: dict | None = None

    def to_json(self, jwks_uri: str) -> str:
        return json.dumps({
            "format": STORE_FORMAT,
            "issuer": self.issuer,
            "jwks_uri": jwks_uri,
            "fetched_at": self.fetched_at,
            "keys": list(self.keys.values()),
            **({"endpoints": self.endpoints} if self.endpoints else {}),
        })

    @classmethod
    def from_json(cls, text: str, authority: str) -> "KeySet":
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != STORE_FORMAT:
            raise KeyFetchError("stored key set has an unknown format")
        fetched_at = data.get("fetched_at")
        if not isinstance(fetched_at, (int, float)) or isinstance(fetched_at, bool):
            raise KeyFetchError("stored key set has no fetch time")
        stored = data.get("endpoints") if isinstance(data.get("endpoints"), dict) else {}
        endpoints = signin_endpoints({f"{name}_endpoint": url for name, url in stored.items()}, authority)
        return cls(_issuer(data), _parse_jwks(data), float(fetched_at), endpoints)


# Discovery members that browser sign-in uses (signin.py), by the name it uses for each.
SIGNIN_ENDPOINTS = {"authorization": "authorization_endpoint", "token": "token_endpoint",
                    "end_session": "end_session_endpoint"}


def signin_endpoints(document: dict, authority: str) -> dict | None:
    """{authorization, token, end_session} from a discovery document, each only as
    `document_url` accepts it (the authority's exact origin, a plain path); None otherwise."""
    try:
        return {name: document_url(document.get(member), authority) for name, member in SIGNIN_ENDPOINTS.items()}
    except UnsafeUrl:
        return None


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


def cold_retry_delay(failures: int, cooldown: float) -> float:
    """Seconds from the `failures`-th failed attempt of an isolate without keys to the next:
    1, 2, 4, 5, 5, … never more than the cooldown (with cooldown 0, every request retries)."""
    return min(COLD_RETRY_FIRST_SECONDS * 2 ** (failures - 1), COLD_RETRY_MAX_SECONDS, cooldown)


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
        self._last_attempt: float | None = None  # of a network fetch: the cooldown counts from it
        self._inflight = None  # the attempt in flight (a flight), if any
        # While there is no key set at all: failed attempts so far, and when the next may start.
        self._failures = 0
        self._retry_at = float("-inf")

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
        if self._set is None and (self._inflight is not None or self._clock() >= self._retry_at):
            await self._attempt(self._load, defer)
        if self._set is not None and self._needs_refresh(kid) and self._may_attempt():
            await self._attempt(self._fetch_and_keep, defer)
        if self._set is None:
            raise KeysUnavailable("signing keys for the token issuer are not available")

    def _needs_refresh(self, kid) -> bool:
        age = self._clock() - self._set.fetched_at
        if not 0 <= age < self._max_age:  # a set "fetched" in the future would never expire
            return True
        return kid is not None and kid not in self._set.keys

    def _may_attempt(self) -> bool:
        if self._inflight is not None:
            return True  # joining the fetch in flight costs nothing
        return self._last_attempt is None or self._clock() - self._last_attempt >= self._cooldown

    async def _attempt(self, work, defer) -> None:
        """Join the attempt in flight, or start `work` as the one every request shares."""
        flight = self._inflight
        if flight is None:
            flight = self._inflight = self._share(self._run(work, defer))
            defer(_settled(flight))
        await flight

    async def _run(self, work, defer) -> None:
        try:
            await work(defer)
        except KeyFetchError as error:  # logged once per attempt, not once per waiting request
            kept = "keeping last-known-good keys" if self._set else "no keys at all"
            self._log(f"key refresh failed for {self.discovery_url}: {error}; {kept}")
        finally:
            self._inflight = None  # before the waiters resume: a later request starts afresh

    async def _load(self, defer) -> None:
        """No key set yet: KV first (another isolate may have stored one since the last
        attempt), then the network; after a failure, the next attempt waits a backoff."""
        stored = await self._read_store()
        if stored is not None:
            self._set = stored  # a stale copy is refreshed by the usual rules, and kept if that fails
            return
        try:
            await self._fetch_and_keep(defer)
        except Exception:
            self._failures += 1
            self._retry_at = self._clock() + cold_retry_delay(self._failures, self._cooldown)
            raise

    async def _fetch_and_keep(self, defer) -> None:
        self._last_attempt = self._clock()
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
        self._set = KeySet(issuer, keys, self._clock(), signin_endpoints(discovery, self._authority))
        defer(self._write_store(self._set.to_json(jwks_uri)))

    async def _read_store(self) -> KeySet | None:
        try:
            text = await asyncio.wait_for(self._store.get(self._store_key), self._timeout)
            return KeySet.from_json(text, self._authority) if isinstance(text, str) else None
        except Exception as error:  # KV outage or a corrupt entry: fall back to fetching
            self._log(f"ignoring cached key set for {self.discovery_url}: {error}")
            return None

    async def _write_store(self, text: str) -> None:
        try:
            await self._store.put(self._store_key, text)
        except Exception as error:
            self._log(f"could not cache key set for {self.discovery_url}: {error}")
