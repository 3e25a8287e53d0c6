"""Signed identity assertion: a short-lived JWT the gateway signs for the origin.

An origin that can also be reached without the gateway (a Cloud Run or App Service URL, say)
verifies this header and refuses requests that lack it. ES256 (P-256): short signatures,
cheap to sign with WebCrypto at the edge. The key is a private EC JWK kept in the Worker
secret ASSERTION_SIGNING_KEY; its public half is served at JWKS_PATH, `kid` = RFC 7638
thumbprint.

Claims: iss (ASSERTION_ISSUER), aud (the origin URL the request is forwarded to), iat, nbf,
exp (iat + LIFETIME_SECONDS), jti (request id), htm / htu (method and URL without query the
assertion was made for, as in RFC 9449, so it cannot be replayed against another path), and
the identity: sub, oid, tid, name, preferred_username, groups (bounded as in upstream.py),
hasgroups (overage), roles, scp, azp, idtyp, `auth_method` (bearer or session) and `rule` (the
route that allowed it).
"""

import base64
import hashlib
import json
from typing import Protocol

from .identity import Identity

ALGORITHM = "ES256"
LIFETIME_SECONDS = 60
JWKS_PATH = "/.well-known/entragate/jwks.json"


class AssertionKeyError(ValueError):
    pass


class AssertionSigner(Protocol):
    async def sign(self, signing_input: bytes) -> bytes:
        """ECDSA P-256 / SHA-256 signature in JWS form (r || s, 64 bytes)."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _compact(value) -> bytes:
    # encode() cannot fail: every claim string comes from a token whose strings tokens.py
    # checked are Unicode (a lone surrogate is refused there, with a 401).
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def thumbprint(jwk: dict) -> str:
    """RFC 7638 JWK thumbprint (SHA-256) of an EC public key."""
    members = {name: jwk[name] for name in ("crv", "kty", "x", "y")}
    return b64url(hashlib.sha256(json.dumps(members, sort_keys=True, separators=(",", ":")).encode()).digest())


def parse_signing_key(text: str) -> tuple[dict, dict]:
    """ASSERTION_SIGNING_KEY (a private EC P-256 JWK as JSON) -> (private JWK, public JWK)."""
    try:
        jwk = json.loads(text)
    except ValueError:
        raise AssertionKeyError("ASSERTION_SIGNING_KEY is not JSON (expected a private EC P-256 JWK)") from None
    if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise AssertionKeyError("ASSERTION_SIGNING_KEY must be an EC P-256 JWK")
    if not all(isinstance(jwk.get(name), str) and jwk[name] for name in ("x", "y", "d")):
        raise AssertionKeyError("ASSERTION_SIGNING_KEY must hold x, y and the private d")
    public = {"kty": "EC", "crv": "P-256", "x": jwk["x"], "y": jwk["y"]}
    public.update(kid=thumbprint(public), use="sig", alg=ALGORITHM)
    private = {"kty": "EC", "crv": "P-256", "x": jwk["x"], "y": jwk["y"], "d": jwk["d"]}
    return private, public


def assertion_claims(identity: Identity, groups: list[str], *, issuer: str, audience: str, now: float,
                     request_id: str, method: str, url: str, rule: str) -> dict:
    issued = int(now)
    claims = {
        "iss": issuer,
        "aud": audience,
        "iat": issued,
        "nbf": issued,
        "exp": issued + LIFETIME_SECONDS,
        "jti": request_id,
        "htm": method,
        "htu": url.partition("?")[0],
        "sub": identity.sub,
        "oid": identity.oid,
        "tid": identity.tid,
        "name": identity.name,
        "preferred_username": identity.username,
        "groups": groups,
        "hasgroups": identity.groups_overage or None,
        "roles": list(identity.roles),
        "scp": " ".join(identity.scopes) or None,
        "azp": identity.client_id,
        "idtyp": identity.kind,
        "auth_method": identity.auth_method,
        "rule": rule,
    }
    return {name: value for name, value in claims.items() if value is not None}


async def sign_assertion(signer: AssertionSigner, kid: str, claims: dict) -> str:
    header = {"alg": ALGORITHM, "typ": "JWT", "kid": kid}
    signing_input = f"{b64url(_compact(header))}.{b64url(_compact(claims))}"
    signature = await signer.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{b64url(signature)}"
