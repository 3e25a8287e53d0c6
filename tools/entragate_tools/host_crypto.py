"""Host implementations of the gateway's crypto interfaces, with `cryptography`.

The edge uses WebCrypto (src/platform_io.py); tests, the CLI and benchmarks use these. The
verifiers are checked against the same known-answer and Wycheproof vectors.
"""

import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
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
