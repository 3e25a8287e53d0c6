"""Verify every case of the payload with the edge's WebCryptoVerifier (workerd's WebCrypto):
answers [[name, verified], ...]."""

from platform_io import WebCryptoVerifier


async def run(cases):
    verifier = WebCryptoVerifier()
    results = []
    for case in cases:
        verified = await verifier.verify(case["alg"], case["jwk"], bytes.fromhex(case["msg"]), bytes.fromhex(case["sig"]))
        results.append([case["name"], verified])
    return results
