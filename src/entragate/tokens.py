"""Validate an Entra ID access token (v1.0 or v2.0) and return the Identity it carries.

PyJWT parses the token and checks exp / nbf / iat with the configured skew; this module adds
what Entra needs and PyJWT cannot know: the algorithm allow-list, refusal of header
parameters that name a key or change how the token is read, the issuer from the discovery
document of the token's version (filled with the token's own `tid` for multi-tenant apps),
the tenant allow-list, the audience forms, that the token is an access token and not an ID
token, and the per-key issuer. The signature is checked by a SignatureVerifier (WebCrypto at
the edge, a host library in tests and the CLI) with a key that only ever comes from the
issuer's fetched key set.
"""

import json
import math
import re
from typing import Protocol

from .pyjwt import StrictDecodeError, StrictJWS, base64url_decode, jwt

from .claims import identity_from_claims
from .config import GUID, Config
from .credential import require_compact_jws
from .errors import InvalidToken
from .identity import Identity
from .keys import MAX_KID_LENGTH, IssuerKeys

# Header parameters that would make the verifier trust key material or processing rules
# taken from the token itself (RFC 8725 §3.10, RFC 7515 §4.1.11), or nest another token.
FORBIDDEN_HEADERS = frozenset({"jwk", "jku", "x5u", "x5c", "crit", "b64", "cty", "zip", "enc"})
TIME_CLAIMS = ("exp", "nbf", "iat")
# A NumericDate beyond year 9999 is not a time (and overflows datetime on some paths).
MAX_NUMERIC_DATE = 253402300799

# Access token or ID token? Entra signs both with the same keys and the same issuer, and an
# ID token's `aud` is the app's client id, which is also a valid audience of its API: only the
# claims tell them apart (Microsoft's "Access token claims reference" / "ID token claims
# reference"). Every access token names the client application that asked for it, `appid` in
# v1.0 and `azp` in v2.0; no Entra ID token carries either. Keyed by `ver`.
CLIENT_CLAIM = {"1.0": "appid", "2.0": "azp"}
# Claims Entra puts in ID tokens only (the sign-in request's nonce, the hashes of the code and
# access token issued with it): a second, independent marker, should an ID token ever name
# its client.
ID_TOKEN_CLAIMS = frozenset({"nonce", "at_hash", "c_hash"})
# A JSON escape of a UTF-16 surrogate (\uD800-\uDFFF); valid pairs match too (non-BMP
# characters), which only costs the exact check below. Raw UTF-8 cannot hold a surrogate.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


class SignatureVerifier(Protocol):
    async def verify(self, algorithm: str, jwk: dict, signing_input: bytes, signature: bytes) -> bool:
        """True only if `signature` is valid for `signing_input` under the RSA public `jwk`."""


class _DuplicateMember(Exception):
    pass


def _no_duplicate_members(pairs):
    result = dict(pairs)  # built in C; a shorter dict means a name came twice
    if len(result) != len(pairs):
        raise _DuplicateMember
    return result


_STRICT_JSON = json.JSONDecoder(object_pairs_hook=_no_duplicate_members)


def _strict_json_object(raw: bytes, what: str) -> dict:
    """A JSON object in UTF-8 (RFC 7519 §7.2: json.loads would also take UTF-16/32 or a BOM)
    with no member name twice, whose strings are all Unicode."""
    try:
        text = raw.decode("utf-8")
        value = _STRICT_JSON.decode(text)
    except _DuplicateMember:
        raise StrictDecodeError(f"{what} holds a member name twice") from None
    except (ValueError, RecursionError) as error:
        raise StrictDecodeError(f"{what} is not valid JSON") from error
    if not isinstance(value, dict):
        raise StrictDecodeError(f"{what} is not a JSON object")
    if _SURROGATE_ESCAPE.search(text) is not None and not is_unicode(value):
        raise InvalidToken(f"token {what} holds a string that is not Unicode (a lone surrogate)", "malformed")
    return value


