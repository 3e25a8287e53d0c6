"""Host implementations of the gateway's crypto interfaces, with `cryptography`.

The edge uses WebCrypto (src/platform_io.py); tests, the CLI and benchmarks use these. The
verifiers are checked against the same known-answer and Wycheproof vectors.
"""

import base64
import datetime
import json
import secrets

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from jwt.utils import base64url_decode, base64url_encode

_HASHES = {"RS256": hashes.SHA256, "RS384": hashes.SHA384, "RS512": hashes.SHA512}


def public_key_from_jwk(jwk: dict) -> rsa.RSAPublicKey:
    n = int.from_bytes(base64url_decode(jwk["n"]), "big")
    e = int.from_bytes(base64url_decode(jwk["e"]), "big")
    return rsa.RSAPublicNumbers(e, n).public_key()


class HostVerifier:
    def __init__(self):
        self._keys = {}

    async def verify(self, algorithm: str, jwk: dict, signing_input: bytes, signature: bytes) -> bool:
        cache_key = (jwk["kid"], jwk["n"], jwk["e"])
        try:
            key = self._keys.get(cache_key) or public_key_from_jwk(jwk)
            self._keys[cache_key] = key
            key.verify(signature, signing_input, padding.PKCS1v15(), _HASHES[algorithm]())
            return True
        except (InvalidSignature, ValueError):
            return False


class HostSigner:
    """ES256 signer for the identity assertion, from the same private JWK the Worker uses."""

    def __init__(self, private_jwk: dict):
        d = int.from_bytes(base64url_decode(private_jwk["d"]), "big")
        self._key = ec.derive_private_key(d, ec.SECP256R1())

    async def sign(self, signing_input: bytes) -> bytes:
        r, s = decode_dss_signature(self._key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def new_assertion_key() -> str:
    """A fresh private EC P-256 JWK (JSON) for the ASSERTION_SIGNING_KEY secret."""
    numbers = ec.generate_private_key(ec.SECP256R1()).private_numbers()
    def b64(value: int) -> str:
        return base64url_encode(value.to_bytes(32, "big")).decode()
    return json.dumps({
        "kty": "EC", "crv": "P-256",
        "x": b64(numbers.public_numbers.x), "y": b64(numbers.public_numbers.y), "d": b64(numbers.private_value),
    })


class HostCipher:
    """AES-256-GCM, as platform_io.AesGcmCipher does it with WebCrypto."""

    async def seal(self, secret: bytes, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        return AESGCM(secret).encrypt(iv, plaintext, aad)

    async def open(self, secret: bytes, iv: bytes, sealed: bytes, aad: bytes) -> bytes | None:
        try:
            return AESGCM(secret).decrypt(iv, sealed, aad)
        except (InvalidTag, ValueError):
            return None


class HostRsaSigner:
    """RS256 with a PKCS#8 private key, as platform_io.RsaSigner does it with WebCrypto."""

    async def sign(self, pkcs8_der: bytes, signing_input: bytes) -> bytes:
        key = serialization.load_der_private_key(pkcs8_der, password=None)
        return key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())


class HostSignInPlatform:
    def __init__(self):
        self.cipher = HostCipher()
        self.rsa_signer = HostRsaSigner()
        self.random_bytes = secrets.token_bytes


def new_session_key() -> str:
    """A fresh SESSION_KEYS key: 32 random bytes, base64url."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def new_client_certificate(common_name: str = "entragate", days: int = 365) -> tuple[str, str]:
    """(PEM holding the PKCS#8 private key and a self-signed certificate, for the
    ENTRA_CLIENT_CERTIFICATE secret; the certificate alone in PEM, to upload to the app
    registration)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=days)).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    certificate_pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    return key_pem + certificate_pem, certificate_pem
