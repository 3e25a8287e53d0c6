"""Host implementation of the gateway's SignatureVerifier, with `cryptography`.

The edge verifies with WebCrypto (src/platform_io.py); tests, the CLI and benchmarks use
this one. Both are checked against the same known-answer and Wycheproof vectors.
"""

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from jwt.utils import base64url_decode

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
