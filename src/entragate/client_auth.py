"""How the gateway proves it is its own app registration to Entra's token endpoint.

Used by every call the gateway makes as itself: the code exchange of a browser sign-in, and
the client-credentials requests for Microsoft Graph and Google's STS. Two credentials:
- a **certificate** (what Microsoft recommends): a client assertion JWT (RFC 7523, Microsoft
  "certificate credentials"): header `alg` RS256, `typ` JWT, `x5t#S256` the SHA-256 thumbprint
  of the certificate uploaded to the registration; claims `aud` the token endpoint, `iss` =
  `sub` = the client id, a fresh `jti`, `nbf`/`iat` now and `exp` a few minutes on. Signed
  with the private key from the ENTRA_CLIENT_CERTIFICATE secret, through an `RsaSigner`
  (WebCrypto RSASSA-PKCS1-v1_5 SHA-256 at the edge); the key never leaves the signer.
- a **client secret** (ENTRA_CLIENT_SECRET), sent as the `client_secret` form field.

ENTRA_CLIENT_CERTIFICATE holds PEM: the PKCS#8 private key ("BEGIN PRIVATE KEY") and the
certificate ("BEGIN CERTIFICATE"), as `openssl req -x509 -newkey rsa:2048 -nodes` writes them.
"""

import base64
import binascii
import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from typing import Protocol

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME_SECONDS = 300
# rsaEncryption (1.2.840.113549.1.1.1), DER-encoded: every PKCS#8 RSA private key holds it.
_RSA_ENCRYPTION_OID = bytes.fromhex("06092a864886f70d010101")
_PEM = re.compile(r"-----BEGIN ([A-Z ]+)-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END \1-----")


class CredentialError(ValueError):
    pass


class RsaSigner(Protocol):
    async def sign(self, pkcs8_der: bytes, signing_input: bytes) -> bytes:
        """RSASSA-PKCS1-v1_5 with SHA-256 under the PKCS#8 private key."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class Certificate:
    private_key_der: bytes  # PKCS#8
    thumbprint_s256: str  # base64url SHA-256 of the certificate's DER


def parse_certificate(text: str, name: str = "ENTRA_CLIENT_CERTIFICATE") -> Certificate:
    blocks = {}
    for kind, body in _PEM.findall(text.replace("\\n", "\n")):
        try:
            blocks.setdefault(kind, base64.b64decode("".join(body.split()), validate=True))
        except (binascii.Error, ValueError):
            raise CredentialError(f"{name}: the {kind} block is not base64") from None
    if "RSA PRIVATE KEY" in blocks and "PRIVATE KEY" not in blocks:
        raise CredentialError(f"{name}: the key is PKCS#1 (BEGIN RSA PRIVATE KEY); WebCrypto needs PKCS#8: "
                              "convert it with `openssl pkcs8 -topk8 -nocrypt -in key.pem`")
    if "ENCRYPTED PRIVATE KEY" in blocks:
        raise CredentialError(f"{name}: the private key is encrypted; store it unencrypted (it is a Worker secret)")
    key, certificate = blocks.get("PRIVATE KEY"), blocks.get("CERTIFICATE")
    if key is None or certificate is None:
        raise CredentialError(f"{name} must hold the PKCS#8 private key (BEGIN PRIVATE KEY) and the certificate "
                              "(BEGIN CERTIFICATE) in PEM")
    if _RSA_ENCRYPTION_OID not in key[:32]:
        raise CredentialError(f"{name}: the private key is not an RSA key")
    return Certificate(key, _b64url(hashlib.sha256(certificate).digest()))


class ClientCredential:
    """The form fields that authenticate the gateway at a token endpoint."""

    def __init__(self, client_id: str, *, certificate: Certificate | None = None, secret: str | None = None,
                 signer: RsaSigner | None = None, clock):
        if (certificate is None) == (secret is None):
            raise CredentialError("give the gateway one credential: ENTRA_CLIENT_CERTIFICATE or ENTRA_CLIENT_SECRET")
        self.client_id = client_id
        self._certificate = certificate
        self._secret = secret
        self._signer = signer
        self._clock = clock

    @property
    def kind(self) -> str:
        return "certificate" if self._certificate else "secret"

    async def fields(self, token_endpoint: str) -> dict[str, str]:
        if self._secret is not None:
            return {"client_id": self.client_id, "client_secret": self._secret}
        now = int(self._clock())
        header = {"alg": "RS256", "typ": "JWT", "x5t#S256": self._certificate.thumbprint_s256}
        claims = {"aud": token_endpoint, "iss": self.client_id, "sub": self.client_id, "jti": str(uuid.uuid4()),
                  "nbf": now, "iat": now, "exp": now + ASSERTION_LIFETIME_SECONDS}
        signing_input = ".".join(_b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims))
        signature = await self._signer.sign(self._certificate.private_key_der, signing_input.encode("ascii"))
        return {"client_id": self.client_id, "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": f"{signing_input}.{_b64url(signature)}"}
