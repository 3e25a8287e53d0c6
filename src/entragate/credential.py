"""Extract the bearer token from the Authorization header (RFC 6750 §2.1)."""

import re

from .errors import MalformedCredential, MissingCredential

# Entra access tokens are 1–8 KB with a few hundred groups; past 200 groups Entra switches
# to the overage claim, so a larger token is not one Entra issued. Microsoft's libraries
# accept up to 250 KB; a gateway has no reason to parse that much from an anonymous client.
MAX_TOKEN_BYTES = 16 * 1024

# Three base64url segments and nothing else: no padding, no whitespace, no commas (a
# second Authorization header is folded into the first with ", "). Possessive `++`: a segment
# cannot contain the dot, so backtracking could never help; without it the engine records a
# backtrack point per character (half the cost of this check in Pyodide).
_JWS_COMPACT = re.compile(r"[A-Za-z0-9_-]++\.[A-Za-z0-9_-]++\.[A-Za-z0-9_-]++")


def extract_bearer(authorization: str | None) -> str:
    """Return the credential from an Authorization header value, or raise a CredentialError.
    Its shape is checked by `require_compact_jws`, which token validation runs first: a token
    the verified-token cache holds passed it when it was verified, so a cache hit (the common
    case) does not scan the token a second time."""
    # Only HTTP's optional whitespace (SP, HTAB) is trimmed: str.strip() would also drop
    # newlines, NEL (\x85) and Unicode spaces, accepting a token with junk around it.
    authorization = authorization.strip(" \t") if authorization is not None else None
    if not authorization:
        raise MissingCredential("no bearer token", "no_credential")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        raise MalformedCredential("authorization scheme must be Bearer", "scheme")
    token = token.strip(" ")
    if not token:
        raise MalformedCredential("empty bearer token", "empty")
    if len(token) > MAX_TOKEN_BYTES:
        raise MalformedCredential(f"token longer than {MAX_TOKEN_BYTES} bytes", "too_long")
    return token


def require_compact_jws(token: str) -> None:
    if not _JWS_COMPACT.fullmatch(token):
        raise MalformedCredential("token is not a single compact JWS", "not_compact_jws")