def is_unicode(value) -> bool:
    """False when a member name or string holds a lone surrogate: JSON's `\\uD800` escape
    decodes to one (RFC 8259 §8.2 leaves such strings to each reader), which no header,
    log line or assertion can carry, since none of them can encode it in UTF-8. Refused
    here, once, so every string the gateway reads from a token is Unicode."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _EntraJWT(jwt.PyJWT):
    """PyJWT with a strict payload reader: PyJWT's own time checks call int() on the claim,
    which would take "123", 1.9 or True; here a time claim must be a real finite number.
    Segments are decoded by StrictJWS (pyjwt.py)."""

    def __init__(self):
        super().__init__()
        self._jws = StrictJWS(options=self._get_sig_options())

    def _decode_payload(self, decoded):
        payload = _strict_json_object(decoded["payload"], "payload")
        for name in TIME_CLAIMS:
            if name in payload:
                value = payload[name]
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise StrictDecodeError(f"claim {name} must be a number")
                if not math.isfinite(value) or not 0 <= value <= MAX_NUMERIC_DATE:
                    raise StrictDecodeError(f"claim {name} is out of range")
        return payload


_DECODER = _EntraJWT()
_DECODE_OPTIONS = {
    "verify_signature": False,  # verified below with a key from the issuer's key set
    "verify_exp": True,
    "verify_nbf": True,
    "verify_iat": True,
    "verify_aud": False,  # Entra audience forms are checked below
    "verify_iss": False,  # the issuer depends on the token's version and tenant
    "require": ["exp"],
}


def _decode(token: str, leeway: int) -> dict:
    try:
        decoded = _DECODER.decode_complete(token, options=_DECODE_OPTIONS, leeway=leeway)
        # PyJWT lets the last of duplicate header members win; a verifier that reads the
        # first would see another token, so refuse (the payload is read strictly above).
        _strict_json_object(base64url_decode(token.partition(".")[0]), "header")
        return decoded
    except jwt.ExpiredSignatureError:
        raise InvalidToken("token expired", "expired") from None
    except jwt.ImmatureSignatureError:
        raise InvalidToken("token not yet valid", "not_yet_valid") from None
    except jwt.MissingRequiredClaimError as error:
        raise InvalidToken(f"token has no {error.claim} claim", "missing_claim") from None
    except StrictDecodeError as error:  # our own rules: the detail says which (nothing from the token)
        raise InvalidToken(f"malformed token: {error}", "malformed") from None
    except (jwt.PyJWTError, ValueError, TypeError, OverflowError, RecursionError):
        raise InvalidToken("malformed token", "malformed") from None


def _check_header(header: dict, algorithms: frozenset[str]) -> str:
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        raise InvalidToken("signing algorithm not allowed", "algorithm")
    forbidden = FORBIDDEN_HEADERS.intersection(header)
    if forbidden:
        raise InvalidToken(f"header parameter {sorted(forbidden)[0]} not allowed", "header_parameter")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.upper() != "JWT"):
        raise InvalidToken("token type must be JWT", "token_type")
    kid = header.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH:
        raise InvalidToken("token has no usable kid", "kid")
    return kid


class TokenValidator:
    def __init__(self, config: Config, keys_by_version: dict[str, IssuerKeys], verifier: SignatureVerifier):
        self._config = config
        self._keys_by_version = keys_by_version
        self._verifier = verifier

    async def validate(self, token: str, defer) -> Identity:
        return (await self.validate_with_kid(token, defer))[0]

    async def validate_with_kid(self, token: str, defer) -> tuple[Identity, str]:
        """The Identity and the `kid` of the key that verified it (the token cache keeps it)."""
        require_compact_jws(token)
        config = self._config
        decoded = _decode(token, config.clock_skew)
        header, claims = decoded["header"], decoded["payload"]
        kid = _check_header(header, config.algorithms)

        ver = claims.get("ver")
        # Looked up before the signature is checked: a list or object here must be a 401,
        # not a TypeError (unhashable) that the Worker would answer with a 500.
        issuer_keys = self._keys_by_version.get(ver) if isinstance(ver, str) else None
        if issuer_keys is None:
            raise InvalidToken("token version not accepted", "version")
        tid = claims.get("tid")
        if not isinstance(tid, str) or not GUID.match(tid):
            raise InvalidToken("token has no valid tid", "tenant_id")
        if not config.tenant_allowed(tid):
            raise InvalidToken("tenant not allowed", "tenant_not_allowed")
        aud = claims.get("aud")
        if not isinstance(aud, str) or aud not in config.audiences:
            raise InvalidToken("token is not for this audience", "audience")
        _require_access_token(claims, ver)

        await verify_issuer_and_signature(token, decoded, kid, tid, issuer_keys, self._verifier, defer)
        identity = identity_from_claims(claims)
        # A token that grants nothing is refused, as Microsoft.Identity.Web refuses one with
        # neither `scp` nor `roles` (IDW10201): any app of an allowed tenant can get a token
        # for this API without being granted anything, and it would pass every route that
        # asks only who the caller is (users, tenants, groups, `authenticated`).
        if not identity.scopes and not any(identity.roles):
            raise InvalidToken("token grants no delegated scope (scp) and no app role (roles)", "no_grant")
        return identity, kid


async def verify_issuer_and_signature(token: str, decoded: dict, kid: str, tid: str, issuer_keys: IssuerKeys,
                                      verifier: SignatureVerifier, defer) -> None:
    """`iss` is the issuer's for `tid`, the key `kid` is in its set (and, when the key names an
    issuer, that one), and the signature verifies with it: for access and ID tokens alike."""
    claims = decoded["payload"]
    key_set = await issuer_keys.current(defer)
    expected_issuer = key_set.issuer.replace("{tenantid}", tid)
    if claims.get("iss") != expected_issuer:
        raise InvalidToken("issuer mismatch", "issuer")

    jwk = await issuer_keys.key(kid, defer)
    if jwk is None:
        raise InvalidToken("signing key not found", "unknown_key")
    key_issuer = jwk.get("issuer")
    if key_issuer is not None and key_issuer.replace("{tenantid}", tid) != expected_issuer:
        raise InvalidToken("signing key belongs to another issuer", "key_issuer")

    signing_input = token.rpartition(".")[0].encode("ascii")
    if not await verifier.verify(decoded["header"]["alg"], jwk, signing_input, decoded["signature"]):
        raise InvalidToken("signature verification failed", "signature")


def _require_access_token(claims: dict, ver: str) -> None:
    client_claim = CLIENT_CLAIM[ver]
    client = claims.get(client_claim)
    if not isinstance(client, str) or not client:
        raise InvalidToken(f"not an access token: a v{ver} access token names its client in {client_claim}", "not_access_token")
    if not ID_TOKEN_CLAIMS.isdisjoint(claims):
        marker = min(ID_TOKEN_CLAIMS.intersection(claims))
        raise InvalidToken(f"not an access token: claim {marker} is only in ID tokens", "not_access_token")
