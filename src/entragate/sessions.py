"""Sealed cookies: browser sessions and sign-in flows, encrypted and authenticated.

A sealed value is `v1.<key id>.<base64url(iv || ciphertext || tag)>`: AES-256-GCM (WebCrypto at
the edge, `cryptography` on the host: the `Cipher` interface) over compact JSON, with the
cookie's name as additional data, so a value sealed for one cookie (a sign-in flow) never opens
as another (a session). Keys come from the SESSION_KEYS secret: the first seals, all of them
open, so a new key is rolled out by putting it first and dropping the old one once its
sessions have expired. A value that does not open — tampered, truncated, sealed with a key no
longer listed, made for another cookie, or not JSON — is simply no session.

The payload carries its own expiry (`exp`), checked on every open: a cookie copied after
its lifetime opens to nothing, whatever its Max-Age said.
"""

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Protocol

SEALED_VERSION = "v1"
KEY_BYTES = 32  # AES-256
IV_BYTES = 12  # GCM's 96-bit nonce, random per seal
KEY_ID_CHARS = 8
# Browsers keep cookies of up to 4096 bytes (name, value and attributes): what is sealed into
# one must stay under this, or it goes to KV (signin.py).
MAX_COOKIE_VALUE_BYTES = 3800
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_SEALED = re.compile(r"v1\.([A-Za-z0-9_-]{8})\.([A-Za-z0-9_-]{40,5000})")


class Cipher(Protocol):
    async def seal(self, key: bytes, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """AES-256-GCM: ciphertext with its 16-byte tag appended."""

    async def open(self, key: bytes, iv: bytes, sealed: bytes, aad: bytes) -> bytes | None:
        """The plaintext, or None if the tag does not verify."""


class SessionKeyError(ValueError):
    pass


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class SessionKey:
    key_id: str
    secret: bytes


def key_id(secret: bytes) -> str:
    return _b64url(hashlib.sha256(secret).digest())[:KEY_ID_CHARS]


def parse_session_keys(text: str) -> tuple[SessionKey, ...]:
    """SESSION_KEYS: comma-separated base64url keys of 32 random bytes, the sealing key first."""
    keys = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            if not _BASE64URL.fullmatch(item):
                raise ValueError
            secret = _b64url_decode(item.rstrip("="))
        except (binascii.Error, ValueError):
            raise SessionKeyError("SESSION_KEYS: each key must be base64url (make one with `entragate session-key`)") from None
        if len(secret) != KEY_BYTES:
            raise SessionKeyError(f"SESSION_KEYS: each key must hold {KEY_BYTES} random bytes, one holds {len(secret)}")
        keys.append(SessionKey(key_id(secret), secret))
    if not keys:
        raise SessionKeyError("SESSION_KEYS must list at least one key")
    if len({key.key_id for key in keys}) != len(keys):
        raise SessionKeyError("SESSION_KEYS lists the same key twice")
    return tuple(keys)


class Sealer:
    def __init__(self, cipher: Cipher, keys: tuple[SessionKey, ...], random_bytes):
        self._cipher = cipher
        self._keys = keys
        self._by_id = {key.key_id: key for key in keys}
        self._random = random_bytes

    async def seal(self, name: str, payload: dict) -> str:
        key = self._keys[0]
        iv = self._random(IV_BYTES)
        plaintext = json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode("ascii")
        sealed = await self._cipher.seal(key.secret, iv, plaintext, name.encode("ascii"))
        return f"{SEALED_VERSION}.{key.key_id}.{_b64url(iv + sealed)}"

    async def open(self, name: str, value: str | None, now: float) -> dict | None:
        """The payload, or None: not sealed by a listed key for this cookie, or expired."""
        match = _SEALED.fullmatch(value) if value else None
        key = self._by_id.get(match.group(1)) if match else None
        if key is None:
            return None
        try:
            raw = _b64url_decode(match.group(2))
        except (binascii.Error, ValueError):
            return None
        plaintext = await self._cipher.open(key.secret, raw[:IV_BYTES], raw[IV_BYTES:], name.encode("ascii"))
        if plaintext is None:
            return None
        try:
            payload = json.loads(plaintext)
        except ValueError:
            return None
        expires = payload.get("exp") if isinstance(payload, dict) else None
        if not isinstance(expires, (int, float)) or isinstance(expires, bool) or now >= expires:
            return None
        return payload


def cookies(header: str | None) -> dict[str, str]:
    """Cookie header -> {name: value}, the first of a repeated name (as most servers read it)."""
    found: dict[str, str] = {}
    for part in (header or "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name and name not in found:
            found[name] = value.strip()
    return found


def without_cookies(header: str | None, drop) -> str | None:
    """The Cookie header with every cookie named in `drop` (a predicate) taken out, the rest
    byte for byte; None when nothing is left."""
    if not header:
        return header
    kept = [part.strip() for part in header.split(";") if part.strip() and not drop(part.strip().partition("=")[0].strip())]
    return "; ".join(kept) or None


def set_cookie(name: str, value: str, max_age: int) -> str:
    """A `__Host-` cookie: Secure, no Domain, Path=/ (the prefix requires all three), HttpOnly,
    SameSite=Lax (sent on top-level navigations back from Entra, never on cross-site POSTs)."""
    return f"{name}={value}; Max-Age={max_age}; Path=/; Secure; HttpOnly; SameSite=Lax"


def clear_cookie(name: str) -> str:
    return f"{name}=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Lax"
