"""The platform pieces browser sign-in uses, run inside workerd (tests/runtime/workers/
check_signin_platform.py): what Node or a host library would accept proves nothing here."""

import base64

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def test_sealing_signing_kv_expiry_capped_reads_and_cookies_in_workerd(edge_checks):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pkcs8 = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    report = edge_checks.run("signin_platform", {"pkcs8": base64.b64encode(pkcs8).decode()})
    # AES-256-GCM: 13 bytes of plaintext + a 16-byte tag; opens only as sealed.
    assert report["sealed_length"] == 13 + 16
    assert report["opened"] == {"right": "hello session", "other_cookie_name": None, "other_key": None,
                                "tampered": None, "truncated": None}
    key.public_key().verify(base64.b64decode(report["signature"]), b"signing input", padding.PKCS1v15(), hashes.SHA256())
    assert report["kv"] == "kept"
    assert report["capped"] is None and report["whole"] == "0123456789"
    assert report["set_cookies"] == ["a=1; Path=/", "b=2; Path=/"]
