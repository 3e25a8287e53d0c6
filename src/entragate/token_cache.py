"""Verified-token cache: a token seen again skips parsing and signature verification.

Rules (a hit must never accept what a fresh validation would refuse, except for the
re-fetch of keys, which the cache by design does not trigger):
- keyed by the BLAKE2b-256 digest of the token, so the map never holds token text (BLAKE2b:
  collision-resistant like SHA-256, and half its cost in Pyodide, on every request);
- bounded: at most `max_entries`, and at most `max_bytes` of estimated memory (an entry's
  estimate is taken once, when it is stored: bounded.py), oldest evicted first;
- an entry lives until the token's `exp` and at most `max_age` seconds after it was verified;
- `exp` and `nbf` are re-checked, with the configured skew, on every hit;
- an entry is dropped as soon as its signing key is no longer in the issuer's key set.
Failures are never cached: an invalid token costs a full validation every time. A hit is the
same byte string as a token that passed every check, its shape included (credential.py), so
nothing about the token itself is checked again.
"""

import hashlib

from .bounded import BoundedMap
from .identity import Identity, estimated_bytes

DEFAULT_MAX_ENTRIES = 4096
# 16 MiB of the isolate's 128 MB (bounded.py): 4096 ordinary tokens take ~8 MB estimated
# (~2 KB each: a few groups, the strings of oid, sub, name, issuer...), so the entry bound
# decides for them; tokens of users in 200 groups with 80 app roles take ~30 KB each, so
# the byte bound keeps ~560 of them instead of 4096 (~120 MB).
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_AGE_SECONDS = 300
# An entry beside its Identity: the entry object, the 32-byte digest key, the eviction time
# and the map's slot.
ENTRY_OVERHEAD_BYTES = 360


class _Entry:
    __slots__ = ("identity", "evict_at", "issuer_keys", "kid", "size")

    def __init__(self, identity, evict_at, issuer_keys, kid):
        self.identity = identity
        self.evict_at = evict_at
        self.issuer_keys = issuer_keys
        self.kid = kid  # the same str as the key set's own key: not counted again
        self.size = ENTRY_OVERHEAD_BYTES + estimated_bytes(identity)


class CachingValidator:
    """Wraps a TokenValidator with the verified-token cache; same `validate` interface."""

    def __init__(self, validator, keys_by_version: dict, *, clock, skew: int,
                 max_entries: int = DEFAULT_MAX_ENTRIES, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_age: int = DEFAULT_MAX_AGE_SECONDS):
        self._validator = validator
        self._keys_by_version = keys_by_version
        self._clock = clock
        self._skew = skew
        self._max_age = max_age
        self._entries = BoundedMap(max_entries, max_bytes)

    def __len__(self) -> int:
        return len(self._entries)

    async def validate(self, token: str, defer) -> Identity:
        if not token.isascii():  # never a compact JWS, and encode() must not raise: the validator refuses it
            return (await self._validator.validate_with_kid(token, defer))[0]
        digest = hashlib.blake2b(token.encode("ascii"), digest_size=32).digest()
        entry = self._entries.get(digest)
        if entry is not None:
            identity = self._still_valid(entry)
            if identity is not None:
                return identity
            self._entries.discard(digest)
        identity, kid = await self._validator.validate_with_kid(token, defer)
        self._remember(digest, kid, identity)
        return identity

    def _still_valid(self, entry: _Entry) -> Identity | None:
        now = self._clock()
        identity = entry.identity
        if now >= entry.evict_at or not identity.not_before - self._skew <= now < identity.expires_at + self._skew:
            return None
        key_set = entry.issuer_keys.key_set
        if key_set is None or entry.kid not in key_set.keys:
            return None
        return identity

    def _remember(self, digest: bytes, kid: str, identity: Identity) -> None:
        issuer_keys = self._keys_by_version[identity.version]
        self._entries.put(digest, _Entry(identity, self._clock() + self._max_age, issuer_keys, kid))
